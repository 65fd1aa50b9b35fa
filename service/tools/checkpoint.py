"""A tool loop's state as bytes for the run store, and back: compact JSON (msgspec), never
pickle, so a checkpoint read from a shared database cannot run code, and a checkpoint
written by one version is read by the next (``v`` says which layout; unknown fields are
ignored). What it holds: the request (without its messages), the conversation, the steps
taken, the guards' verdicts so far, and the step parked for approvals (its calls, the
outputs of those already run, and the calls that wait with their approval ids).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import msgspec

from service.domain import (
    AgentRequest,
    ApprovalRequiredEvent,
    FinishReason,
    GuardVerdict,
    ImagePart,
    Message,
    Parameters,
    Role,
    StepTrace,
    TargetRef,
    TextPart,
    Tool,
    ToolCall,
    ToolResultEvent,
    Usage,
)
from service.errors import Internal
from service.tools.results import ToolOutput
from service.tools.run_state import LoopState, Parked, Pending

VERSION = 1


def encode(state: LoopState) -> bytes:
    """``state`` as checkpoint bytes (UTF-8 JSON)."""
    request = state.request
    return msgspec.json.encode(
        {
            "v": VERSION,
            "request": {
                "agent": request.agent,
                "request_id": request.request_id,
                "session_id": request.session_id,
                "parameters": request.parameters,
                "metadata": dict(request.metadata),
                "tools": request.tools,
                "workflow_tools": request.workflow_tools,
                "park_for_approval": request.park_for_approval,
            },
            "conversation": [_message(m) for m in state.conversation],
            "history_len": state.history_len,
            "step": state.step,
            "trace": [_step(t) for t in state.trace],
            "verdicts": state.verdicts,
            "target": state.target,
            "parked": None if state.parked is None else _plain(state.parked),
        }
    )


def decode(data: bytes) -> LoopState:
    """The state ``data`` encodes.

    Raises:
        Internal: the bytes are not a checkpoint this version reads.
    """
    try:
        d = msgspec.json.decode(data)
        if d.get("v") != VERSION:
            raise ValueError(f"checkpoint layout {d.get('v')!r}")
        r = d["request"]
        request = AgentRequest(
            r["agent"], (), r["request_id"], r["session_id"],
            _as(r["parameters"], Parameters), r["metadata"], _as(r["tools"], tuple[Tool, ...]),
            workflow_tools=_as(r.get("workflow_tools", []), tuple[Tool, ...]),
            park_for_approval=bool(r.get("park_for_approval", False)),
        )  # fmt: skip
        trace = [
            StepTrace(
                t["step"], FinishReason(t["reason"]), _as(t["usage"], Usage),
                _as(t["target"], TargetRef | None), t["attempts"], _unmessage(t["message"]),
                _as(t["results"], tuple[ToolResultEvent, ...]),
                _as(t["approvals"], tuple[ApprovalRequiredEvent, ...]),
            )
            for t in d["trace"]
        ]  # fmt: skip
        p = d["parked"]
        parked = None
        if p is not None:
            parked = Parked(
                _as(p["calls"], tuple[ToolCall, ...]), FinishReason(p["reason"]), p["ends"],
                _as(p["outputs"], dict[str, ToolOutput]), _as(p["pending"], list[Pending]),
                _as(p["approvals"], list[ApprovalRequiredEvent]),
            )  # fmt: skip
        return LoopState(
            request, [_unmessage(m) for m in d["conversation"]], d["history_len"], d["step"],
            trace, _as(d["verdicts"], list[GuardVerdict]), started=False,
            target=_as(d["target"], TargetRef | None), parked=parked,
        )  # fmt: skip
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError, KeyError, TypeError) as e:
        raise Internal(f"a run's checkpoint cannot be read: {e}") from None


def _plain(value: object) -> Any:
    return msgspec.to_builtins(value)


def _as(value: object, kind: Any) -> Any:
    return msgspec.convert(value, kind)


def _step(t: StepTrace) -> dict[str, Any]:
    return {**_plain(replace(t, message=Message(Role.ASSISTANT))), "message": _message(t.message)}


def _message(m: Message) -> dict[str, Any]:
    return {
        "role": m.role.value,
        "content": [
            {"text": p.text} if isinstance(p, TextPart) else {"image": _plain(p)} for p in m.content
        ],
        "tool_calls": _plain(m.tool_calls),
        "tool_call_id": m.tool_call_id,
    }


def _unmessage(d: dict[str, Any]) -> Message:
    parts = tuple(
        TextPart(p["text"]) if "text" in p else _as(p["image"], ImagePart) for p in d["content"]
    )
    return Message(
        Role(d["role"]), parts, _as(d["tool_calls"], tuple[ToolCall, ...]), d["tool_call_id"]
    )
