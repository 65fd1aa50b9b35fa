"""Compiling the config's guards once per snapshot (never per call)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from service.guards.base import Action, Stage
from service.guards.check import Guard
from service.guards.injection import InjectionMatcher
from service.guards.jsonout import JsonJudge
from service.guards.length import LengthLimit
from service.guards.pii import PiiMatcher
from service.guards.regex import RegexMatcher
from service.guards.secrets import SecretsMatcher
from service.guards.terms import TermsMatcher

if TYPE_CHECKING:  # the config imports the matchers' categories: no cycle at run time
    from service.config.guards_model import AgentGuardsConfig, GuardConfig


@dataclass(frozen=True, slots=True)
class AgentGuards:
    """One agent's guards per stage, in the order its config lists them."""

    input: tuple[Guard, ...] = ()
    output: tuple[Guard, ...] = ()
    tool_call: tuple[Guard, ...] = ()

    def at(self, stage: Stage) -> tuple[Guard, ...]:
        if stage in {Stage.INPUT, Stage.TOOL_RESULT}:
            return self.input
        if stage == Stage.OUTPUT:
            return self.output
        return self.tool_call


NO_GUARDS = AgentGuards()
ExternalFactory = Callable[[str, "GuardConfig"], Guard]


def compile_guards(
    configs: Mapping[str, GuardConfig], external: ExternalFactory | None = None
) -> dict[str, Guard]:
    """Every named guard, compiled. ``external`` builds external guards (it resolves their
    secrets); without it an external guard is an error.

    Raises:
        ValueError: a guard cannot be compiled (an RE2 pattern); the message names it.
    """
    compiled: dict[str, Guard] = {}
    for name, config in configs.items():
        try:
            compiled[name] = _compile(name, config, external)
        except ValueError as exc:
            raise ValueError(f"guards.{name}: {exc}") from None
    return compiled


def _compile(name: str, config: GuardConfig, external: ExternalFactory | None) -> Guard:
    action = Action(config.action) if hasattr(config, "action") else Action.BLOCK
    match config.kind:
        case "pii":
            matcher = PiiMatcher(config.categories, config.phone_regions)
            return Guard(name, config.kind, action, matcher=matcher)
        case "secrets":
            return Guard(name, config.kind, action, matcher=SecretsMatcher())
        case "denied_terms":
            terms = TermsMatcher(config.terms, whole_words=config.whole_words)
            return Guard(name, config.kind, action, matcher=terms)
        case "regex":
            regex = RegexMatcher(
                config.patterns, case_sensitive=config.case_sensitive, window=config.window_chars
            )
            return Guard(name, config.kind, action, matcher=regex)
        case "length":
            limit = LengthLimit(config.max_chars, config.max_tokens)
            return Guard(name, config.kind, action, length=limit)
        case "prompt_injection":
            injection = InjectionMatcher(hidden_text=config.hidden_text)
            return Guard(name, config.kind, action, matcher=injection)
        case "json_schema":
            return Guard(name, config.kind, action, judge=JsonJudge(name, action))
        case "external":
            if external is None:
                raise ValueError("external guards are not available here")
            return external(name, config)
    raise ValueError(f"unknown guard kind {config.kind!r}")


def agent_guards(config: AgentGuardsConfig | None, guards: Mapping[str, Guard]) -> AgentGuards:
    """The guards ``config`` lists (names checked when the config was validated)."""
    if config is None:
        return NO_GUARDS
    return AgentGuards(
        input=tuple(guards[n] for n in config.input),
        output=tuple(guards[n] for n in config.output),
        tool_call=tuple(guards[n] for n in config.tool_call),
    )
