"""An MCP stdio server's stderr, line by line into our log (logger
``service.tools.mcp.stderr``, with the server's name), instead of the terminal: a server's
tracebacks and warnings then land where operators look, in the same JSON lines.

A pipe whose write end the child inherits; a daemon thread reads the other end until every
writer has closed it (the child exited), so a chatty or stuck server never blocks our event
loop. Lines are cut at :data:`LINE_MAX` characters.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TextIO

log = logging.getLogger("service.tools.mcp.stderr")
LINE_MAX = 2000


class StderrPipe:
    """``writer`` is the file to give the child as its stderr; call :meth:`started` once the
    child runs (closes our copy of the write end, so the reader sees the end)."""

    def __init__(self, server: str) -> None:
        read_fd, write_fd = os.pipe()
        self.writer: TextIO = os.fdopen(write_fd, "w")
        self._reader = threading.Thread(
            target=_pump, args=(read_fd, server), name=f"mcp-stderr-{server}", daemon=True
        )
        self._reader.start()

    def started(self) -> None:
        if not self.writer.closed:
            self.writer.close()


def _pump(read_fd: int, server: str) -> None:
    with os.fdopen(read_fd, "r", errors="replace") as lines:
        for line in lines:
            text = line.rstrip("\n")
            if text:
                log.info("MCP server %s: %s", server, text[:LINE_MAX], extra={"server": server})
