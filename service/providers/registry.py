"""Builds one provider per configured target.

A provider's module (and its SDK) is imported when a target first needs it, not when this
module is: the openai and anthropic packages take seconds of CPU to import, and a server
whose targets use neither (or one of them) should not pay for both at every start.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from service.errors import FailedPrecondition
from service.providers.base import Provider, TargetSpec

FACTORIES: Mapping[str, tuple[str, str]] = {
    "mock": ("service.providers.mock", "MockProvider"),
    "openai": ("service.providers.openai_chat", "OpenAIChatProvider"),
    "openai_compatible": ("service.providers.openai_chat", "OpenAIChatProvider"),
    "anthropic": ("service.providers.anthropic_messages", "AnthropicMessagesProvider"),
}
"""Provider kind → (module, class): what builds a target of that kind."""


def build_provider(target: TargetSpec) -> Provider:
    """A provider for ``target``, importing its module on first use.

    Raises:
        FailedPrecondition: no provider of that kind is available in this build.
    """
    where = FACTORIES.get(target.provider)
    if where is None:
        raise FailedPrecondition(
            f"target {target.name!r}: provider {target.provider!r} is not available"
        )
    module, name = where
    factory = getattr(importlib.import_module(module), name)
    provider: Provider = factory(target)
    return provider
