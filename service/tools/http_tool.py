"""An HTTP tool: one request per call, built from the call's arguments.

``{name}`` fields of the URL template are filled from the arguments, percent-encoded (so an
argument cannot change the path or host); the other arguments go in the query (GET,
DELETE) or as the JSON body. The response is read in chunks and abandoned past the tool's
``max_result_bytes``. A status of 400 or more is an error result naming the status; errors
never echo the URL's query or a header (they may hold secrets).
"""

from __future__ import annotations

import json
import string
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx2

from service.domain import ToolOutcome
from service.secrets import Secret
from service.tools.results import ToolOutput, failed, too_large
from service.tools.spec import HttpToolSpec

_FORMATTER = string.Formatter()
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def template_fields(url: str) -> frozenset[str]:
    """The ``{name}`` fields of a URL template."""
    return frozenset(name for _, name, _, _ in _FORMATTER.parse(url) if name)


def _value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


class HttpTool:
    """Runs one configured HTTP tool over a shared client (owned by the caller)."""

    def __init__(self, spec: HttpToolSpec, client: httpx2.AsyncClient) -> None:
        self.spec = spec
        self._client = client
        self._fields = template_fields(spec.url)

    async def call(self, arguments: Mapping[str, Any], timeout_s: float) -> ToolOutput:
        """The tool's answer within ``timeout_s``; never raises for the tool's failures."""
        spec = self.spec
        began = time.monotonic()
        missing = sorted(self._fields - arguments.keys())
        if missing:
            return failed(ToolOutcome.INVALID_ARGUMENTS, f"missing argument {missing[0]!r}")
        url = spec.url.format_map({k: quote(_value(arguments[k]), safe="") for k in self._fields})
        rest = {k: v for k, v in arguments.items() if k not in self._fields}
        headers = {k: v.reveal() if isinstance(v, Secret) else v for k, v in spec.headers}
        request: dict[str, Any] = {"headers": headers}
        if spec.method in _BODY_METHODS:
            request["json"] = rest
        else:
            request["params"] = {k: _value(v) for k, v in rest.items()}
        limit = spec.policy.max_result_bytes
        try:
            async with self._client.stream(
                spec.method, url, timeout=httpx2.Timeout(timeout_s), **request
            ) as response:
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > limit:
                        return too_large(len(body), limit, time.monotonic() - began)
                status = response.status_code
        except httpx2.TimeoutException:
            return failed(
                ToolOutcome.TIMEOUT, f"timed out after {timeout_s:g}s", time.monotonic() - began
            )
        except httpx2.InvalidURL as exc:
            # Not an HTTPError: the arguments made a URL httpx refuses (a value past its
            # 65536 characters, say). Its message names the problem, never the query.
            return failed(
                ToolOutcome.INVALID_ARGUMENTS,
                f"the arguments make an invalid URL ({str(exc)[:200]})",
                time.monotonic() - began,
            )
        except httpx2.HTTPError as exc:
            # The exception's text names the URL (its query may hold a secret): the kind only.
            return failed(
                ToolOutcome.ERROR,
                f"the request failed ({type(exc).__name__})",
                time.monotonic() - began,
            )
        elapsed = time.monotonic() - began
        text = body.decode("utf-8", errors="replace")
        if status >= 400:
            return ToolOutput(
                ToolOutcome.ERROR, f"HTTP {status}: {text[:1000]}", len(body), elapsed
            )
        return ToolOutput(ToolOutcome.OK, text, len(body), elapsed)
