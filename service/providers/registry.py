"""Builds one provider per configured target."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from service.errors import FailedPrecondition
from service.providers.anthropic_messages import AnthropicMessagesProvider
from service.providers.base import Provider, TargetSpec
from service.providers.mock import MockProvider
from service.providers.openai_chat import OpenAIChatProvider

ProviderFactory = Callable[[TargetSpec], Provider]

FACTORIES: Mapping[str, ProviderFactory] = {
    "mock": MockProvider,
    "openai": OpenAIChatProvider,
    "openai_compatible": OpenAIChatProvider,
    "anthropic": AnthropicMessagesProvider,
}


def build_provider(target: TargetSpec) -> Provider:
    """A provider for ``target``.

    Raises:
        FailedPrecondition: no provider of that kind is available in this build.
    """
    factory = FACTORIES.get(target.provider)
    if factory is None:
        raise FailedPrecondition(
            f"target {target.name!r}: provider {target.provider!r} is not available"
        )
    return factory(target)
