"""The ASGI server choice, measured: Switchboard's HTTP app under uvicorn (what it ships)
and under hypercorn (HTTP/1.1 and h2c), the same process layout and agent.

Each server runs the real App (bench/bench.yaml, the mock model at zero latency) pinned to
one core: uvicorn as ``switchboard serve`` does; hypercorn by serving the same ASGI app
(``App.http.app``) with ``hypercorn.asyncio.serve`` in the App's loop. h2load on the other core
posts ``/v1/chat/completions``. hypercorn is not a dependency: install it where this script
can import it (``pip install --target DIR hypercorn`` and ``--hypercorn-path DIR``).

    .venv/bin/python bench/asgi_servers.py --hypercorn-path DIR [--runs 3] [--requests 1500]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from doors_bench import OPENAI, h2load

from bench import ROOT, Result, free_port

HYPERCORN = """
import asyncio, sys
from hypercorn.asyncio import serve
from hypercorn.config import Config
from service.app import App
from service.config import load

async def main(port):
    app = App(load(sys.argv[1], {}))
    await app.start("127.0.0.1", 0)
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    await serve(app.http.app, config)

asyncio.run(main(int(sys.argv[2])))
"""


@contextlib.contextmanager
def server(kind: str, hypercorn_path: str) -> Iterator[str]:
    port = free_port()
    config = str(ROOT / "bench" / "bench.yaml")
    env = {**os.environ}
    if kind == "uvicorn":
        argv = [sys.executable, "-m", "service", "serve", "--config", config, "--port", "0"]
        env["SWITCHBOARD_SERVER__HTTP__PORT"] = str(port)
    else:
        argv = [sys.executable, "-c", HYPERCORN, config, str(port)]
        env["PYTHONPATH"] = os.pathsep.join([hypercorn_path, str(ROOT), str(ROOT / "generated")])
    command = ["taskset", "-c", "0", *argv] if shutil.which("taskset") else argv
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        for _ in range(300):
            try:
                check = urllib.request.Request(
                    url, data=OPENAI.encode(), headers={"content-type": "application/json"}
                )
                with urllib.request.urlopen(check, timeout=5):
                    break
            except OSError:
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hypercorn-path", required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--requests", type=int, default=1500)
    args = parser.parse_args()
    headers = ["content-type: application/json"]
    shapes = {
        # h2load cannot read hypercorn's HTTP/1.1 status line ("200 " with no reason phrase:
        # every request counts as failed), so hypercorn is measured over h2c only.
        "uvicorn h1": ("uvicorn", True),
        "hypercorn h2c": ("hypercorn", False),
    }
    results: dict[str, list[Result]] = {}
    for _ in range(args.runs):
        for kind in ("uvicorn", "hypercorn"):
            with server(kind, args.hypercorn_path) as url:
                h2load(url, OPENAI.encode(), headers, 200, 4, kind == "uvicorn")  # warm-up
                for name, (server_kind, h1) in shapes.items():
                    if server_kind != kind:
                        continue
                    for c in (1, 16):
                        results.setdefault(f"{name} c={c}", []).append(
                            h2load(url, OPENAI.encode(), headers, args.requests, c, h1)
                        )
    print("| server | concurrency | req/s | p50 / p99 ms |")
    print("| --- | ---: | ---: | --- |")
    for key, runs in results.items():
        name, c = key.rsplit(" c=", 1)
        rps = statistics.median(r.rps for r in runs)
        p50 = statistics.median(r.p50_ms for r in runs)
        p99 = statistics.median(r.p99_ms for r in runs)
        print(f"| {name} | {c} | {rps:.0f} | {p50:.2f} / {p99:.2f} |")


if __name__ == "__main__":
    main()
