"""A tool call against its tool's policy: is approval needed, and why.

Conditions are data, never code: a dotted path into the arguments and one operator (RE2 for
``matches``, so a pattern cannot run away). A condition that cannot be evaluated (missing
argument, wrong type) does not hold, except ``exists: false``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import re2

from service.tools.spec import Condition, ServerTool

_MISSING = object()


def approval_reason(tool: ServerTool, arguments: Mapping[str, Any]) -> str | None:
    """Why this call needs a person's approval, or None when it does not."""
    policy = tool.policy
    if policy.approval == "always":
        return f"policy: {tool.name} ({policy.tool_class}) always needs approval"
    if policy.approval == "when":
        for condition in policy.when:
            if holds(condition, arguments):
                return f"policy: {describe(condition)}"
    return None


def holds(condition: Condition, arguments: Mapping[str, Any]) -> bool:
    value = _at(arguments, condition.path)
    op, operand = condition.op, condition.value
    if op == "exists":
        return (value is not _MISSING) == bool(operand)
    if value is _MISSING:
        return False
    try:
        match op:
            case "eq":
                return bool(value == operand)
            case "ne":
                return bool(value != operand)
            case "in":
                return value in operand
            case "not_in":
                return value not in operand
            case "matches":
                return isinstance(value, str) and re2.search(operand, value) is not None
            case _:
                return _compare(op, value, operand)
    except TypeError:
        return False


def _compare(op: str, value: Any, operand: float) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return {
        "gt": value > operand,
        "ge": value >= operand,
        "lt": value < operand,
        "le": value <= operand,
    }[op]


def _at(arguments: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = arguments
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return _MISSING
        node = node[key]
    return node


def describe(condition: Condition) -> str:
    """``amount gt 100``: the condition as a person reads it (no argument values)."""
    return f"{'.'.join(condition.path)} {condition.op} {json.dumps(condition.value)}"


def allowed(allow: tuple[str, ...], tool: ServerTool) -> bool:
    """Whether an agent's allowlist names ``tool`` (``<server>.<tool>``, ``<server>.*`` or
    an HTTP tool's name)."""
    if tool.source == "http":
        return tool.name in allow
    server = tool.server
    return f"{server}.*" in allow or f"{server}.{tool.remote_name}" in allow
