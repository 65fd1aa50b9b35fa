"""JSON schemas, checked and compiled once: the one cache of them.

Uses ``jsonschema`` (the maintained reference implementation for Python): a schema's
``$schema`` picks the draft, else 2020-12, and ``check_schema`` validates it against that
draft's metaschema, so ``{"type": "banana"}`` is refused where it enters rather than by the
upstream (as a 400 that would count against its breaker), or accepted by one provider and not
another.

Two kinds of schema reach a call: the config's (an agent's tools and response format),
compiled when the config is loaded and found again by identity (no hashing per call); and
callers' (their tools and response formats), which are the same on most calls, so each is
compiled once and kept in a bounded LRU (``cachetools``) keyed by a hash of its canonical
JSON. ``check_schema`` is pure Python, about 5 ms per KiB of schema: :meth:`Schemas.unchecked`
says whether a request still has schemas to compile, so the runner can do that work off the
event loop.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import cachetools
from jsonschema import exceptions, validators
from jsonschema.protocols import Validator

from service.echo import cut

MAX_REMEMBERED = 4096  # callers' distinct schemas kept compiled


def schema_problem(schema: Mapping[str, Any]) -> str | None:
    """Why ``schema`` is not a JSON schema (short, naming where), or None."""
    return _compile(schema).problem


@dataclass(frozen=True, slots=True)
class Compiled:
    """A schema checked: ``problem`` (why it is not a JSON schema) or its ``validator``."""

    problem: str | None
    validator: Validator | None


def _compile(schema: Mapping[str, Any]) -> Compiled:
    kind = validators.validator_for(schema, default=validators.Draft202012Validator)
    plain = dict(schema)
    try:
        kind.check_schema(plain)
    except exceptions.SchemaError as error:
        where = "/".join(str(p) for p in error.absolute_path)
        at = f" (at /{where})" if where else ""
        return Compiled(cut(f"not a JSON schema: {error.message}{at}", 160), None)
    return Compiled(None, kind(plain))


def _key(schema: Mapping[str, Any]) -> bytes:
    text = json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).digest()


class Schemas:
    """Compiled schemas: ``config`` ones (compiled here, at load, and kept while this object
    lives) and callers' (compiled on first use, the last ``remember`` kept). Safe to use from
    worker threads."""

    def __init__(
        self, config: Iterable[Mapping[str, Any]] = (), remember: int = MAX_REMEMBERED
    ) -> None:
        # By identity: the config's mappings are the very objects a call's tools carry.
        self._config: dict[int, tuple[Mapping[str, Any], Compiled]] = {
            id(schema): (schema, _compile(schema)) for schema in config
        }
        self._callers: cachetools.LRUCache[bytes, Compiled] = cachetools.LRUCache(remember)
        self._lock = threading.Lock()

    def compiled(self, schema: Mapping[str, Any]) -> Compiled:
        """``schema`` checked and compiled (once per distinct schema)."""
        known = self._config.get(id(schema))
        if known is not None and known[0] is schema:
            return known[1]
        key = _key(schema)
        with self._lock:
            found = self._callers.get(key)
        if found is not None:
            return found
        found = _compile(schema)
        with self._lock:
            self._callers[key] = found
        return found

    def problem(self, schema: Mapping[str, Any]) -> str | None:
        """Why ``schema`` is not a JSON schema, or None."""
        return self.compiled(schema).problem

    def validator(self, schema: Mapping[str, Any]) -> Validator | None:
        """A validator for ``schema``, or None when it is not a JSON schema (a guard does not
        judge by what it cannot read)."""
        return self.compiled(schema).validator

    def violation(self, schema: Mapping[str, Any], value: Any) -> str | None:
        """Why ``value`` does not fit ``schema`` (where, then jsonschema's best-matching
        message, at most 500 characters), or None when it fits or ``schema`` is not a JSON
        schema (nothing to judge by)."""
        validator = self.validator(schema)
        if validator is None or validator.is_valid(value):  # the common case: no errors built
            return None
        error = exceptions.best_match(validator.iter_errors(value))
        if error is None:
            return None
        where = "/".join(str(p) for p in error.absolute_path) or "(the arguments)"
        return cut(f"{where}: {error.message}", 500)

    def unchecked(self, schemas: Iterable[Mapping[str, Any]]) -> bool:
        """Whether any of ``schemas`` is not compiled yet (compiling it costs CPU)."""
        for schema in schemas:
            known = self._config.get(id(schema))
            if known is not None and known[0] is schema:
                continue
            key = _key(schema)
            with self._lock:
                if key not in self._callers:
                    return True
        return False
