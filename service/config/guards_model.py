"""The ``guards:`` section and each agent's ``guards:`` lists (docs/guards.md).

Guards are named at the top level and listed per agent and stage::

    guards:
      pii: {kind: pii, action: redact}
      no-secrets: {kind: secrets, action: block}
    agents:
      support:
        guards: {input: [pii, no-secrets], output: [pii, no-secrets]}
"""

from __future__ import annotations

from typing import Annotated, Literal, cast

from pydantic import Field, model_validator

from service.config.base import FrozenModel, SecretRef
from service.guards import pii

ActionName = Literal["block", "redact", "log"]
PiiCategory = Literal["email", "phone", "payment_card", "iban", "us_ssn", "ip_address"]


class PiiGuardConfig(FrozenModel):
    kind: Literal["pii"]
    action: ActionName = "redact"
    categories: list[PiiCategory] = Field(
        default_factory=lambda: cast(list[PiiCategory], list(pii.CATEGORIES))
    )
    phone_regions: list[str] = Field(
        default_factory=lambda: ["US"],
        description="regions (ISO 3166 alpha-2) for numbers written without a +country code",
    )


class SecretsGuardConfig(FrozenModel):
    kind: Literal["secrets"]
    action: ActionName = "redact"


class DeniedTermsGuardConfig(FrozenModel):
    kind: Literal["denied_terms"]
    action: ActionName = "block"
    terms: list[str] = Field(min_length=1)
    whole_words: bool = True


class RegexGuardConfig(FrozenModel):
    kind: Literal["regex"]
    action: ActionName = "block"
    patterns: dict[str, str] = Field(
        min_length=1, description="category → RE2 pattern; the category names the verdict"
    )
    case_sensitive: bool = True
    window_chars: int = Field(
        128, ge=1, le=65536, description="longest match a streamed answer must see whole"
    )

    @model_validator(mode="after")
    def _categories(self) -> RegexGuardConfig:
        for category in self.patterns:
            if not category.replace("_", "").isalnum():
                raise ValueError(f"patterns: category {category!r}: letters, digits and '_'")
        return self


class LengthGuardConfig(FrozenModel):
    kind: Literal["length"]
    action: Literal["block", "log"] = "block"
    max_chars: int | None = Field(None, ge=1)
    max_tokens: int | None = Field(None, ge=1, description="estimated: UTF-8 bytes / 3")

    @model_validator(mode="after")
    def _a_limit(self) -> LengthGuardConfig:
        if self.max_chars is None and self.max_tokens is None:
            raise ValueError("give max_chars, max_tokens or both")
        return self


class InjectionGuardConfig(FrozenModel):
    kind: Literal["prompt_injection"]
    action: ActionName = "block"
    hidden_text: bool = Field(True, description="object to zero-width and tag characters")


class JsonGuardConfig(FrozenModel):
    """The answer must be JSON (``json_object``) or follow the schema (``json_schema``) of
    the call's response_format; a text response_format is not checked."""

    kind: Literal["json_schema"]
    action: Literal["block", "log"] = "block"


class ExternalGuardConfig(FrozenModel):
    """An HTTP endpoint that judges the text (docs/guards.md: the external guard)."""

    kind: Literal["external"]
    url: str = Field(pattern=r"^https?://\S+$")
    timeout_s: float = Field(2.0, gt=0, le=60)
    fail_mode: Literal["open", "closed"] = Field(
        description="when the endpoint errors or times out: open lets the text through "
        "(with an 'error' verdict logged), closed blocks it"
    )
    api_key: SecretRef | None = Field(None, description="sent as Authorization: Bearer …")


GuardConfig = Annotated[
    PiiGuardConfig
    | SecretsGuardConfig
    | DeniedTermsGuardConfig
    | RegexGuardConfig
    | LengthGuardConfig
    | InjectionGuardConfig
    | JsonGuardConfig
    | ExternalGuardConfig,
    Field(discriminator="kind"),
]


class AgentGuardsConfig(FrozenModel):
    """Guard names per stage, applied in order."""

    input: list[str] = Field(default_factory=list)
    output: list[str] = Field(default_factory=list)
    tool_call: list[str] = Field(default_factory=list)


# Which kinds make sense where: the JSON guard judges an answer.
STAGE_KINDS = {
    "input": {"pii", "secrets", "denied_terms", "regex", "length", "prompt_injection", "external"},
    "output": {
        "pii",
        "secrets",
        "denied_terms",
        "regex",
        "length",
        "prompt_injection",
        "json_schema",
        "external",
    },
    "tool_call": {
        "pii",
        "secrets",
        "denied_terms",
        "regex",
        "length",
        "prompt_injection",
        "external",
    },
}


def check_references(
    guards: dict[str, GuardConfig], agents: dict[str, AgentGuardsConfig | None]
) -> None:
    """Raises ValueError naming the field when an agent lists an unknown guard or one whose
    kind does not apply to that stage."""
    for agent, lists in agents.items():
        if lists is None:
            continue
        for stage in ("input", "output", "tool_call"):
            for i, name in enumerate(getattr(lists, stage)):
                guard = guards.get(name)
                where = f"agents.{agent}.guards.{stage}[{i}]"
                if guard is None:
                    raise ValueError(
                        f"{where}: no guard named {name!r} "
                        f"(guards: {', '.join(sorted(guards)) or 'none'})"
                    )
                if guard.kind not in STAGE_KINDS[stage]:
                    raise ValueError(f"{where}: a {guard.kind} guard does not apply to {stage}")
