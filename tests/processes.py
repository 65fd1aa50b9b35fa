"""Start ``switchboard serve`` as a real process and find what it started (system tests)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 60.0


def wait_for(check: object, *, within_s: float = 30.0, what: str = "condition") -> None:
    """Poll ``check()`` until it is truthy, failing after ``within_s`` (a bound, not a guess)."""
    deadline = time.monotonic() + within_s
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@dataclass
class Running:
    process: subprocess.Popen[bytes]
    port: int
    lines: list[str] = field(default_factory=list)  # its output so far (stdout and stderr)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    @property
    def messages(self) -> list[str]:
        """The log messages so far (``msg`` of each JSON line; other lines as they are)."""
        out = []
        for line in list(self.lines):
            try:
                record = json.loads(line)
            except ValueError:
                out.append(line.rstrip("\n"))
                continue
            out.append(str(record.get("msg", line)) if isinstance(record, dict) else line)
        return out

    def metrics_port(self) -> int:
        """The port the supervisor's metrics endpoint bound (started with port 0)."""
        found: list[int] = []

        def logged() -> bool:
            for message in self.messages:
                if message.startswith("metrics of all workers on "):
                    found.append(int(message.rsplit(":", 1)[1]))
                    return True
            return False

        wait_for(logged, what="the metrics endpoint")
        return found[0]

    def wait_for_output(self, text: str, *, count: int = 1, within_s: float = 30.0) -> None:
        wait_for(lambda: self.output.count(text) >= count, within_s=within_s, what=repr(text))


def _collect(stream: object, lines: list[str]) -> None:
    # One append per line (atomic), so the test thread reads the output as it comes.
    for line in iter(stream.readline, b""):  # type: ignore[attr-defined]
        lines.append(line.decode(errors="replace"))  # noqa: PERF401


@contextlib.contextmanager
def serve_process(
    config: Path,
    *args: str,
    environ: Mapping[str, str] | None = None,
    wrapper: Sequence[str] = (),
) -> Iterator[Running]:
    """``switchboard serve --config config --port 0 *args``, once it has written its port
    (next to ``config``, or in a private temporary folder when ``config`` is a file of the
    repository, such as deploy/k8s/base/switchboard.yaml: a test never writes into the checkout).
    ``wrapper`` prefixes the command (it must exec it in the end).

    The process (and its children) are killed at the end if the test has not stopped it.
    """
    scratch = None
    if config.resolve().is_relative_to(ROOT.resolve()):
        scratch = tempfile.TemporaryDirectory(prefix="switchboard-port-")
        port_file = Path(scratch.name) / f"{config.stem}.port"
    else:
        port_file = config.with_name(f"{config.stem}.port")
        port_file.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env.update(environ or {})
    process = subprocess.Popen(
        [
            *wrapper,
            *(sys.executable, "-m", "service", "serve", "--config", str(config)),
            *("--host", "127.0.0.1", "--port", "0", "--port-file", str(port_file), *args),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    lines: list[str] = []
    reader = threading.Thread(target=_collect, args=(process.stdout, lines), daemon=True)
    reader.start()
    try:
        wait_for(
            lambda: port_file.exists() or process.poll() is not None,
            within_s=START_TIMEOUT_S,
            what="the server to write its port file",
        )
        if process.poll() is not None:
            reader.join(timeout=10)
            raise AssertionError(f"server exited with {process.returncode}:\n{''.join(lines)}")
        yield Running(process, int(port_file.read_text()), lines)
    finally:
        if process.poll() is None:
            process.kill()
            for pid in children(process.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            process.wait()
        reader.join(timeout=10)
        if process.stdout:
            process.stdout.close()
        if scratch is not None:
            scratch.cleanup()


def children(pid: int) -> set[int]:
    """The live (not zombie) child processes of ``pid``, read from /proc."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == pid and state != "Z":
            found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
