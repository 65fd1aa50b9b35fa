"""The small declared template that builds a step's input (docs/workflows.md).

``{input}`` is the caller's last user message, ``{previous}`` the previous step's answer,
``{steps.<id>}`` an earlier step's answer, ``{memory.<key>}`` an entry of the run's memory
(empty when unset), ``{branches}`` (a parallel merge only) every branch's answer under its
id. ``{{`` and ``}}`` are literal braces. Nothing else is evaluated.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

_FIELD = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_NAME = re.compile(r"^(input|previous|branches|steps\.[A-Za-z0-9_-]+|memory\.[A-Za-z0-9_-]+)$")


def template_problem(
    text: str, earlier_steps: Sequence[str], *, first: bool, merge: bool = False
) -> str | None:
    """What is wrong with ``text`` as a step's template, or None. ``earlier_steps``: the ids
    a ``{steps.<id>}`` may name; ``first``: no ``{previous}``; ``merge``: ``{branches}``."""
    for match in _FIELD.finditer(text):
        token = match.group(0)
        if token in ("{{", "}}"):
            continue
        name = match.group(1)
        if name is None:
            return f"a lone {token!r} (write {token * 2} for a literal brace)"
        if not _NAME.match(name):
            return (
                f"unknown field {{{name}}}: use {{input}}, {{previous}}, {{steps.<id>}} "
                "or {memory.<key>}"
            )
        if name == "previous" and first:
            return "{previous}: there is no previous step here"
        if name == "branches" and not merge:
            return "{branches}: only a parallel workflow's merge has branches"
        if name.startswith("steps.") and name[6:] not in earlier_steps:
            known = ", ".join(earlier_steps) or "none"
            return f"{{{name}}}: not an earlier step (earlier steps: {known})"
    return None


def render(
    text: str,
    *,
    input_text: str,
    previous: str = "",
    steps: Mapping[str, str],
    memory: Mapping[str, str],
    branches: str = "",
) -> str:
    """``text`` with its fields filled in (a template already checked by
    :func:`template_problem`; an unknown step or memory key renders empty)."""

    def fill(match: re.Match[str]) -> str:
        whole = match.group(0)
        if whole in ("{{", "}}"):
            return whole[0]
        name = match.group(1) or ""
        if name == "input":
            return input_text
        if name == "previous":
            return previous
        if name == "branches":
            return branches
        if name.startswith("steps."):
            return steps.get(name[6:], "")
        if name.startswith("memory."):
            return memory.get(name[7:], "")
        return whole

    return _FIELD.sub(fill, text)
