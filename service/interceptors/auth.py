"""Authentication and tenancy: the API key names the tenant, the key id and the agents the
call may reach; nothing the caller picks in a header can.

Keys come as ``authorization: Bearer <key>`` or ``x-api-key: <key>``, exactly one of them. A
missing or unknown key, or more than one credential, is UNAUTHENTICATED; messages never say
which keys or tenants exist. Methods under the configured exempt prefixes (health;
reflection when open) and every method when auth is off pass untouched. Whether the key may
call the agent a request names is checked where the agent is resolved
(:func:`service.agents.runner.resolve`), from the context bound here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from service import context as call_context
from service.api.errors import abort
from service.auth.keys import ApiKey
from service.auth.policy import AuthPolicy
from service.errors import PermissionDenied, Reason, Unauthenticated
from service.interceptors.base import (
    Context,
    Handler,
    Layer,
    Method,
    StreamBehavior,
    UnaryBehavior,
)

MISSING = "missing API key: send 'authorization: Bearer <key>' or 'x-api-key: <key>'"
MALFORMED = "malformed authorization header: expected 'Bearer <key>'"
INVALID = "invalid API key"
AMBIGUOUS = (
    "send one credential: the call carries more than one ('authorization' and 'x-api-key', "
    "or either header twice); send the key in exactly one of them"
)
_CREDENTIAL_HEADERS = ("authorization", "x-api-key")


def presented_key(context: Context) -> str:
    """The key the caller sent.

    Raises:
        Unauthenticated: no key; more than one credential header (which one is meant is
            not for the server to guess, whatever their values); an authorization header
            of another scheme.
    """
    sent = [
        (name, value)
        for name, value in context.invocation_metadata() or ()
        if name in _CREDENTIAL_HEADERS
    ]
    if len(sent) > 1:
        raise Unauthenticated(AMBIGUOUS, reason=Reason.CREDENTIALS_AMBIGUOUS)
    for name, value in sent:
        if not isinstance(value, str):
            break
        if name == "authorization":
            scheme, _, token = value.strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated(MALFORMED, reason=Reason.CREDENTIALS_MALFORMED)
            return token.strip()
        if value.strip():
            return value.strip()
    raise Unauthenticated(MISSING, reason=Reason.CREDENTIALS_MISSING)


def authenticate(policy: AuthPolicy, context: Context) -> ApiKey:
    """The key record of the call's credentials.

    Raises:
        Unauthenticated: missing, malformed, unknown or revoked key.
    """
    record = policy.keys.verify(presented_key(context))
    if record is None:
        raise Unauthenticated(INVALID, reason=Reason.CREDENTIALS_INVALID)
    return record


def bind_key(record: ApiKey) -> None:
    """Make the key's tenant, id and agents part of the call's context. The context layer,
    which owns the call's scope, restores the previous context when the call ends."""
    current = call_context.current()
    call_context.bind(
        call_context.CallContext(
            request_id=current.request_id,
            tenant=record.tenant,
            key_id=record.id,
            agents=record.agents,
            scopes=record.scopes,
        )
    )


def check_scope(method: str, scope: str | None, record: ApiKey) -> None:
    """Raises PermissionDenied when ``method`` needs a ``scope``
    (:meth:`AuthPolicy.required_scope`) the key lacks."""
    if scope is not None and scope not in record.scopes:
        error = PermissionDenied(
            f"{method.strip('/').partition('/')[0]} needs a key with the {scope!r} scope",
            reason=Reason.SCOPE_MISSING,
        )
        error.metadata["scope"] = scope
        raise error


class AuthLayer(Layer):
    def __init__(
        self,
        policy: Callable[[], AuthPolicy],
        catch_up: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        """``policy``: the keys now (read per call: reloads and the store change it);
        ``catch_up``: awaited before refusing a key, True when ``policy`` may now know it
        (:meth:`service.auth.live.LiveKeys.catch_up`)."""
        super().__init__()
        self._policy = policy
        self._catch_up = catch_up
        self._scopes: dict[str, str | None] = {}  # by method name, made as methods are wrapped

    def wrap(self, method: Method, handler: Handler) -> Handler:
        self._scopes[method.name] = AuthPolicy.required_scope(method.name)
        return super().wrap(method, handler)

    def _scope(self, method: Method) -> str | None:
        try:
            return self._scopes[method.name]
        except KeyError:  # not wrapped here (grpc-interceptor's own per-call entry)
            return AuthPolicy.required_scope(method.name)

    def _admit(self, method: Method, context: Context) -> Unauthenticated | PermissionDenied | None:
        """None when the call may go on (auth off, an exempt method, or its key bound);
        else why not, to be settled by :meth:`_settle`. Synchronous, so that an admitted
        call goes on with no frame of this layer's."""
        policy = self._policy()
        if not policy.enabled or policy.exempt(method.name):
            return None
        try:
            record = authenticate(policy, context)
            check_scope(method.name, self._scope(method), record)
        except (Unauthenticated, PermissionDenied) as exc:
            return exc
        bind_key(record)
        return None

    async def _settle(
        self, method: Method, context: Context, refusal: Unauthenticated | PermissionDenied
    ) -> None:
        """Bind the call's key if a key not known here is known once the keys caught up,
        else end the call UNAUTHENTICATED or PERMISSION_DENIED (a scope the key lacks) by
        raising AbortError."""
        if (
            isinstance(refusal, Unauthenticated)
            and refusal.reason == Reason.CREDENTIALS_INVALID
            and self._catch_up is not None
            and await self._catch_up()
        ):
            policy = self._policy()
            try:
                record = authenticate(policy, context)
                check_scope(method.name, self._scope(method), record)
            except (Unauthenticated, PermissionDenied) as exc:
                refusal = exc
            else:
                bind_key(record)
                return
        await abort(context, refusal)

    def unary(
        self, method: Method, call: UnaryBehavior, request: Any, context: Context
    ) -> Awaitable[Any]:
        refusal = self._admit(method, context)
        if refusal is None:
            return call(request, context)
        return self._settled_unary(method, call, request, context, refusal)

    async def _settled_unary(
        self,
        method: Method,
        call: UnaryBehavior,
        request: Any,
        context: Context,
        refusal: Unauthenticated | PermissionDenied,
    ) -> Any:
        await self._settle(method, context, refusal)
        return await call(request, context)

    def stream(
        self, method: Method, call: StreamBehavior, request: Any, context: Context
    ) -> AsyncIterator[Any]:
        refusal = self._admit(method, context)
        if refusal is None:
            return call(request, context)
        return self._settled_stream(method, call, request, context, refusal)

    async def _settled_stream(
        self,
        method: Method,
        call: StreamBehavior,
        request: Any,
        context: Context,
        refusal: Unauthenticated | PermissionDenied,
    ) -> AsyncIterator[Any]:
        await self._settle(method, context, refusal)
        async for response in call(request, context):
            yield response
