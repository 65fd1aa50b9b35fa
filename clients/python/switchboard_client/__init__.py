"""A typed Python client for Switchboard's AgentService."""

from switchboard_client.client import AsyncClient, Client, EventStream, build_request, user
from switchboard_client.errors import (
    DeadlineExceededError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    SwitchboardError,
    UnauthenticatedError,
    UnavailableError,
    Violation,
)
from switchboard_client.fold import Folder, fold

__all__ = [
    "AsyncClient",
    "Client",
    "DeadlineExceededError",
    "EventStream",
    "FailedPreconditionError",
    "Folder",
    "InternalError",
    "InvalidArgumentError",
    "NotFoundError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "SwitchboardError",
    "UnauthenticatedError",
    "UnavailableError",
    "Violation",
    "build_request",
    "fold",
    "user",
]
