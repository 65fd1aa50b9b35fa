"""Is a caller's JSON schema a JSON schema? Checked against the JSON Schema metaschema.

Uses ``jsonschema`` (the maintained reference implementation for Python): the schema's
``$schema`` picks the draft, else 2020-12, and ``check_schema`` validates it against that
draft's metaschema, so ``{"type": "banana"}`` is refused here rather than by the upstream
(as a 400 that would count against its breaker) or, worse, accepted by one provider and not
another.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jsonschema import exceptions, validators

from service.echo import cut


def schema_problem(schema: Mapping[str, Any]) -> str | None:
    """Why ``schema`` is not a JSON schema (short, naming where), or None."""
    try:
        kind = validators.validator_for(schema, default=validators.Draft202012Validator)
    except exceptions.SchemaError:  # pragma: no cover - older releases raised here
        return "$schema names an unknown draft"
    try:
        kind.check_schema(dict(schema))
    except exceptions.SchemaError as error:
        where = "/".join(str(p) for p in error.absolute_path)
        return cut(
            f"not a JSON schema: {error.message}" + (f" (at /{where})" if where else ""), 160
        )
    return None
