"""Domain types: the plain values that flow through the middle of the service.

Nothing here imports grpc, protobuf or a provider SDK. The api layer converts protobuf to
these types at the edge, providers convert them to their wire formats.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class Role(enum.Enum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"


class FinishReason(enum.Enum):
    UNSPECIFIED = "unspecified"
    STOP = "stop"
    LENGTH = "length"
    TOOL_CALLS = "tool_calls"
    CONTENT_FILTER = "content_filter"
    APPROVAL_PENDING = "approval_pending"  # a run parked waiting for a person's decision
    MAX_STEPS = "max_steps"  # the agent's max_steps model steps gave no final answer


class ToolOutcome(enum.Enum):
    """What became of one tool call the server ran (every outcome but OK reaches the model
    as an error result)."""

    OK = "ok"
    ERROR = "error"
    TIMEOUT = "timeout"
    TOO_LARGE = "too_large"
    NOT_ALLOWED = "not_allowed"
    INVALID_ARGUMENTS = "invalid_arguments"
    BLOCKED = "blocked"
    DENIED = "denied"


class ResponseFormatType(enum.Enum):
    TEXT = "text"
    JSON_OBJECT = "json_object"
    JSON_SCHEMA = "json_schema"


@dataclass(frozen=True, slots=True)
class TextPart:
    text: str


@dataclass(frozen=True, slots=True)
class ImagePart:
    """An image by URL (https: or data:) or inline bytes with their media type."""

    url: str = ""
    data: bytes = b""
    media_type: str = ""


ContentPart = TextPart | ImagePart


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments_json: str


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: tuple[ContentPart, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str = ""

    @property
    def text(self) -> str:
        """The message's text parts, concatenated."""
        return "".join(p.text for p in self.content if isinstance(p, TextPart))


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ResponseFormat:
    type: ResponseFormatType = ResponseFormatType.TEXT
    schema_name: str = ""
    json_schema: Mapping[str, Any] | None = None
    strict: bool = False


@dataclass(frozen=True, slots=True)
class Parameters:
    """Model parameters. ``None`` (or empty) means "not set": a layer below decides."""

    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    response_format: ResponseFormat | None = None

    def overridden_by(self, other: Parameters) -> Parameters:
        """These parameters with every field that ``other`` sets taken from ``other``."""
        if other.unset():
            return self  # most requests set nothing: these, as they are
        return Parameters(
            temperature=other.temperature if other.temperature is not None else self.temperature,
            max_tokens=other.max_tokens if other.max_tokens is not None else self.max_tokens,
            top_p=other.top_p if other.top_p is not None else self.top_p,
            stop=other.stop or self.stop,
            seed=other.seed if other.seed is not None else self.seed,
            response_format=other.response_format or self.response_format,
        )

    def unset(self) -> bool:
        """True when no field is set (``set_fields()`` is empty), without listing them."""
        return (
            self.temperature is None
            and self.max_tokens is None
            and self.top_p is None
            and not self.stop
            and self.seed is None
            and self.response_format is None
        )

    def set_fields(self) -> tuple[str, ...]:
        """Names of the fields that are set, in declaration order."""
        values = {
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "top_p": self.top_p,
            "stop": self.stop or None,
            "seed": self.seed,
            "response_format": self.response_format,
        }
        return tuple(name for name, value in values.items() if value is not None)


@dataclass(frozen=True, slots=True)
class Usage:
    """The tokens one answer used, by every dimension the providers bill, and its cost.

    ``input_tokens`` counts the whole prompt: uncached tokens, cache reads
    (``cached_input_tokens``) and cache writes by TTL (``cache_creation_5m_input_tokens``,
    ``cache_creation_1h_input_tokens``: Anthropic's ``cache_creation.ephemeral_5m/1h_...``).
    ``reasoning_tokens`` are part of ``output_tokens`` (OpenAI's
    ``completion_tokens_details.reasoning_tokens``). ``estimated`` is true when the upstream
    reported no usage and the counts were estimated (:mod:`service.usage.estimate`).
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cost_usd: float = 0.0
    cache_creation_5m_input_tokens: int = 0
    cache_creation_1h_input_tokens: int = 0
    reasoning_tokens: int = 0
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def cache_creation_input_tokens(self) -> int:
        """Prompt tokens written to the provider's cache, whatever their TTL."""
        return self.cache_creation_5m_input_tokens + self.cache_creation_1h_input_tokens


