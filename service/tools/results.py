"""What one tool call gave: its outcome and the text the model is fed back."""

from __future__ import annotations

from dataclasses import dataclass

from service.domain import GuardVerdict, ToolOutcome
from service.guards.tools import TOOL_POLICY

PREVIEW_CHARS = 512  # ToolResult.preview's cap (the contract says so)


@dataclass(frozen=True, slots=True)
class ToolOutput:
    """``text`` is what the model sees: the result, or an error message for every outcome
    but OK (never a credential, a server's stack or a URL with its query). ``size_bytes`` is
    the result's UTF-8 size as the tool returned it; ``duration_s`` the tool's time."""

    outcome: ToolOutcome
    text: str
    size_bytes: int = 0
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.outcome is ToolOutcome.OK


def failed(outcome: ToolOutcome, message: str, duration_s: float = 0.0) -> ToolOutput:
    return ToolOutput(outcome, message, 0, duration_s)


def refusal(verdict: GuardVerdict) -> ToolOutcome:
    """The outcome of a call its checks refused: INVALID_ARGUMENTS when the arguments did not
    parse or fit the tool's schema (the model may try again), BLOCKED when a guard blocked
    it."""
    return ToolOutcome.INVALID_ARGUMENTS if verdict.guard == TOOL_POLICY else ToolOutcome.BLOCKED


def too_large(size: int, limit: int, duration_s: float) -> ToolOutput:
    return ToolOutput(
        ToolOutcome.TOO_LARGE,
        f"the tool's result was {size} bytes, over its limit of {limit} bytes",
        size,
        duration_s,
    )


def model_text(output: ToolOutput) -> str:
    """The TOOL message's text for the model: the result, or the error marked as one."""
    if output.ok:
        return output.text
    return f"error ({output.outcome.value}): {output.text}"
