"""Provider adapters, picked by an upstream's ``api`` setting."""

from cg_proxy.providers.anthropic import AnthropicMessages
from cg_proxy.providers.base import Adapter, BufferedResponse, ProviderRequest, UpstreamResponse, provider_error
from cg_proxy.providers.openai_compat import OpenAICompatible

ADAPTERS: dict[str, Adapter] = {"openai": OpenAICompatible(), "anthropic": AnthropicMessages()}


def adapter_for(api: str) -> Adapter:
    return ADAPTERS[api]


__all__ = [
    "ADAPTERS",
    "Adapter",
    "AnthropicMessages",
    "BufferedResponse",
    "OpenAICompatible",
    "ProviderRequest",
    "UpstreamResponse",
    "adapter_for",
    "provider_error",
]