@dataclass(frozen=True, slots=True)
class TargetRef:
    """Which configured target answered: its name, provider kind and model."""

    name: str
    provider: str
    model: str


@dataclass(frozen=True, slots=True)
class AgentRequest:
    """What a caller asks of an agent; the same for unary and streamed calls."""

    agent: str
    messages: tuple[Message, ...]
    request_id: str
    session_id: str = ""
    parameters: Parameters = field(default_factory=Parameters)
    metadata: Mapping[str, str] = field(default_factory=dict)
    tools: tuple[Tool, ...] = ()
    cache: bool | None = None  # use the response cache: None = the agent's default
    # Tools a workflow offers its step's agent (handoffs, delegations: service.workflows),
    # never a caller's: offered beside the agent's own tools; their calls end the answer.
    workflow_tools: tuple[Tool, ...] = ()
    # A workflow's step: a call that needs approval parks the run at once (the workflow
    # waits for the decision durably) instead of waiting within the deadline.
    park_for_approval: bool = False


# Events of an answer. Providers yield TextDelta, ToolCallDelta, UsageEvent and Finish;
# the runner adds Start before them and fills in Finish's routing facts.


@dataclass(frozen=True, slots=True)
class Start:
    request_id: str
    agent: str
    agent_version: str
    target: TargetRef
    run_id: str = ""  # a workflow's run (service.workflows): reattach to it by this id


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str
    step_id: str = ""  # the workflow step that wrote it; "" outside workflows


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    index: int
    id: str = ""
    name: str = ""
    arguments_delta: str = ""
    step_id: str = ""  # the workflow step that wrote it; "" outside workflows


@dataclass(frozen=True, slots=True)
class UsageEvent:
    """The answer's usage. ``partial``: what the upstream reported mid-answer (Anthropic's
    ``message_start``: the input, cache reads and writes). A partial one is never sent to a
    caller; a call cut short is charged from it (:mod:`service.agents.pipeline`)."""

    usage: Usage
    partial: bool = False


@dataclass(frozen=True, slots=True)
class GuardVerdict:
    """What one guard decided about a call (docs/guards.md): the guard's name, the stage
    (``input``, ``output``, ``tool_call``), the category found (``email``, ``openai_key``,
    ``denied_term``…), the action taken (``block``, ``redact``, ``log``) and how many spans
    it was taken on. Never the matched text."""

    guard: str
    stage: str
    category: str
    action: str
    count: int = 1


@dataclass(frozen=True, slots=True)
class Finish:
    reason: FinishReason
    attempts: int = 1
    cache_hit: bool = False
    target: TargetRef | None = None
    verdicts: tuple[GuardVerdict, ...] = ()  # the guards' verdicts a caller may see
    run_id: str = ""  # a tool loop's run, when it was stored (parked or resumable)
    # The upstream's id of its answer (chatcmpl-…, msg_…) as the provider read it; only the
    # model-call span uses it (gen_ai.response.id), so it takes no part in equality.
    response_id: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class ToolResultEvent:
    """The outcome of one tool call the server ran: ``preview`` is the start of the result
    the model sees (empty unless OK), ``error`` what went wrong as the model is told,
    ``size_bytes`` the whole result's UTF-8 size, ``duration_s`` the tool's time."""

    tool_call_id: str
    name: str
    outcome: ToolOutcome
    preview: str = ""
    size_bytes: int = 0
    error: str = ""
    duration_s: float = 0.0
    step: int = 0


@dataclass(frozen=True, slots=True)
class ApprovalRequiredEvent:
    """A tool call waits for a person's decision (``expires_at``: unix seconds)."""

    approval_id: str
    run_id: str
    tool_call_id: str
    tool: str
    arguments_json: str
    reason: str
    expires_at: float
    step: int = 0


@dataclass(frozen=True, slots=True)
class StepFinish:
    """The end of one model step of a tool loop and of the tool calls it made."""

    step: int
    reason: FinishReason
    usage: Usage
    target: TargetRef | None = None
    attempts: int = 1


@dataclass(frozen=True, slots=True)
class StepTrace:
    """One model step as a response lists it: the step's facts, the calls the model made,
    the results of those the server ran and the approvals they wait for."""

    step: int
    reason: FinishReason
    usage: Usage
    target: TargetRef | None
    attempts: int
    message: Message
    results: tuple[ToolResultEvent, ...] = ()
    approvals: tuple[ApprovalRequiredEvent, ...] = ()


