"""Azure OpenAI: the OpenAI wire format on a deployment URL, with an `api-key` header; the
Responses API on its v1 surface, where the deployment is the body's `model`."""

from __future__ import annotations

from typing import Any

from .base import secret_header
from .openai_compatible import OpenAI

DEFAULT_API_VERSION = "2024-10-21"


class AzureOpenAI(OpenAI):
    """POST {base_url}/openai/deployments/{deployment}/chat/completions?api-version=..., and
    POST {base_url}/openai/v1/responses (its v1 surface: no api-version, the deployment is
    named in the body)."""

    name = "azure"

    @property
    def url(self) -> str:
        base = (self.config.base_url or "").rstrip("/")
        deployment = self.config.deployment or self.config.model
        version = self.config.api_version or DEFAULT_API_VERSION
        return f"{base}/openai/deployments/{deployment}/chat/completions?api-version={version}"

    @property
    def responses_url(self) -> str:
        return (self.config.base_url or "").rstrip("/") + "/openai/v1/responses"

    def responses_body(self, body: dict[str, Any]) -> dict[str, Any]:
        return {**body, "model": self.config.deployment or self.config.model}

    def headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json", **self.config.headers}
        key = secret_header(self.config, self.model_name)
        if key:
            headers["api-key"] = key
        return headers
