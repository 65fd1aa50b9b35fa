"""Server reflection that helps: ``grpc.reflection.v1`` and ``v1alpha``, descriptors with
their comments.

grpcio-reflection answers v1alpha from the default descriptor pool, whose files have no
source info (protoc's Python output drops it), so ``grpcurl describe`` showed no comment.
Here the contract's files come from ``generated/switchboard/v1/descriptors.binpb``, the
descriptor set ``make proto`` writes with ``--include_source_info``; other files (health,
google.protobuf…) come from the pool as before. v1 is the same service under its final name
(grpc/reflection/v1/reflection.proto): its messages are field for field v1alpha's, so the
v1alpha servicer answers both; grpcurl and current clients ask v1 first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2

V1 = "grpc.reflection.v1.ServerReflection"
V1ALPHA = reflection.SERVICE_NAME
DESCRIPTORS = "descriptors.binpb"


def contract_files() -> dict[str, descriptor_pb2.FileDescriptorProto]:
    """The contract's files with source info, by file name (empty if the set is missing)."""
    try:
        data = resources.files("switchboard.v1").joinpath(DESCRIPTORS).read_bytes()
    except (FileNotFoundError, ModuleNotFoundError):
        return {}
    found = descriptor_pb2.FileDescriptorSet.FromString(data)
    return {f.name: f for f in found.file if f.name.startswith("switchboard/")}


class _File:
    """A file descriptor whose ``CopyToProto`` gives the stored proto, comments included."""

    __slots__ = ("_descriptor", "_protos", "name")

    def __init__(
        self, descriptor: Any, protos: Mapping[str, descriptor_pb2.FileDescriptorProto]
    ) -> None:
        self._descriptor = descriptor
        self._protos = protos
        self.name: str = descriptor.name

    @property
    def dependencies(self) -> list[_File]:
        return [_File(d, self._protos) for d in self._descriptor.dependencies]

    def CopyToProto(self, proto: descriptor_pb2.FileDescriptorProto) -> None:  # noqa: N802
        stored = self._protos.get(self.name)
        if stored is None:
            self._descriptor.CopyToProto(proto)
        else:
            proto.CopyFrom(stored)


class SourcePool:
    """The default pool, with the contract's files answered with their source info (the
    part of ``DescriptorPool`` grpcio-reflection uses; anything else is delegated)."""

    def __init__(
        self,
        protos: Mapping[str, descriptor_pb2.FileDescriptorProto],
        pool: descriptor_pool.DescriptorPool | None = None,
    ) -> None:
        self._pool = pool or descriptor_pool.Default()
        self._protos = protos

    def FindFileByName(self, name: str) -> _File:  # noqa: N802
        return _File(self._pool.FindFileByName(name), self._protos)

    def FindFileContainingSymbol(self, symbol: str) -> _File:  # noqa: N802
        """The file declaring ``symbol``; a method (``pkg.Service.Method``), which the pool
        does not index, resolves to its service's file.

        Raises:
            KeyError: no such symbol (reflection answers NOT_FOUND).
        """
        try:
            found = self._pool.FindFileContainingSymbol(symbol)
        except KeyError:
            service, _, method = symbol.rpartition(".")
            try:
                descriptor = self._pool.FindServiceByName(service)
            except KeyError:
                raise KeyError(symbol) from None
            if method not in descriptor.methods_by_name:
                raise KeyError(symbol) from None
            found = descriptor.file
        return _File(found, self._protos)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


def enable(services: Sequence[str], server: grpc.aio.Server) -> None:
    """Serve reflection v1 and v1alpha for ``services`` (both reflection names are added)."""
    names = (*services, V1, V1ALPHA)
    servicer = reflection.aio.ReflectionServicer(  # type: ignore[attr-defined]
        names, pool=SourcePool(contract_files())
    )
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    for name in (V1, V1ALPHA):
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(name, {"ServerReflectionInfo": handler}),)
        )
