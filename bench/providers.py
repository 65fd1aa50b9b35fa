"""What the provider path costs: Switchboard (gRPC → runner → provider → SDK) against a fake
upstream, as a ratio to the bare SDK streaming from the same fake.

    .venv/bin/python bench/providers.py [--calls 300]

Everything runs on 127.0.0.1 in one process (fake, server, client), so the absolute numbers
say little; the ratio and the connection counts are the point.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "generated"), str(ROOT / "clients" / "python")]

import anthropic  # noqa: E402
import openai  # noqa: E402

from tests.fakes.anthropic_fake import AnthropicFake  # noqa: E402
from tests.fakes.openai_fake import OpenAIFake  # noqa: E402
from tests.harness import serve_config  # noqa: E402

KEY = "sk-bench-0123456789"


async def timed(calls: int, call: object) -> list[float]:
    out = []
    for _ in range(calls):
        start = time.perf_counter()
        await call()  # type: ignore[operator]
        out.append(time.perf_counter() - start)
    return out


def p50_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


async def main(calls: int) -> None:
    async with OpenAIFake() as gpt, AnthropicFake() as claude:
        config = f"""
        targets:
          gpt: {{provider: openai, model: m, base_url: "{gpt.base_url}/v1", api_key: {{env: K}}}}
          claude:
            {{provider: anthropic, model: m, base_url: "{claude.base_url}", api_key: {{env: K}}}}
        agents:
          openai: {{route: [gpt]}}
          anthropic: {{route: [claude]}}
        """
        direct_openai = openai.AsyncOpenAI(
            api_key=KEY, base_url=f"{gpt.base_url}/v1", max_retries=0
        )
        direct_anthropic = anthropic.AsyncAnthropic(
            api_key=KEY, base_url=claude.base_url, max_retries=0
        )

        async def bare_openai() -> None:
            stream = await direct_openai.chat.completions.create(
                model="m",
                messages=[{"role": "user", "content": "hi"}],
                stream=True,
                stream_options={"include_usage": True},
            )
            async for _ in stream:
                pass

        async def bare_anthropic() -> None:
            stream = await direct_anthropic.messages.create(
                model="m", max_tokens=64, messages=[{"role": "user", "content": "hi"}], stream=True
            )
            async for _ in stream:
                pass

        async with serve_config(config, {"K": KEY}) as served:
            for name, bare, fake in (
                ("openai", bare_openai, gpt),
                ("anthropic", bare_anthropic, claude),
            ):
                await timed(20, bare)  # warm up
                await timed(20, lambda n=name: served.client.invoke(n, "hi"))
                before = fake.connections
                base = await timed(calls, bare)
                through = await timed(calls, lambda n=name: served.client.invoke(n, "hi"))
                print(
                    f"{name:9}  bare SDK p50 {p50_ms(base):6.2f} ms   via Switchboard p50 "
                    f"{p50_ms(through):6.2f} ms   ratio {p50_ms(through) / p50_ms(base):4.2f}   "
                    f"new upstream connections over {2 * calls} calls: {fake.connections - before}"
                )
        await direct_openai.close()
        await direct_anthropic.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=300)
    asyncio.run(main(parser.parse_args().calls))
