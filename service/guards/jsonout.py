"""The JSON guard: an answer asked for as JSON must be JSON, and follow the schema given.

The schema is the call's ``response_format`` (the agent's, or the caller's where allowed);
validation uses ``jsonschema`` (the reference implementation of JSON Schema for Python), with
the dialect the schema names (``$schema``) or Draft 2020-12. Validators are built once per
distinct schema and kept (a bounded cache), not once per call.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

import jsonschema
from jsonschema.protocols import Validator

from service.domain import ResponseFormatType
from service.guards.base import Action, Finding, Stage
from service.guards.check import GuardContext, Hit

NOT_JSON = "not_json"
SCHEMA_MISMATCH = "schema_mismatch"


class JsonJudge:
    def __init__(self, name: str, action: Action) -> None:
        self._name = name
        self._action = action

    async def judge(self, text: str, stage: Stage, ctx: GuardContext) -> list[Hit]:
        fmt = ctx.response_format
        if fmt is None or fmt.type == ResponseFormatType.TEXT:
            return []
        try:
            value = json.loads(text)
        except ValueError:
            return [self._hit(NOT_JSON, text)]
        if fmt.type == ResponseFormatType.JSON_OBJECT or fmt.json_schema is None:
            return [] if isinstance(value, dict) else [self._hit(NOT_JSON, text)]
        validator = validator_for(fmt.json_schema)
        if validator is not None and not validator.is_valid(value):
            return [self._hit(SCHEMA_MISMATCH, text)]
        return []

    def _hit(self, category: str, text: str) -> Hit:
        return Hit(self._name, self._action, Finding(0, len(text), category, "", raw=True))


def validator_for(schema: Mapping[str, Any]) -> Validator | None:
    """A validator for ``schema`` (built once per distinct schema), or None when the schema
    itself is invalid."""
    return _validator(json.dumps(schema, sort_keys=True, default=str))


@functools.lru_cache(maxsize=256)
def _validator(schema_json: str) -> Validator | None:
    """A validator for the schema, or None when the schema itself is invalid (the provider
    was asked for it as given; the guard does not judge what it cannot read)."""
    schema: dict[str, Any] = json.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError:
        return None
    return cls(schema)
