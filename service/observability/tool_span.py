"""The ``execute_tool`` span: one per tool call the server runs (the agent loop's MCP and HTTP
tools), a child of the ``invoke_agent`` span current when it runs.

Follows the OpenTelemetry GenAI conventions' execute-tool span,
https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-spans/#execute-tool-span: named
``execute_tool {gen_ai.tool.name}``, internal, with ``gen_ai.operation.name`` =
``execute_tool``, ``gen_ai.tool.name``, ``gen_ai.tool.call.id``, ``gen_ai.tool.type`` =
``extension`` (run on the agent's side, not the caller's), ``gen_ai.tool.description``, and
``switchboard.tool.source`` (``http`` or ``mcp:<server>``) and ``switchboard.tool.outcome``.
An outcome other than ``ok`` sets ``error.type`` to it and an ERROR status. Never the
arguments or the result: they may hold what a caller would not log.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

if TYPE_CHECKING:
    from service.tools.results import ToolOutput
    from service.tools.spec import ServerTool

OPERATION = "execute_tool"


class ToolSpans:
    """Makes the ``execute_tool`` span of each tool call with ``tracer``."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer

    async def traced(
        self, tool: ServerTool, call_id: str, run: Awaitable[ToolOutput]
    ) -> ToolOutput:
        """``run``'s output, awaited inside the span; raises what it raises (a cancelled
        call leaves the status unset)."""
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": OPERATION,
            "gen_ai.tool.name": tool.name,
            "gen_ai.tool.type": "extension",
            "switchboard.tool.source": tool.source,
        }
        if call_id:
            attributes["gen_ai.tool.call.id"] = call_id
        if tool.description:
            attributes["gen_ai.tool.description"] = tool.description
        with self._tracer.start_as_current_span(
            f"{OPERATION} {tool.name}",
            kind=SpanKind.INTERNAL,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            output = await run
            outcome = output.outcome.value
            span.set_attribute("switchboard.tool.outcome", outcome)
            if not output.ok:
                span.set_attribute("error.type", outcome)
                span.set_status(Status(StatusCode.ERROR))
            return output
