"""One exception tree for Stillhouse.

    StillhouseError                  every error we raise on purpose
    ├── ConfigError                  stillhouse.toml is missing, malformed or inconsistent
    ├── StoreError                   the trace store cannot be opened or migrated
    ├── AdapterError                 a LoRA adapter is missing, corrupt or does not fit its base
    └── HTTPError                    carries an HTTP status and the OpenAI error shape
        ├── BadRequest               400  malformed body, missing or ill-typed field
        ├── Unauthorized             401  gateway API key missing or wrong
        ├── NotFound                 404  unknown task or route
        ├── RequestTimeout           408  the body did not arrive within gateway.read_timeout
        ├── PayloadTooLarge          413  body over the configured limit
        ├── UnsupportedMediaType     415  a chat request that is not sent as JSON
        └── UpstreamError            the teacher/student upstream failed (its status, or 502/504)

The CLI turns any StillhouseError into a one-line message and a non-zero exit; the gateway turns
an HTTPError into `{"error": {"message", "type", "param", "code"}}` with its status.
"""

from __future__ import annotations

from typing import Any


class StillhouseError(Exception):
    """Base of every error Stillhouse raises on purpose."""


class ConfigError(StillhouseError):
    """The configuration file is missing, malformed or names something that does not exist."""


class StoreError(StillhouseError):
    """The trace store cannot be opened, migrated or read."""


class AdapterError(StillhouseError):
    """A LoRA adapter is missing, corrupt, or was trained for another base model."""


class HTTPError(StillhouseError):
    status: int = 500
    type: str = "server_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type

    def to_body(self) -> dict[str, Any]:
        """The OpenAI error shape."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class BadRequest(HTTPError):
    status = 400
    type = "invalid_request_error"


class Unauthorized(HTTPError):
    status = 401
    type = "authentication_error"


class NotFound(HTTPError):
    status = 404
    type = "invalid_request_error"


class RequestTimeout(HTTPError):
    status = 408
    type = "invalid_request_error"


class PayloadTooLarge(HTTPError):
    status = 413
    type = "invalid_request_error"


class UnsupportedMediaType(HTTPError):
    status = 415
    type = "invalid_request_error"


class UpstreamError(HTTPError):
    """An upstream model failed; `status` is the upstream's own status where it answered."""

    status = 502
    type = "upstream_error"

    def __init__(self, message: str, *, retryable: bool = False, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retryable = retryable
