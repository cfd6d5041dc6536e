"""Azure OpenAI: the OpenAI wire format on a deployment URL, with an `api-key` header."""

from __future__ import annotations

from .base import secret_header
from .openai_compatible import OpenAICompatible

DEFAULT_API_VERSION = "2024-10-21"


class AzureOpenAI(OpenAICompatible):
    """POST {base_url}/openai/deployments/{deployment}/chat/completions?api-version=..."""

    name = "azure"

    @property
    def url(self) -> str:
        base = (self.config.base_url or "").rstrip("/")
        deployment = self.config.deployment or self.config.model
        version = self.config.api_version or DEFAULT_API_VERSION
        return f"{base}/openai/deployments/{deployment}/chat/completions?api-version={version}"

    def headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json", **self.config.headers}
        key = secret_header(self.config, self.model_name)
        if key:
            headers["api-key"] = key
        return headers
