"""Folding a stream's events into the InvokeResponse they describe."""

from __future__ import annotations

from collections.abc import Iterable

from switchboard.v1 import agent_pb2 as pb


class Folder:
    """Accumulates StreamResponse events; ``result()`` is what Invoke would have returned."""

    def __init__(self) -> None:
        self._response = pb.InvokeResponse(message=pb.Message(role=pb.ROLE_ASSISTANT))
        self._text: list[str] = []
        self._calls: dict[int, pb.ToolCall] = {}
        self.finished = False

    def add(self, event: pb.StreamResponse) -> None:
        kind = event.WhichOneof("event")
        r = self._response
        if kind == "start":
            r.request_id = event.start.request_id
            r.agent = event.start.agent
            r.agent_version = event.start.agent_version
            r.target.CopyFrom(event.start.target)
        elif kind == "text_delta":
            self._text.append(event.text_delta.text)
        elif kind == "tool_call_delta":
            delta = event.tool_call_delta
            call = self._calls.setdefault(delta.index, pb.ToolCall())
            call.id = call.id or delta.id
            call.name = call.name or delta.name
            call.arguments_json += delta.arguments_delta
        elif kind == "usage":
            r.usage.CopyFrom(event.usage)
        elif kind == "finish":
            r.finish_reason = event.finish.finish_reason
            r.attempts = event.finish.attempts
            r.cache_hit = event.finish.cache_hit
            r.guard_verdicts.extend(event.finish.guard_verdicts)
            if event.finish.HasField("target"):
                r.target.CopyFrom(event.finish.target)
            self.finished = True

    def result(self) -> pb.InvokeResponse:
        """The folded response. Raises ValueError if the stream had no finish event."""
        if not self.finished:
            raise ValueError("the stream ended without a finish event: the answer is truncated")
        out = pb.InvokeResponse()
        out.CopyFrom(self._response)
        text = "".join(self._text)
        if text:
            out.message.content.add(text=text)
        out.message.tool_calls.extend(v for _, v in sorted(self._calls.items()))
        return out


def fold(events: Iterable[pb.StreamResponse]) -> pb.InvokeResponse:
    folder = Folder()
    for event in events:
        folder.add(event)
    return folder.result()
