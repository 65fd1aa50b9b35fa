"""The external guard: an HTTP endpoint judges the text (a moderation model, Llama Guard
served by vLLM behind a small adapter, a company's DLP service).

Request: ``POST <url>`` with JSON ``{"text": ..., "stage": "input"|"output"|"tool_call",
"agent": ..., "guard": ...}`` and, when an ``api_key`` is configured, ``Authorization:
Bearer <key>``. Answer (HTTP 200, JSON)::

    {"action": "allow"}
    {"action": "block", "category": "violence"}
    {"action": "redact", "spans": [{"start": 8, "end": 20, "category": "name"}]}

``start``/``end`` are character offsets into the text sent. A category is letters, digits
and ``_`` (at most 64; anything else is replaced by ``external``). Anything else — a
timeout (``timeout_s``, also bounded by the call's time), a connection error, a non-200
status, a body of another shape — is the guard failing, and follows its ``fail_mode``:
``open`` lets the text through with a ``log`` verdict of category ``guard_error``,
``closed`` blocks it with that category.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import httpx2

from service.guards.base import Action, Finding, Stage, placeholder
from service.guards.check import GuardContext, Hit
from service.secrets import Secret

log = logging.getLogger(__name__)

GUARD_ERROR = "guard_error"
DEFAULT_CATEGORY = "external"
_CATEGORY = re.compile(r"^[A-Za-z0-9_]{1,64}$")


class ExternalJudge:
    """One configured endpoint. The HTTP client is the call's (``GuardContext.http``),
    shared by every external guard and owned by the app."""

    def __init__(
        self, name: str, url: str, timeout_s: float, fail_open: bool, api_key: Secret | None
    ) -> None:
        self._name = name
        self._url = url
        self._timeout_s = timeout_s
        self._fail_open = fail_open
        self._headers = {"authorization": f"Bearer {api_key.reveal()}"} if api_key else {}

    async def judge(self, text: str, stage: Stage, ctx: GuardContext) -> list[Hit]:
        try:
            answer = await self._ask(text, stage, ctx)
            return self._hits(answer, text)
        except (httpx2.HTTPError, ValueError) as exc:
            # The reason, never the text: an error may quote the request.
            log.warning(
                "external guard failed (fail mode %s): %s",
                "open" if self._fail_open else "closed",
                type(exc).__name__,
                extra={"guard": self._name, "url": self._url},
            )
            action = Action.LOG if self._fail_open else Action.BLOCK
            return [Hit(self._name, action, Finding(0, len(text), GUARD_ERROR, "", raw=True))]

    async def _ask(self, text: str, stage: Stage, ctx: GuardContext) -> Any:
        client = ctx.http
        if client is None:
            raise ValueError("no HTTP client for external guards")
        body = {"text": text, "stage": stage.value, "agent": ctx.agent, "guard": self._name}
        timeout = self._timeout_s
        if ctx.deadline is not None:
            timeout = min(timeout, ctx.deadline.remaining())
        if timeout <= 0:
            raise httpx2.TimeoutException("no time left for the external guard")
        response = await client.post(self._url, json=body, headers=self._headers, timeout=timeout)
        if response.status_code != 200:
            raise ValueError(f"HTTP {response.status_code}")
        return response.json()

    def _hits(self, answer: Any, text: str) -> list[Hit]:
        if not isinstance(answer, dict):
            raise ValueError("the answer is not a JSON object")  # noqa: TRY004 (a bad answer)
        action = answer.get("action")
        if action == "allow":
            return []
        if action == "block":
            category = _category(answer.get("category"))
            return [Hit(self._name, Action.BLOCK, Finding(0, len(text), category, "", raw=True))]
        if action == "redact":
            spans = answer.get("spans")
            if not isinstance(spans, list):
                raise ValueError("a redact answer needs spans")
            return [self._span(span, len(text)) for span in spans]
        raise ValueError("unknown action")

    def _span(self, span: Any, length: int) -> Hit:
        if not isinstance(span, dict):
            raise ValueError("a span is not an object")  # noqa: TRY004 (a bad answer)
        start, end = span.get("start"), span.get("end")
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= length):
            raise ValueError("a span is out of the text")
        category = _category(span.get("category"))
        return Hit(
            self._name,
            Action.REDACT,
            Finding(start, end, category, placeholder(category), raw=True),
        )


def _category(value: Any) -> str:
    return value if isinstance(value, str) and _CATEGORY.match(value) else DEFAULT_CATEGORY
