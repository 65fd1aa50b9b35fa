"""The guards on a tool loop's calls and results: each call's arguments are checked against
the tool's schema and the agent's tool_call guards before it runs, and each result passes
the agent's input guards before the model sees it (prompt injection from tool output is
the classic attack)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema

from service.agents.spec import AgentSpec
from service.domain import GuardVerdict
from service.guards import GuardContext, Stage, check


@dataclass(frozen=True, slots=True)
class CallCheck:
    """A call's arguments as they may run (redacted), the verdicts, and why it may not run
    (``problem``; ``blocked`` when a guard blocked it)."""

    arguments: Mapping[str, Any]
    arguments_json: str
    verdicts: tuple[GuardVerdict, ...] = ()
    problem: str = ""
    blocked: bool = False


class Validators:
    """JSON-schema validators, built once per schema (schemas are per config snapshot)."""

    def __init__(self) -> None:
        self._by_id: dict[int, tuple[Mapping[str, Any], Any]] = {}

    def problem(self, schema: Mapping[str, Any], arguments: Mapping[str, Any]) -> str | None:
        held = self._by_id.get(id(schema))
        if held is None or held[0] is not schema:
            validator = jsonschema.validators.validator_for(schema)(schema)
            held = self._by_id[id(schema)] = (schema, validator)
        if held[1].is_valid(arguments):  # the common case, without building errors
            return None
        error = jsonschema.exceptions.best_match(held[1].iter_errors(arguments))
        if error is None:
            return None
        where = "/".join(str(p) for p in error.absolute_path) or "(the arguments)"
        return f"{where}: {error.message}"[:500]


async def check_call(
    agent: AgentSpec,
    ctx: GuardContext,
    schema: Mapping[str, Any],
    arguments_json: str,
    validators: Validators,
) -> CallCheck:
    """Parse, validate and guard one call's arguments."""
    try:
        arguments = json.loads(arguments_json or "{}")
    except ValueError:
        return CallCheck({}, arguments_json, problem="the arguments are not valid JSON")
    if not isinstance(arguments, dict):
        return CallCheck({}, arguments_json, problem="the arguments must be a JSON object")
    if (problem := validators.problem(schema, arguments)) is not None:
        return CallCheck(arguments, arguments_json, problem=problem)
    if not agent.guards.tool_call:
        return CallCheck(arguments, arguments_json)
    checked = await check(agent.guards.tool_call, Stage.TOOL_CALL, arguments_json, ctx)
    if checked.blocked is not None:
        verdict = checked.blocked
        return CallCheck(
            arguments,
            arguments_json,
            checked.verdicts,
            f"blocked by guard {verdict.guard} ({verdict.category})",
            blocked=True,
        )
    if checked.text != arguments_json:
        try:
            arguments = json.loads(checked.text)
        except ValueError:
            return CallCheck(
                arguments, arguments_json, checked.verdicts, "redaction broke the arguments", True
            )
    return CallCheck(arguments, checked.text, checked.verdicts)


async def check_result(
    agent: AgentSpec, ctx: GuardContext, text: str
) -> tuple[str, tuple[GuardVerdict, ...], str]:
    """The result as the model may see it, the verdicts, and why it may not (a blocking
    guard's name and category: never the text)."""
    if not agent.guards.input or not text:
        return text, (), ""
    checked = await check(agent.guards.input, Stage.INPUT, text, ctx)
    if checked.blocked is not None:
        verdict = checked.blocked
        return "", checked.verdicts, f"blocked by guard {verdict.guard} ({verdict.category})"
    return checked.text, checked.verdicts, ""
