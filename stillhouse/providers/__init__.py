"""Upstream model clients. Adding a provider means adding one file and one line below."""

from __future__ import annotations

from ..config import ModelConfig
from ..errors import ConfigError
from .base import Chunk, Provider, ResponsesUpstream, SharedSession


def build_provider(name: str, config: ModelConfig, client: SharedSession) -> Provider:
    """The provider for model `name` of stillhouse.toml, sharing `client`."""
    if config.provider == "openai":
        from .openai_compatible import OpenAI

        return OpenAI(name, config, client)
    if config.provider == "openai-compatible":
        from .openai_compatible import OpenAICompatible

        return OpenAICompatible(name, config, client)
    if config.provider == "azure":
        from .azure import AzureOpenAI

        return AzureOpenAI(name, config, client)
    if config.provider == "anthropic":
        from .anthropic import Anthropic

        return Anthropic(name, config, client)
    if config.provider == "local":
        from .local import Local

        return Local(name, config, client)
    raise ConfigError(
        f"models.{name}.provider: '{config.provider}' is not available in the gateway yet"
    )


__all__ = ["Chunk", "Provider", "ResponsesUpstream", "SharedSession", "build_provider"]
