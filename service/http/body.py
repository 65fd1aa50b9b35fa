"""Reading a model-API door's JSON body (OpenAI's, Anthropic's): the checks both doors make
on a field, one error type that names the field at fault, and the Switchboard extensions
both accept (``session_id``, ``cache``).

A door refuses what the contract cannot carry, naming the field in the caller's terms, so
no caller loses a setting silently; a refusal is then sent down the chain as an undecodable
request (:class:`service.interceptors.decode.Undecodable`), counted and logged like any.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import msgspec
from google.protobuf import struct_pb2
from switchboard.v1 import agent_pb2 as pb

AgentCall = pb.InvokeRequest | pb.StreamRequest
"""What a door builds: the two requests share their fields (``request_id`` aside)."""


class BadBody(ValueError):
    """The body is not a request this door can carry; ``field`` names the part at fault
    in the caller's terms (OpenAI's ``param``), "" for the body as a whole."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(problem)
        self.field = field
        self.problem = problem


def parse_body(body: bytes) -> dict[str, Any]:
    """The JSON object in ``body`` (msgspec's decoder: about 10x the standard library's,
    bench/doors_bench.py).

    Raises:
        BadBody: not JSON (or nested past the recursion limit), or not an object.
    """
    try:
        value = msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise BadBody("", "the request body is not valid JSON") from exc
    if not isinstance(value, dict):
        raise BadBody("", "the request body must be a JSON object")
    return value


def model_and_messages(
    body: Mapping[str, Any], known: frozenset[str], neutral: Mapping[str, tuple[Any, ...]]
) -> tuple[str, list[Any]]:
    """``model`` (the agent's name) and the ``messages`` list of a body whose fields are all
    ``known``, those of ``neutral`` at their neutral value (the first of them is what the
    door does).

    Raises:
        BadBody: another field, a field not at its neutral value, no model or no messages.
    """
    for key, value in body.items():
        if key not in known:
            raise BadBody(key, "not supported by this gateway")
        if key in neutral and value not in neutral[key]:
            raise BadBody(key, f"only {neutral[key][0]!r} is supported")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadBody("model", "the agent name is required (a string)")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadBody("messages", "a non-empty list of messages is required")
    return model, messages


def string(value: Any, field: str) -> str:
    """Raises: BadBody: ``value`` is not a string."""
    if not isinstance(value, str):
        raise BadBody(field, "must be a string")
    return value


def number(body: Mapping[str, Any], key: str) -> float | None:
    """``body[key]`` as a float, None when absent or null. Raises: BadBody: not a number."""
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadBody(key, "must be a number")
    return float(value)


def integer(body: Mapping[str, Any], key: str) -> int | None:
    """``body[key]``, None when absent or null. Raises: BadBody: not an integer."""
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadBody(key, "must be an integer")
    return value


def schema_struct(value: Any, field: str) -> struct_pb2.Struct:
    """A JSON Schema object as a Struct. Raises: BadBody: not an object Struct can hold."""
    if not isinstance(value, dict):
        raise BadBody(field, "a JSON Schema object")
    struct = struct_pb2.Struct()
    try:
        struct.update(value)
    except (ValueError, TypeError, RecursionError) as exc:
        raise BadBody(field, "a JSON Schema object") from exc
    return struct


def extensions(body: Mapping[str, Any], request: AgentCall) -> None:
    """Switchboard's own fields (sent by the SDKs as ``extra_body``): ``session_id`` (a
    stored conversation) and ``cache`` (the response cache, true or false).

    Raises:
        BadBody: of the wrong type.
    """
    session = body.get("session_id")
    if session is not None:
        request.session_id = string(session, "session_id")
    cache = body.get("cache")
    if cache is not None:
        if not isinstance(cache, bool):
            raise BadBody("cache", "must be true or false")
        request.cache = cache


def in_callers_terms(field: str, message: str, rename: Callable[[str], str]) -> tuple[str, str]:
    """``(param, message)`` with the contract's ``field`` (a BadRequest field path) renamed
    to the caller's, also where the message starts with it (``"parameters.top_p: 3 is out
    of range"``)."""
    if not field:
        return field, message
    param = rename(field)
    if message.startswith(field + ":"):
        message = param + message[len(field) :]
    return param, message
