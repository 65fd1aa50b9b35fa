"""Typed configuration: the file's schema, loading with env overrides, snapshots."""

from service.config.load import ConfigError, Snapshot, load
from service.config.model import Config

__all__ = ["Config", "ConfigError", "Snapshot", "load"]
