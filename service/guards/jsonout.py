"""The JSON guard: an answer asked for as JSON must be JSON, and follow the schema given.

The schema is the call's ``response_format`` (the agent's, or the caller's where allowed);
validation uses ``jsonschema`` through :class:`service.schemas.Schemas` (the config's schemas
compiled at load, callers' once per distinct schema).
"""

from __future__ import annotations

import json

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
        except (ValueError, RecursionError):  # RecursionError: deep nesting
            return [self._hit(NOT_JSON, text)]
        if fmt.type == ResponseFormatType.JSON_OBJECT or fmt.json_schema is None:
            return [] if isinstance(value, dict) else [self._hit(NOT_JSON, text)]
        validator = ctx.schemas.validator(fmt.json_schema)
        if validator is not None and not validator.is_valid(value):
            return [self._hit(SCHEMA_MISMATCH, text)]
        return []

    def _hit(self, category: str, text: str) -> Hit:
        return Hit(self._name, self._action, Finding(0, len(text), category, "", raw=True))
