"""The gRPC door's first-event timer: HTTP/2 frames on a raw socket, no gRPC library (used by
bench/peers.py and bench/bench.py).
"""

from __future__ import annotations

import socket
import struct
import time

from switchboard.v1 import agent_pb2 as pb


class _Gone(Exception):
    """The server closed the connection, or went away before taking the stream."""


class GrpcFirstEvent:
    """Times a gRPC Stream's first text delta with a client as light as
    :func:`first_http_event`'s, which times the HTTP doors, the peers and the upstream itself:
    HTTP/2 frames written and read on one blocking socket (kept open, as a gRPC channel keeps
    its connection; opened anew after the server's GOAWAY, as when
    ``transport.max_connection_age_s`` is up), no gRPC library.

    grpc's synchronous Python client hands every event between its C core's thread and the
    caller's: on a quiet machine (the first-event goal's condition) those wake-ups cost
    0.2-0.35 ms of its own per first event through Switchboard (+1.09 against +0.75 ms over
    the upstream, 6 alternated rounds), counted as the gateway's; under load they mostly
    overlap the server's work (docs/benchmarks.md, "The gRPC door's first event"). They show
    in full against a server that answers at once: bench/bare_server.py took 0.45 ms to the
    first text delta through grpc's client, 0.24 through this, so bench/bench.py's figure for
    Switchboard over the bare server came out ~0.08 ms too small through grpc's client.

    Frames by hand rather than through h2 (python-hyper's HTTP/2 state machine): its
    pure-Python work per frame would be timed as the gateway's, as grpc's thread hand-offs
    were, and the client needs only the few frames RFC 9113 section 6 defines below.
    """

    PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0, 1, 3, 4, 6, 7, 8
    END_STREAM = ACK = 0x1
    END_HEADERS = 0x4
    MAX_WINDOW = 2**31 - 1

    def __init__(self, port: int, path: str) -> None:
        self._port = port
        # HPACK (RFC 7541): static-table entries (:method POST 3, :scheme http 6) and literal
        # values without indexing, so nothing depends on a dynamic table.
        self._headers = b"\x83\x86" + b"".join(
            self._literal(index, value)
            for index, value in ((4, path), (1, f"127.0.0.1:{port}"), (31, "application/grpc"))
        )
        self._headers += b"\x00\x02te\x08trailers"
        self._sock: socket.socket | None = None
        self._stream = 1
        self._buffer = b""
        self._going = False  # the server sent GOAWAY: a new connection for the next stream

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self._port), timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Windows as large as HTTP/2 allows, so flow control never holds the server back.
        initial_window = struct.pack(">HI", 0x4, self.MAX_WINDOW)
        more = struct.pack(">I", self.MAX_WINDOW - 65_535)
        sock.sendall(
            self.PREFACE
            + self._frame(self.SETTINGS, 0, 0, initial_window)
            + self._frame(self.WINDOW_UPDATE, 0, 0, more)
        )
        self._sock, self._stream, self._buffer, self._going = sock, 1, b"", False
        return sock

    @staticmethod
    def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
        head = struct.pack(">I", len(payload))[1:] + bytes((kind, flags))
        return head + struct.pack(">I", stream) + payload

    @staticmethod
    def _literal(name_index: int, value: str) -> bytes:
        raw = value.encode()
        assert len(raw) < 127, value  # one-byte length
        name = bytes((name_index,)) if name_index < 15 else bytes((15, name_index - 15))
        return name + bytes((len(raw),)) + raw

    def _read_frame(self, sock: socket.socket) -> tuple[int, int, int, bytes]:
        while len(self._buffer) < 9 or len(self._buffer) < 9 + int.from_bytes(
            self._buffer[:3], "big"
        ):
            data = sock.recv(65536)
            if not data:
                raise _Gone
            self._buffer += data
        size = int.from_bytes(self._buffer[:3], "big")
        kind, flags = self._buffer[3], self._buffer[4]
        stream = int.from_bytes(self._buffer[5:9], "big") & 0x7FFF_FFFF
        payload, self._buffer = self._buffer[9 : 9 + size], self._buffer[9 + size :]
        return kind, flags, stream, payload

    def first_event(self, request: bytes) -> float:
        """Seconds from sending ``request`` (a serialized StreamRequest) to the first
        StreamResponse with a text delta; the rest of the stream is read to its end. A
        stream the server did not take (it closed the connection, or went away first, as
        when the connection sat idle through other gateways' runs) is sent once more on a
        new connection."""
        for _ in range(2):
            try:
                return self._timed(request)
            except (_Gone, ConnectionError):  # e.g. closed while idle between a run's phases
                self.close()
        raise RuntimeError("the gRPC server closed two connections in a row")

    def _timed(self, request: bytes) -> float:
        sock = self._sock if self._sock is not None and not self._going else self._connect()
        stream, self._stream = self._stream, self._stream + 2
        message = b"\x00" + struct.pack(">I", len(request)) + request
        took, received, pending = 0.0, 0, b""
        began = time.perf_counter()
        sock.sendall(
            self._frame(self.HEADERS, self.END_HEADERS, stream, self._headers)
            + self._frame(self.DATA, self.END_STREAM, stream, message)
        )
        while True:
            kind, flags, on, payload = self._read_frame(sock)
            if kind == self.SETTINGS and not flags & self.ACK:
                sock.sendall(self._frame(self.SETTINGS, self.ACK, 0))
            elif kind == self.PING and not flags & self.ACK:
                sock.sendall(self._frame(self.PING, self.ACK, 0, payload))
            elif kind == self.GOAWAY:
                self._going = True
                if stream > int.from_bytes(payload[:4], "big") & 0x7FFF_FFFF:
                    raise _Gone  # not taken: the caller sends it again
            elif on == stream and kind == self.RST_STREAM:
                raise RuntimeError(f"the gRPC server reset the stream: {payload!r}")
            elif on == stream and kind == self.DATA:
                received += len(payload)
                pending += payload
                while len(pending) >= 5 + (size := int.from_bytes(pending[1:5], "big")):
                    event, pending = pending[5 : 5 + size], pending[5 + size :]
                    if not took and pb.StreamResponse.FromString(event).HasField("text_delta"):
                        took = time.perf_counter() - began
            if on == stream and kind in {self.DATA, self.HEADERS} and flags & self.END_STREAM:
                break  # the trailers (or, after an error, trailers only)
        if received:
            sock.sendall(self._frame(self.WINDOW_UPDATE, 0, 0, struct.pack(">I", received)))
        if not took:
            raise RuntimeError("the stream ended without a text delta")
        return took

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
