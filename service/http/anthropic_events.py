"""The contract's answers as Anthropic Messages: a ``message`` object, the stream's events and
the error body (Anthropic's API reference: "Messages", "Streaming Messages", "Errors").

Usage: the contract's ``input_tokens`` counts every prompt token; Anthropic's counts those
neither read from nor written to the prompt cache, which it reports apart
(``cache_read_input_tokens``, ``cache_creation_input_tokens``). ``cost_usd`` is a Switchboard
extension, as on the OpenAI door.
"""

from __future__ import annotations

import json
from typing import Any

import grpc
from switchboard.v1 import agent_pb2 as pb

from service.http.context import Failure

STOP_REASONS = {
    pb.FINISH_REASON_UNSPECIFIED: "end_turn",
    pb.FINISH_REASON_STOP: "end_turn",
    pb.FINISH_REASON_LENGTH: "max_tokens",
    pb.FINISH_REASON_TOOL_CALLS: "tool_use",
    pb.FINISH_REASON_CONTENT_FILTER: "refusal",
}
# status code → (HTTP status, Anthropic error type). UNAVAILABLE (no target could answer,
# the server is draining) is Anthropic's "overloaded": temporary, retried by its SDKs.
_TABLE: dict[grpc.StatusCode, tuple[int, str]] = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, "invalid_request_error"),
    grpc.StatusCode.FAILED_PRECONDITION: (400, "invalid_request_error"),
    grpc.StatusCode.OUT_OF_RANGE: (400, "invalid_request_error"),
    grpc.StatusCode.UNAUTHENTICATED: (401, "authentication_error"),
    grpc.StatusCode.PERMISSION_DENIED: (403, "permission_error"),
    grpc.StatusCode.NOT_FOUND: (404, "not_found_error"),
    grpc.StatusCode.ALREADY_EXISTS: (409, "invalid_request_error"),
    grpc.StatusCode.ABORTED: (409, "invalid_request_error"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (429, "rate_limit_error"),
    grpc.StatusCode.CANCELLED: (499, "invalid_request_error"),
    grpc.StatusCode.UNIMPLEMENTED: (404, "not_found_error"),
    grpc.StatusCode.UNAVAILABLE: (529, "overloaded_error"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (504, "timeout_error"),
}
_SERVER_ERROR = (500, "api_error")


def http_status(failure: Failure) -> int:
    return _TABLE.get(failure.code, _SERVER_ERROR)[0]


def error_body(failure: Failure) -> dict[str, Any]:
    """Anthropic's error object (also a stream's ``error`` event). ``details.error_code`` is
    the ErrorInfo reason in lower case (the Anthropic SDK's ``error_code``)."""
    error: dict[str, Any] = {
        "type": _TABLE.get(failure.code, _SERVER_ERROR)[1],
        "message": failure.message,
        "details": {"error_code": (failure.reason or failure.code.name).lower()},
    }
    body: dict[str, Any] = {"type": "error", "error": error}
    if failure.request_id:
        body["request_id"] = failure.request_id
    return body


def message_id(request_id: str) -> str:
    return f"msg_{request_id}"


def usage_json(usage: pb.Usage) -> dict[str, Any]:
    created = usage.cache_creation_5m_input_tokens + usage.cache_creation_1h_input_tokens
    return {
        "input_tokens": max(0, usage.input_tokens - usage.cached_input_tokens - created),
        "output_tokens": usage.output_tokens,
        "cache_read_input_tokens": usage.cached_input_tokens,
        "cache_creation_input_tokens": created,
        "cache_creation": {
            "ephemeral_5m_input_tokens": usage.cache_creation_5m_input_tokens,
            "ephemeral_1h_input_tokens": usage.cache_creation_1h_input_tokens,
        },
        "cost_usd": usage.cost_usd,
    }


def _arguments(text: str) -> Any:
    try:
        return json.loads(text) if text else {}
    except (ValueError, RecursionError):  # RecursionError: deep nesting
        return {}  # validated before it is sent: not reached with a well-behaved model


def message(response: pb.InvokeResponse) -> dict[str, Any]:
    """The ``message`` object for an Invoke answer."""
    content: list[dict[str, Any]] = []
    text = "".join(part.text for part in response.message.content if part.HasField("text"))
    if text:
        content.append({"type": "text", "text": text})
    for call in response.message.tool_calls:
        arguments = _arguments(call.arguments_json)
        content.append({"type": "tool_use", "id": call.id, "name": call.name, "input": arguments})
    return {
        "id": message_id(response.request_id),
        "type": "message",
        "role": "assistant",
        "model": response.agent,
        "content": content,
        "stop_reason": STOP_REASONS[response.finish_reason],
        "stop_sequence": None,
        "usage": usage_json(response.usage),
    }


Event = tuple[str, dict[str, Any]]


class Events:
    """Turns one Stream's events into Anthropic's stream events, in its order:
    ``message_start``, ``ping``, per content block ``content_block_start``, its deltas and
    ``content_block_stop``, then ``message_delta`` (stop reason and usage) and
    ``message_stop``."""

    def __init__(self, agent: str) -> None:
        self._agent = agent
        self._block = -1  # index of the open content block, -1 before the first
        self._open: tuple[str, int] | None = None  # ("text", 0) or ("tool", call index)
        self._usage: pb.Usage | None = None

    def _start_block(self, kind: tuple[str, int], block: dict[str, Any]) -> list[Event]:
        events = self._stop_block()
        self._block += 1
        self._open = kind
        start = {"type": "content_block_start", "index": self._block, "content_block": block}
        return [*events, ("content_block_start", start)]

    def _stop_block(self) -> list[Event]:
        if self._open is None:
            return []
        self._open = None
        return [("content_block_stop", {"type": "content_block_stop", "index": self._block})]

    def _delta(self, delta: dict[str, Any]) -> Event:
        return (
            "content_block_delta",
            {"type": "content_block_delta", "index": self._block, "delta": delta},
        )

    def of(self, event: pb.StreamResponse) -> list[Event]:
        """The Anthropic events ``event`` gives (none for some)."""
        kind = event.WhichOneof("event")
        if kind == "start":
            start: dict[str, Any] = {
                "id": message_id(event.start.request_id),
                "type": "message",
                "role": "assistant",
                "model": event.start.agent or self._agent,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            }
            return [
                ("message_start", {"type": "message_start", "message": start}),
                ("ping", {"type": "ping"}),
            ]
        if kind == "text_delta":
            events = []
            if self._open != ("text", 0):
                events = self._start_block(("text", 0), {"type": "text", "text": ""})
            return [*events, self._delta({"type": "text_delta", "text": event.text_delta.text})]
        if kind == "tool_call_delta":
            call = event.tool_call_delta
            events = []
            if self._open != ("tool", call.index):
                block = {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}
                events = self._start_block(("tool", call.index), block)
            if call.arguments_delta:
                piece = {"type": "input_json_delta", "partial_json": call.arguments_delta}
                events.append(self._delta(piece))
            return events
        if kind == "usage":
            self._usage = event.usage
            return []
        if kind == "finish":
            ending: dict[str, Any] = {
                "type": "message_delta",
                "delta": {
                    "stop_reason": STOP_REASONS[event.finish.finish_reason],
                    "stop_sequence": None,
                },
                "usage": usage_json(self._usage or pb.Usage()),
            }
            return [
                *self._stop_block(),
                ("message_delta", ending),
                ("message_stop", {"type": "message_stop"}),
            ]
        return []
