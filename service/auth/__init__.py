"""API keys and the auth policy built from config."""

from service.auth.keys import ApiKey, KeyRing, new_key
from service.auth.policy import AuthPolicy, build_auth

__all__ = ["ApiKey", "AuthPolicy", "KeyRing", "build_auth", "new_key"]
