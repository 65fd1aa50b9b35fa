"""The baseline: a bare grpc.aio AgentService that answers the same messages with no logic.

It decodes each request (as any servicer must) and returns responses built once at start, of
the same shape and size as Switchboard's echo agent gives for the benchmark's prompts.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator

import grpc
from switchboard.v1 import agent_pb2 as pb
from switchboard.v1 import agent_pb2_grpc as pb_grpc

TARGET = pb.Target(name="mock-echo", provider="mock", model="echo")


def responses(words: list[str]) -> tuple[pb.InvokeResponse, list[pb.StreamResponse]]:
    usage = pb.Usage(input_tokens=len(words), output_tokens=len(words), total_tokens=2 * len(words))
    unary = pb.InvokeResponse(
        request_id="0" * 32,
        message=pb.Message(role=pb.ROLE_ASSISTANT, content=[pb.ContentPart(text="".join(words))]),
        finish_reason=pb.FINISH_REASON_STOP,
        usage=usage,
        agent="echo",
        agent_version="h-000000000000",
        target=TARGET,
        attempts=1,
    )
    events = [
        pb.StreamResponse(
            start=pb.StreamStart(
                request_id="0" * 32, agent="echo", agent_version="h-000000000000", target=TARGET
            )
        ),
        *(pb.StreamResponse(text_delta=pb.TextDelta(text=w)) for w in words),
        pb.StreamResponse(usage=usage),
        pb.StreamResponse(
            finish=pb.StreamFinish(finish_reason=pb.FINISH_REASON_STOP, attempts=1, target=TARGET)
        ),
    ]
    return unary, events


class Bare(pb_grpc.AgentServiceServicer):
    def __init__(self, unary: pb.InvokeResponse, events: list[pb.StreamResponse]) -> None:
        self._unary = unary
        self._events = events

    async def Invoke(self, request: pb.InvokeRequest, context: object) -> pb.InvokeResponse:  # noqa: N802
        return self._unary

    async def Stream(  # noqa: N802
        self, request: pb.StreamRequest, context: object
    ) -> AsyncIterator[pb.StreamResponse]:
        for event in self._events:
            yield event


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--unary-words", type=int, required=True)
    parser.add_argument("--stream-words", type=int, required=True)
    args = parser.parse_args()
    unary, _ = responses([f"w{i} " for i in range(args.unary_words)])
    _, events = responses([f"w{i} " for i in range(args.stream_words)])
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    pb_grpc.add_AgentServiceServicer_to_server(Bare(unary, events), server)
    server.add_insecure_port(f"127.0.0.1:{args.port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main())
