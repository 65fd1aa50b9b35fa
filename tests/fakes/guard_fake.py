"""A fake external guard endpoint: answers each POST with the next queued verdict (a JSON
body and status), or hangs (to time the client out)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from tests.fakes.httpserver import Conn, FakeServer, Received


@dataclass(frozen=True)
class Verdict:
    body: Any = None  # default {"action": "allow"}
    status: int = 200
    hang: bool = False


class GuardFake(FakeServer):
    def __init__(self) -> None:
        super().__init__()
        self._queue: deque[Verdict] = deque()

    def push(self, *verdicts: Verdict) -> None:
        self._queue.extend(verdicts)

    async def handle(self, request: Received, conn: Conn) -> bool:
        verdict = self._queue.popleft() if self._queue else Verdict()
        if verdict.hang:
            return await self.hang(conn)
        body = {"action": "allow"} if verdict.body is None else verdict.body
        return await self.reply_json(conn, verdict.status, body, {})
