"""Stillhouse: distil an LLM application's production traffic into a small student model."""

from .config import Config, load_config
from .errors import (
    BadRequest,
    ConfigError,
    HTTPError,
    NotFound,
    StillhouseError,
    StoreError,
    UpstreamError,
)
from .gateway import create_app
from .store import TraceStore, open_store

__version__ = "0.1.0"

__all__ = [
    "BadRequest",
    "Config",
    "ConfigError",
    "HTTPError",
    "NotFound",
    "StillhouseError",
    "StoreError",
    "TraceStore",
    "UpstreamError",
    "create_app",
    "load_config",
    "open_store",
]
