"""Conversation memory: sessions stored per tenant, loaded as history, appended per turn."""

from service.sessions.history import Sessions

__all__ = ["Sessions"]
