"""The installed package's version (``pyproject.toml``'s ``project.version``)."""

from __future__ import annotations

from importlib import metadata


def package_version() -> str:
    """The installed version of the ``switchboard`` distribution, or "unknown" when the
    sources run without being installed."""
    try:
        return metadata.version("switchboard")
    except metadata.PackageNotFoundError:
        return "unknown"
