"""The metrics port as ``observability.metrics`` binds it: prometheus_client's own HTTP server
(``start_http_server``) on IPv4 and IPv6 addresses, the exposition format, no access log, and
the port released on stop."""

from __future__ import annotations

import socket

import httpx2
import pytest

from tests.harness import serve_config

CONFIG = """
observability:
  metrics: {{host: "{host}", port: 9464}}
targets: {{mock: {{provider: mock, model: echo}}}}
agents: {{echo: {{route: [mock]}}}}
"""


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.parametrize(
    ("host", "url_host"),
    [
        ("127.0.0.1", "127.0.0.1"),
        pytest.param(
            "::1",
            "[::1]",
            marks=pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback here"),
        ),
    ],
)
async def test_metrics_are_served_on_the_configured_address_and_released_on_stop(
    host: str, url_host: str, capfd: pytest.CaptureFixture[str]
) -> None:
    async with serve_config(CONFIG.format(host=host)) as served:
        await served.client.invoke("echo", "hello")
        port = served.app.metrics_port
        assert port
        async with httpx2.AsyncClient(timeout=10) as http:
            answer = await http.get(f"http://{url_host}:{port}/metrics")
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/plain; version=")
        assert 'switchboard_calls_total{agent="echo"' in answer.text
    # No access log line per scrape (prometheus_client's handler is silent).
    assert "GET /metrics" not in capfd.readouterr().err
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as again:
        # SO_REUSEADDR, as a server binds: past the scrape's TIME_WAIT, but never beside a
        # socket still listening. Stopped, the port is free again.
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind((host, port))
