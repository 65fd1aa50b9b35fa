"""The auth policy of one config snapshot: on or off, the key ring, the exempt methods."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from service.auth.keys import KeyRing, parse_keys, read_keys_file
from service.auth.scopes import scope_for

if TYPE_CHECKING:  # service.config imports this module
    from service.config.chain_model import AuthConfig


@dataclass(frozen=True, slots=True)
class AuthPolicy:
    enabled: bool = False
    keys: KeyRing = field(default_factory=KeyRing)
    exempt_prefixes: tuple[str, ...] = ()
    refresh_interval_s: float = 0.5  # how often the state store's keys are re-read

    def exempt(self, method: str) -> bool:
        """True when ``method`` (``/package.Service/Method``) is served without a key."""
        return method.startswith(self.exempt_prefixes)

    @staticmethod
    def required_scope(method: str) -> str | None:
        """The scope a key needs for ``method`` beyond being valid, if any."""
        return scope_for(method)


def keys_path(config: AuthConfig, base_dir: Path) -> Path | None:
    """The keys file, a relative path taken from the config file's folder."""
    return base_dir / config.keys_file if config.keys_file else None


def build_auth(config: AuthConfig, environ: Mapping[str, str], base_dir: Path) -> AuthPolicy:
    """Read the keys the config names (file and/or environment variable).

    Raises:
        ValueError: a keys source is unreadable or invalid, or the variable is unset.
    """
    records = []
    path = keys_path(config, base_dir)
    if path is not None:
        records.extend(read_keys_file(path))
    if config.keys_env:
        text = environ.get(config.keys_env)
        if text is None:
            raise ValueError(f"auth.keys_env: environment variable {config.keys_env} is not set")
        records.extend(parse_keys(text, f"${config.keys_env}"))
    ids = [r.id for r in records]
    if len(ids) != len(set(ids)):
        raise ValueError("auth: a key id appears in both the keys file and the environment")
    return AuthPolicy(
        enabled=config.enabled,
        keys=KeyRing(records),
        exempt_prefixes=config.exempt_prefixes(),
        refresh_interval_s=config.refresh_interval_s,
    )
