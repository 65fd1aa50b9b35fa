"""The worker's side of ``serve --workers N``: report readiness, and stop with the supervisor.

The supervisor passes two pipe ends to each worker: ``ready`` (the worker writes its pid and
port once it serves) and ``lifeline`` (never written; it reaches end-of-file when the
supervisor dies, however it dies, so an orphaned worker drains and exits instead of
serving on alone).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class WorkerLink:
    ready_fd: int
    lifeline_fd: int

    @classmethod
    def parse(cls, text: str) -> WorkerLink:
        """From the ``--worker-fds READY,LIFELINE`` argument.

        Raises:
            ValueError: not two integers.
        """
        ready, lifeline = (int(part) for part in text.split(","))
        return cls(ready, lifeline)

    def format(self) -> str:
        return f"{self.ready_fd},{self.lifeline_fd}"

    def report_ready(self, port: int) -> None:
        with contextlib.suppress(OSError):  # the supervisor is gone: the lifeline tells
            os.write(self.ready_fd, f"{os.getpid()} {port}\n".encode())
        with contextlib.suppress(OSError):
            os.close(self.ready_fd)

    def watch_lifeline(self, on_lost: asyncio.Event) -> None:
        """Set ``on_lost`` when the supervisor's end of the lifeline closes."""
        loop = asyncio.get_running_loop()

        def readable() -> None:
            try:
                data = os.read(self.lifeline_fd, 64)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                loop.remove_reader(self.lifeline_fd)
                on_lost.set()

        os.set_blocking(self.lifeline_fd, False)
        loop.add_reader(self.lifeline_fd, readable)


def write_port_file(path: str | Path, port: int) -> None:
    """Write ``port`` to ``path`` atomically, so a reader never sees half a number."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(f"{port}\n", encoding="utf-8")
    tmp.replace(path)
