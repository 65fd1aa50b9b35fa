"""Which image URLs a caller may send: ``https:``/``http:`` to a public address, or ``data:``.

The upstream provider fetches an image URL, and some deployments fetch it themselves (to
inline it for a provider that needs bytes). A URL naming a loopback, private, link-local
(the cloud metadata service at 169.254.169.254 among them) or otherwise non-public address
would make that fetch a request forgery into the network the gateway runs in, so it is
refused, as is any other scheme (``file:``, ``ftp:``, ``gopher:``…). Host names are not
resolved here (the answer could change by the time anyone fetches; the fetcher must check
again); names that always mean a local or metadata host are refused. IPv4 literals in the
legacy forms HTTP clients still accept (``2852039166``, ``0xa9.0xfe.0xa9.0xfe``) are read as
``inet_aton`` reads them.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

MAX_URL_CHARS = 8192  # http(s) URLs; a data: URL is bounded by the message size
_LOCAL_NAMES = ("localhost", "metadata", "metadata.google.internal", "instance-data")
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".localdomain")


def url_problem(url: str) -> str | None:
    """What is wrong with ``url`` as an image URL, or None when it may be sent."""
    scheme = url.partition(":")[0].lower()
    if scheme == "data":
        head, comma, _ = url.partition(",")
        if not comma or not head[5:].lower().startswith("image/"):
            return "a data: URL must be data:image/<type>[;base64],<data>"
        return None
    if scheme not in ("http", "https"):
        return "only https:, http: and data: URLs"
    if len(url) > MAX_URL_CHARS:
        return f"at most {MAX_URL_CHARS} characters"
    if any(c.isspace() or not c.isprintable() for c in url):
        return "contains spaces or control characters"
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return "is not a valid URL"
    if not host:
        return "names no host"
    host = host.rstrip(".")
    if host in _LOCAL_NAMES or host.endswith(_LOCAL_SUFFIXES):
        return "names a local or metadata host"
    address = _address(host)
    if address is not None and not _public(address):
        return "points at a loopback, private, link-local or reserved address"
    return None


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if host.replace(".", "").replace("x", "").isalnum() and host[:1].isdigit():
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None and not _public(embedded):
            return False
    return address.is_global and not address.is_multicast
