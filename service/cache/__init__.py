"""The exact-match response cache: keys, stored answers, single-flight and replay."""

from service.cache.keys import cache_key, wanted
from service.cache.responses import ResponseCache

__all__ = ["ResponseCache", "cache_key", "wanted"]
