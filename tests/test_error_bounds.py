"""Errors that echo input stay within the client's metadata limit, and unexpected errors are
logged once per kind and window (issue 11, section 5)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpc
import pytest
from switchboard.v1 import agent_pb2 as pb
from switchboard_client import AsyncClient, InvalidArgumentError, NotFoundError

from service import errors
from service.api.errors import abort, to_status
from service.api.trailers import MAX_VIOLATIONS
from service.interceptors.chain import Chain
from service.interceptors.faults import FaultLayer
from service.interceptors.observe import ObserveLayer
from service.observability.faults import FaultLog
from tests.harness import serve_config

CONFIG = """
targets:
  m: {provider: mock, model: echo}
agents:
  echo: {route: [m]}
"""


def _trailer_bytes(status: grpc.Status) -> int:
    """What the status costs in trailers as HPACK counts it (name + value + 32 a header)."""
    pairs = [("grpc-message", status.details), *status.trailing_metadata]
    return sum(len(k) + len(v) + 32 for k, v in pairs)


async def test_a_huge_agent_name_is_not_found_at_the_client() -> None:
    name = "a" * 20_000
    async with serve_config(CONFIG) as served:
        with pytest.raises(NotFoundError) as invoked:
            await served.client.invoke(name, "hi")
        assert len(invoked.value.message) < 200
        assert "(20000 characters)" in invoked.value.message
        with pytest.raises(NotFoundError):
            async for _ in served.client.stream(name, "hi"):
                pass
        with pytest.raises(NotFoundError):
            await served.client.get_agent(name)


async def test_three_hundred_role_less_messages_are_invalid_argument_at_the_client() -> None:
    conversation = [pb.Message(content=[pb.ContentPart(text="x")]) for _ in range(300)]
    async with serve_config(CONFIG) as served:
        client: AsyncClient = served.client
        with pytest.raises(InvalidArgumentError) as info:
            await client.invoke("echo", conversation)
    violations = info.value.violations
    assert len(violations) == MAX_VIOLATIONS + 1
    assert violations[0].subject == "messages[0].role"
    assert violations[-1].subject == ""
    assert violations[-1].description == f"{300 - MAX_VIOLATIONS} more violations left out"
    assert "(and 299 more)" in info.value.message


def test_any_violation_list_fits_the_default_metadata_limit() -> None:
    # Worst case: long non-ASCII fields and descriptions (3 bytes a character, percent-encoded
    # to 9 in grpc-message), as many as anyone could send.
    long = "é" * 5000
    many = [errors.FieldViolation(f"messages[{i}].{long}", long) for i in range(1000)]
    status = to_status(errors.InvalidArgument(f"{long}: {long}", many))
    assert _trailer_bytes(status) < 6 * 1024  # room left for ErrorInfo and other trailers


def test_an_unexpected_error_is_logged_once_per_kind_and_window(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [1000.0]
    faults = FaultLog(60.0, clock=lambda: now[0])

    def fail(kind: type[Exception]) -> Exception:
        try:
            raise kind("boom")
        except Exception as exc:
            return exc

    with caplog.at_level(logging.ERROR, "switchboard.faults"):
        assert faults.report(fail(ValueError))
        for _ in range(99):
            assert not faults.report(fail(ValueError))
        assert faults.report(fail(KeyError))  # another kind
        now[0] += 61
        assert faults.report(fail(ValueError))
    records = [r for r in caplog.records if r.name == "switchboard.faults"]
    assert [r.exc_info is not None for r in records] == [True, True, True]
    assert [getattr(r, "suppressed", None) for r in records] == [0, 0, 99]
    assert records[0].error_type == "builtins.ValueError"  # type: ignore[attr-defined]
    assert records[0].where.endswith(
        "test_error_bounds.py:" + str(fail.__code__.co_firstlineno + 2)
    )  # type: ignore[attr-defined]


async def test_a_bug_in_a_servicer_is_internal_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A servicer with a bug behind the real chain layers: whether the bug escapes (grpc
    would say UNKNOWN) or is mapped through abort, the caller gets INTERNAL "internal
    error" and the log one traceback per kind, not one per call."""

    async def escapes(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        return {}["missing"]  # type: ignore[no-any-return]

    async def mapped(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        try:
            return bytes(1 // len(request))
        except Exception as exc:
            await abort(context, exc)
            raise

    async def streams(
        request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> AsyncIterator[bytes]:
        yield b"one"
        raise RuntimeError("mid-stream")

    handlers = grpc.method_handlers_generic_handler(
        "test.Faulty",
        {
            "Escapes": grpc.unary_unary_rpc_method_handler(escapes),
            "Mapped": grpc.unary_unary_rpc_method_handler(mapped),
            "Streams": grpc.unary_stream_rpc_method_handler(streams),
        },
    )
    faults = FaultLog(60.0)
    server = grpc.aio.server(interceptors=[Chain([ObserveLayer([]), FaultLayer(faults)])])
    server.add_generic_rpc_handlers((handlers,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    caplog.set_level(logging.INFO)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            for _ in range(5):
                for method in ("Escapes", "Mapped"):
                    with pytest.raises(grpc.aio.AioRpcError) as info:
                        await channel.unary_unary(f"/test.Faulty/{method}")(b"", timeout=30)
                    assert info.value.code() == grpc.StatusCode.INTERNAL, method
                    assert info.value.details() == "internal error"
                call = channel.unary_stream("/test.Faulty/Streams")(b"", timeout=30)
                assert await call.read() == b"one"
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await call.read()
                assert info.value.code() == grpc.StatusCode.INTERNAL
    finally:
        await server.stop(None)
    tracebacks = [r for r in caplog.records if r.exc_info is not None]
    assert sorted(getattr(r, "error_type", r.name) for r in tracebacks) == [
        "builtins.KeyError",
        "builtins.RuntimeError",
        "builtins.ZeroDivisionError",
    ]
