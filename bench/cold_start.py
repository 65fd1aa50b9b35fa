"""Cold start: CPU seconds and wall seconds for ``switchboard serve`` to answer its first
health check, CPU seconds to import the server (``service.app``, what ``serve`` loads), and CPU
seconds for one ``switchboard health`` (a container health check or exec probe; here against a
closed port, so it fails at once after its imports), for one or more source trees.

Each round runs every tree once, alternating, and the medians are printed. The config is
``config/switchboard.yaml`` (mock targets only, as ``make run`` serves) on free ports;
``--openai`` adds an OpenAI target (a provider configured: its SDK is imported).

    .venv/bin/python bench/cold_start.py --rounds 5 . /path/to/another/worktree
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

OPENAI_TARGET = """
  gpt:
    provider: openai
    model: gpt-4o-mini
    api_key: {env: OPENAI_API_KEY}
"""


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def environment(tree: Path) -> dict[str, str]:
    env = dict(os.environ)
    # The tree's own sources first (ahead of the editable install of this worktree).
    env["PYTHONPATH"] = os.pathsep.join(
        str(tree / part) for part in ("", "generated", "clients/python")
    )
    env["OPENAI_API_KEY"] = "sk-bench"
    return env


def import_cpu(tree: Path) -> float:
    before = child_cpu()
    subprocess.run(
        [sys.executable, "-c", "import service.app"], env=environment(tree), cwd=tree, check=True
    )
    return child_cpu() - before


def health_cpu(tree: Path) -> float:
    before = child_cpu()
    subprocess.run(
        [sys.executable, "-m", "service", "health", "--address", "127.0.0.1:1", "--timeout", "1"],
        env=environment(tree), cwd=tree, check=False, capture_output=True,
    )  # fmt: skip
    return child_cpu() - before


def serve_once(tree: Path, config: Path) -> tuple[float, float]:
    """(CPU seconds, wall seconds) from exec to the first SERVING answer."""
    env = environment(tree)
    env.update(SWITCHBOARD_SERVER__HTTP__PORT="0", SWITCHBOARD_OBSERVABILITY__METRICS__PORT="0")
    port_file = Path(tempfile.mkdtemp()) / "port"
    before, started = child_cpu(), time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "serve", "--config", str(config), "--port", "0",
         "--port-file", str(port_file)],
        env=env,
        cwd=tree,  # `python -m` puts the working directory first on sys.path
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        while not port_file.exists() or not port_file.read_text().strip():
            if process.poll() is not None:
                raise RuntimeError(f"{tree}: serve exited with {process.returncode}")
            time.sleep(0.01)
        address = f"127.0.0.1:{port_file.read_text().strip()}"
        with grpc.insecure_channel(address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            answer = stub.Check(health_pb2.HealthCheckRequest(), timeout=30, wait_for_ready=True)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        wall = time.perf_counter() - started
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    # The child's CPU includes its drain and exit, a few ms with nothing in flight.
    return child_cpu() - before, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="+", type=Path, help="source trees to compare")
    parser.add_argument("--rounds", type=int, default=5, help="alternated runs of each tree")
    parser.add_argument("--openai", action="store_true", help="configure an OpenAI target too")
    args = parser.parse_args()
    results: dict[Path, dict[str, list[float]]] = {
        t: {name: [] for name in ("import_cpu", "health_cpu", "serve_cpu", "serve_wall")}
        for t in args.trees
    }
    for _ in range(args.rounds):
        for tree in args.trees:
            config = Path(tempfile.mkdtemp()) / "switchboard.yaml"
            text = (tree / "config" / "switchboard.yaml").read_text()
            text = text.replace("../data", str(config.parent / "data"))
            if args.openai:
                text = text.replace("\ntargets:\n", "\ntargets:\n" + OPENAI_TARGET, 1)
            config.write_text(text)
            results[tree]["import_cpu"].append(import_cpu(tree))
            results[tree]["health_cpu"].append(health_cpu(tree))
            cpu, wall = serve_once(tree, config)
            results[tree]["serve_cpu"].append(cpu)
            results[tree]["serve_wall"].append(wall)
    for tree, figures in results.items():
        line = "  ".join(f"{k} {statistics.median(v):6.2f} s" for k, v in figures.items())
        print(f"{tree}: {line}")


if __name__ == "__main__":
    main()