Event = (
    Start
    | TextDelta
    | ToolCallDelta
    | UsageEvent
    | Finish
    | ToolResultEvent
    | ApprovalRequiredEvent
    | StepFinish
)
ProviderEvent = TextDelta | ToolCallDelta | UsageEvent | Finish


@dataclass(frozen=True, slots=True)
class AgentResponse:
    """A whole answer: what folding a stream of events gives."""

    request_id: str
    agent: str
    agent_version: str
    target: TargetRef
    message: Message
    finish_reason: FinishReason
    usage: Usage
    attempts: int
    cache_hit: bool = False
    verdicts: tuple[GuardVerdict, ...] = ()
    steps: tuple[StepTrace, ...] = ()  # a tool loop's model steps, the last one included
    run_id: str = ""


_NO_USAGE = Usage()  # immutable: one for every fold that has seen none


def join_piece(calls: dict[int, list[str]], piece: ToolCallDelta) -> None:
    """Add a streamed tool call's ``piece`` to ``calls`` (by index: [id, name, arguments]):
    the first id and name it names stay, the argument fragments are concatenated."""
    parts = calls.setdefault(piece.index, ["", "", ""])
    parts[0] = parts[0] or piece.id
    parts[1] = parts[1] or piece.name
    parts[2] += piece.arguments_delta


class Fold:
    """Accumulates a stream of events into the one response they describe.

    A tool loop's stream closes each model step with a StepFinish: the deltas before it
    are that step's message, and the response's message is the last step's."""

    __slots__ = (
        "_approvals",
        "_finish",
        "_results",
        "_start",
        "_steps",
        "_text",
        "_tool_calls",
        "_usage",
    )

    def __init__(self) -> None:
        self._start: Start | None = None
        self._text: list[str] = []
        self._tool_calls: dict[int, list[str]] = {}
        self._usage = _NO_USAGE
        self._finish: Finish | None = None
        # Tuples, replaced at each addition: a tool loop's few steps and results; a plain
        # answer (most) holds no empty lists while it streams.
        self._steps: tuple[StepTrace, ...] = ()
        self._results: tuple[ToolResultEvent, ...] = ()
        self._approvals: tuple[ApprovalRequiredEvent, ...] = ()

    def add(self, event: Event) -> None:
        match event:
            case Start():
                self._start = event
            case TextDelta(text=text):
                self._text.append(text)
            case ToolCallDelta():
                join_piece(self._tool_calls, event)
            case UsageEvent(usage=usage):
                self._usage = usage
            case Finish():
                self._finish = event
            case ToolResultEvent():
                self._results += (event,)
            case ApprovalRequiredEvent():
                self._approvals += (event,)
            case StepFinish():
                self._steps += (
                    StepTrace(
                        event.step,
                        event.reason,
                        event.usage,
                        event.target,
                        event.attempts,
                        self._message(),
                        self._results,
                        self._approvals,
                    ),
                )
                self._text, self._tool_calls = [], {}
                self._results, self._approvals = (), ()

    def _message(self) -> Message:
        text = "".join(self._text)
        calls = tuple(
            ToolCall(id=p[0], name=p[1], arguments_json=p[2])
            for _, p in sorted(self._tool_calls.items())
        )
        return Message(
            role=Role.ASSISTANT, content=(TextPart(text),) if text else (), tool_calls=calls
        )

    @property
    def usage(self) -> Usage:
        """The usage reported so far (the last UsageEvent's)."""
        return self._usage

    def result(self) -> AgentResponse:
        """The folded response.

        Raises:
            ValueError: the stream had no ``Start`` or no ``Finish`` (it was truncated).
        """
        if self._start is None or self._finish is None:
            raise ValueError("stream ended without its start or finish event")
        message = self._message()
        if self._steps and not message.content and not message.tool_calls:
            message = self._steps[-1].message  # a tool loop: the last step's message
        return AgentResponse(
            request_id=self._start.request_id,
            agent=self._start.agent,
            agent_version=self._start.agent_version,
            target=self._finish.target or self._start.target,
            message=message,
            finish_reason=self._finish.reason,
            usage=self._usage,
            attempts=self._finish.attempts,
            cache_hit=self._finish.cache_hit,
            verdicts=self._finish.verdicts,
            steps=tuple(self._steps),
            run_id=self._finish.run_id,
        )
