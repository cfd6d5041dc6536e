"""The OpenAI-compatible gateway: one ASGI app per `create_app(config)`."""

from .app import create_app

__all__ = ["create_app"]
