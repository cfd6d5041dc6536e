"""What keeps web pages out of a gateway: the Host check, the JSON-only chat route, the headers
every response carries.

A gateway without API keys trusts whoever can reach it, so it must not be reachable by a web page
the operator happens to open: such a page can send "simple" cross-site POSTs (no preflight for
`text/plain`) and, by DNS rebinding, read answers under its own name. It must never let a request
through on a Host it does not serve.
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..config import Config
from ..errors import BadRequest, HTTPError, UnsupportedMediaType

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")

# On every answer: no page may frame the dashboard, no browser may guess a type, and a page can
# only load its own styles (inline, the one <style> block) and post its forms to itself.
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),  # "no-referrer" makes Chromium send `Origin: null`
    (
        b"content-security-policy",
        b"default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
        b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
]


def allowed_hosts(config: Config) -> frozenset[str] | None:
    """The Host names served (lower case, no port); None: any. The default is every name when
    the gateway has keys (a page cannot send them), else loopback names only."""
    hosts = config.gateway.allowed_hosts
    if hosts is None:
        hosts = [] if config.gateway.api_keys else list(LOOPBACK_HOSTS)
        if not hosts:
            return None
    if "*" in hosts:
        return None
    return frozenset(_bare(h) for h in hosts)


def _bare(host: str) -> str:
    """`host` without its port and IPv6 brackets, lower case: `[::1]:8400` -> `::1`."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    if host.count(":") == 1:
        return host.partition(":")[0]
    return host


def host_allowed(host: str, allowed: frozenset[str] | None) -> bool:
    return allowed is None or _bare(host) in allowed


class SecurityMiddleware:
    """Refuses a Host outside `allowed` with an OpenAI-shaped 400 and adds SECURITY_HEADERS to
    every response (pure ASGI: a streamed answer passes through untouched)."""

    def __init__(self, app: ASGIApp, allowed: Iterable[str] | None) -> None:
        self.app = app
        self.allowed = None if allowed is None else frozenset(allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name for name, _ in message.get("headers", [])}
                extra = [(n, v) for n, v in SECURITY_HEADERS if n not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
        if not host_allowed(host, self.allowed):
            err = BadRequest(
                f"Host {host[:100]!r} is not served here: add it to gateway.allowed_hosts "
                "(an open gateway answers only loopback names by default)",
                code="host_not_allowed",
            )
            body = orjson.dumps(err.to_body())
            await send_with_headers(
                {
                    "type": "http.response.start",
                    "status": err.status,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send_with_headers({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send_with_headers)


def require_json(request: Request) -> None:
    """A chat request must say it is JSON. A browser sends `text/plain`, a form type or none
    without asking first (no CORS preflight), so accepting those would let any web page spend
    the teacher's tokens and plant training data through an open gateway."""
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    json_like = media.startswith("application/") and media.endswith("+json")
    if media != "application/json" and not json_like:
        raise UnsupportedMediaType(
            "send the request body as JSON (Content-Type: application/json)",
            code="unsupported_media_type",
        )


def refuse_cross_site(request: Request) -> None:
    """A multipart upload (POST /v1/files) is a form a web page may send cross-site without
    asking, so one that a page sent (its `Origin` is not this gateway) is refused: through an
    open gateway it would store whatever the page likes. API clients send no Origin."""
    origin = request.headers.get("origin")
    if origin is not None and origin.split("://")[-1] != request.headers.get("host"):
        raise HTTPError(
            "a cross-site upload is refused: send the file from an API client, not a web page",
            status=403,
            type="invalid_request_error",
            code="cross_site_refused",
        )
