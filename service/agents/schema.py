"""Is a caller's JSON schema a JSON schema? Checked against the JSON Schema metaschema.

Uses ``jsonschema`` (the maintained reference implementation for Python): the schema's
``$schema`` picks the draft, else 2020-12, and ``check_schema`` validates it against that
draft's metaschema, so ``{"type": "banana"}`` is refused here rather than by the upstream
(as a 400 that would count against its breaker) or, worse, accepted by one provider and not
another.

``check_schema`` is pure Python and costs about 5 ms per KiB of schema; callers send the
same tools on every call, so :class:`SchemaCheck` remembers the verdict per schema (by a
hash of its canonical JSON, a bounded LRU), and says whether a request still has schemas to
check, so the runner can do that work off the event loop.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

from jsonschema import exceptions, validators

from service.echo import cut

MAX_REMEMBERED = 4096


def schema_problem(schema: Mapping[str, Any]) -> str | None:
    """Why ``schema`` is not a JSON schema (short, naming where), or None."""
    kind = validators.validator_for(schema, default=validators.Draft202012Validator)
    try:
        kind.check_schema(dict(schema))
    except exceptions.SchemaError as error:
        where = "/".join(str(p) for p in error.absolute_path)
        at = f" (at /{where})" if where else ""
        return cut(f"not a JSON schema: {error.message}{at}", 160)
    return None


def _key(schema: Mapping[str, Any]) -> bytes:
    text = json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).digest()


class SchemaCheck:
    """:func:`schema_problem` with a memory of the last :data:`MAX_REMEMBERED` verdicts.
    Safe to call from worker threads."""

    def __init__(self, remember: int = MAX_REMEMBERED) -> None:
        self._remember = remember
        self._verdicts: OrderedDict[bytes, str | None] = OrderedDict()
        self._lock = threading.Lock()

    def problem(self, schema: Mapping[str, Any]) -> str | None:
        key = _key(schema)
        with self._lock:
            if key in self._verdicts:
                self._verdicts.move_to_end(key)
                return self._verdicts[key]
        verdict = schema_problem(schema)
        with self._lock:
            self._verdicts[key] = verdict
            if len(self._verdicts) > self._remember:
                self._verdicts.popitem(last=False)
        return verdict

    def unchecked(self, schemas: Iterable[Mapping[str, Any]]) -> bool:
        """Whether any of ``schemas`` has no remembered verdict (checking it costs CPU)."""
        with self._lock:
            return any(_key(s) not in self._verdicts for s in schemas)
