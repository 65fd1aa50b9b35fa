"""The HTTP doors tell the chain their client's address in grpc's peer form, by family (an
IPv6 client was once labelled ``ipv4:::1:5``)."""

from __future__ import annotations

import pytest

from service.http.door import door_context


@pytest.mark.parametrize(
    ("client", "peer"),
    [
        (("127.0.0.1", 5), "ipv4:127.0.0.1:5"),
        (("::1", 5), "ipv6:[::1]:5"),
        (None, "unix:"),  # unknown: a peer the instrumentation does not parse
    ],
)
def test_a_door_gives_its_clients_address_in_grpcs_peer_form(
    client: tuple[str, int] | None, peer: str
) -> None:
    scope = {"type": "http", "headers": [], "client": client}
    assert door_context(scope).peer() == peer
