"""Structured output on the Messages API: a caller's ``response_format`` → request fields.

- ``json_schema`` → ``output_config.format = {"type": "json_schema", "schema": …}``, the
  Messages API's JSON outputs (constrained decoding: the answer's text is JSON that matches the
  schema). The schema goes through the SDK's own ``anthropic.transform_schema``, which makes it
  what the API accepts: ``additionalProperties: false`` on every object, and the constraints
  the API does not enforce (``maxLength``, ``minimum``, …) moved into the description. Source:
  platform.claude.com/docs/en/build-with-claude/structured-outputs and the SDK's
  ``OutputConfigParam`` (no beta header on the installed SDK).
- ``json_object`` (any JSON object, no schema) cannot be said with ``output_config``, which
  needs a schema whose objects are closed. It is asked for the way Anthropic's tool-use guide
  extracts JSON: a tool :data:`JSON_TOOL` whose input is any object, and ``tool_choice`` that
  makes the model call a tool (that one, or one of the agent's when it has tools). The stream
  reader (``anthropic_wire.EventReader``) turns that tool's input back into the answer's text,
  so the caller sees
  what an OpenAI target gives: text that is one JSON object, finish reason STOP.
"""

from __future__ import annotations

from typing import Any

import anthropic

from service.domain import ResponseFormat, ResponseFormatType
from service.errors import InvalidArgument

JSON_TOOL = "switchboard_json_object"
"""The name of the tool that carries a ``json_object`` answer (never shown to callers)."""
_JSON_TOOL_DEFINITION = {
    "name": JSON_TOOL,
    "description": "Give your whole answer as one JSON object: the input of this tool.",
    "input_schema": {"type": "object"},
}


def structured_output(fmt: ResponseFormat | None, tools: list[dict[str, Any]]) -> dict[str, Any]:
    """The request fields that ask for ``fmt`` (none for text), given the request's ``tools``.

    Raises:
        InvalidArgument: a JSON schema the Messages API cannot take (no ``type``, ``anyOf``,
            ``allOf``, ``const`` or ``enum`` at some level), or a tool already named
            :data:`JSON_TOOL`.
    """
    if fmt is None or fmt.type is ResponseFormatType.TEXT:
        return {}
    if fmt.type is ResponseFormatType.JSON_SCHEMA:
        try:
            schema = anthropic.transform_schema(dict(fmt.json_schema or {}))
        except (ValueError, TypeError, AttributeError) as exc:
            raise InvalidArgument.field(
                "parameters.response_format.json_schema",
                f"the Messages API cannot take this schema: {exc}",
            ) from None
        return {"output_config": {"format": {"type": "json_schema", "schema": schema}}}
    if any(tool.get("name") == JSON_TOOL for tool in tools):
        raise InvalidArgument.field(
            "tools", f"the tool name {JSON_TOOL!r} is reserved for json_object answers"
        )
    return {
        "tools": [*tools, _JSON_TOOL_DEFINITION],
        "tool_choice": {"type": "any"} if tools else {"type": "tool", "name": JSON_TOOL},
    }
