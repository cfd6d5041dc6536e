"""The dashboard's routes on the gateway's app: server-rendered HTML, read-only but for the
review page, where a person's verdict is posted as a form.

It must never block the event loop on the database: every page reads the store in a worker
thread (run_in_threadpool) through a connection of its own, opened and closed per page. When the
gateway has API keys, so does the dashboard: a Bearer header, or `?key=` once, which sets an
HttpOnly cookie holding a signed session (never the key itself) that expires after
`gateway.session_max_age` and ends at /logout, and redirects to the page without the key.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import math
import secrets
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote

import jinja2
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from ..config import Config
from ..errors import StillhouseError
from ..pricing_catalog import CATALOG_DATE
from ..store import open_store
from ..store.base import TraceStore
from . import data

T = TypeVar("T")
COOKIE = "stillhouse_session"
MAX_DAYS = 365


def _when(ts: float | None) -> str:
    return "-" if ts is None else dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _money(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"${value:,.{digits}f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(when=_when, money=_money, pct=_pct)
    env.globals["catalog_date"] = CATALOG_DATE
    return env


class Sessions:
    """Signed dashboard sessions: `<expiry>.<nonce>.<signature>`, the signature an HMAC under a
    secret derived from the gateway keys' digests. So the cookie never holds a key, every
    worker of one gateway accepts it, and changing the keys ends every session. Logging out
    revokes the session in this process (and clears the cookie)."""

    def __init__(self, keys: Sequence[bytes], max_age: float) -> None:
        self.secret = hmac.new(b"stillhouse dashboard session", b"".join(keys), "sha256").digest()
        self.max_age = max_age
        self.revoked: set[str] = set()

    def _sign(self, payload: str) -> str:
        return hmac.new(self.secret, payload.encode(), "sha256").hexdigest()

    def new(self, now: float | None = None) -> str:
        payload = f"{int((now or time.time()) + self.max_age)}.{secrets.token_urlsafe(16)}"
        return f"{payload}.{self._sign(payload)}"

    def valid(self, token: str, now: float | None = None) -> bool:
        payload, _, signature = token.rpartition(".")
        expires, _, nonce = payload.partition(".")
        if not (expires.isdigit() and nonce) or nonce in self.revoked:
            return False
        if not hmac.compare_digest(self._sign(payload), signature):
            return False
        return int(expires) > (now or time.time())

    def revoke(self, token: str) -> None:
        if self.valid(token):
            self.revoked.add(token.rpartition(".")[0].partition(".")[2])


def dashboard_routes(config: Config, keys: Sequence[bytes]) -> list[Route]:
    """The dashboard's pages for the gateway's app; `keys`: SHA-256 digests of its API keys."""
    env = _environment()
    url = config.store.url
    sessions = Sessions(keys, config.gateway.session_max_age)

    ready: list[bool] = []

    async def read(fn: Callable[[TraceStore], T]) -> T:
        def run() -> T:
            # Migrate once, for a store no call has reached yet (the writer migrates lazily);
            # after that a page never takes the write lock.
            with open_store(url, migrate=not ready) as store:
                ready.append(True)
                return fn(store)

        return await run_in_threadpool(run)

    def page(name: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = env.get_template(name).render(
            tasks_configured=sorted(config.tasks), keyed=bool(keys), **context
        )
        return HTMLResponse(html, status)

    def allowed(token: str) -> bool:
        given = hashlib.sha256(token.encode()).digest()  # `keys` are the keys' digests
        return any(hmac.compare_digest(given, k) for k in keys)

    def guard(request: Request) -> Response | None:
        """None when the request may see the dashboard, else the response to send instead."""
        if not keys:
            return None
        key = request.query_params.get("key")
        if key is not None:
            if not allowed(key):
                return page("error.html", 401, title="wrong key", message="That key is wrong.")
            query = str(request.url.remove_query_params("key").query)
            target = request.url.path + (f"?{query}" if query else "")
            response = RedirectResponse(target, 303)
            response.set_cookie(
                COOKIE,
                sessions.new(),
                max_age=int(sessions.max_age),
                httponly=True,
                samesite="strict",
                secure=request.url.scheme == "https",
            )
            return response
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and allowed(token.strip()):
            return None
        if sessions.valid(request.cookies.get(COOKIE, "")):
            return None
        return page(
            "error.html",
            401,
            title="API key needed",
            message="This dashboard needs one of the gateway's API keys: open it once as "
            "/?key=YOUR_KEY (you then stay signed in for a while, by an HttpOnly cookie that "
            "does not hold the key) or send Authorization: Bearer YOUR_KEY.",
        )

    def days_of(request: Request) -> float:
        try:
            days = float(request.query_params.get("days", "7"))
        except ValueError:
            days = 7.0
        if math.isnan(days):
            days = 7.0
        return min(max(days, 0.01), MAX_DAYS)

    async def overview(request: Request) -> Response:
        if (denied := guard(request)) is not None:
            return denied
        days = days_of(request)
        doc = await read(lambda s: data.overview(s, config, days))
        return page("overview.html", title="Stillhouse", days=days, **doc)

    async def task(request: Request) -> Response:
        if (denied := guard(request)) is not None:
            return denied
        name = request.path_params["task"]
        if name not in config.tasks:
            return page("error.html", 404, title="no such task", message=f"No task '{name}'.")
        days = days_of(request)
        doc = await read(lambda s: data.task_page(s, config, name, days))
        return page("task.html", title=f"task {name}", days=days, task=doc)

    async def registry(request: Request) -> Response:
        if (denied := guard(request)) is not None:
            return denied
        doc = await read(data.registry)
        return page("registry.html", title="datasets and candidates", **doc)

    async def calls(request: Request) -> Response:
        if (denied := guard(request)) is not None:
            return denied
        q = request.query_params
        filters = {k: q.get(k) or None for k in ("task", "role", "status")}
        try:
            limit = min(max(int(q.get("limit", "100")), 1), 1000)
        except ValueError:
            limit = 100
        found = await read(
            lambda s: data.list_calls(s, filters["task"], filters["role"], filters["status"], limit)
        )
        return page("calls.html", title="calls", found=found, filters=filters, limit=limit)

    async def call(request: Request) -> Response:
        if (denied := guard(request)) is not None:
            return denied
        call_id = request.path_params["call_id"]
        doc = await read(lambda s: data.call_view(s, call_id))
        if doc is None:
            return page("error.html", 404, title="no such call", message=f"No call '{call_id}'.")
        return page("call.html", title=f"call {call_id}", **doc)

    async def review_page(request: Request) -> Response:
        if (denied := guard(request)) is not None:
            return denied
        task = request.query_params.get("task") or None

        found = await read(lambda s: data.review_items(s, config, task))
        done = request.query_params.get("done")
        return page("review.html", title="review", items=found, task=task, done=done)

    async def review_mark(request: Request) -> Response:
        if (denied := guard(request)) is not None:
            return denied
        origin = request.headers.get("origin")
        if origin and origin.split("://")[-1] != request.headers.get("host"):
            return page("error.html", 403, title="refused", message="Cross-site form refused.")
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        verdict = (form.get("verdict") or [""])[0]
        correction = (form.get("correction") or [""])[0].strip() or None
        item_id = request.path_params["item_id"]
        if verdict == "correct" and correction is None:
            return page("error.html", 400, title="no correction", message="Type the answer.")
        if verdict not in ("right", "wrong", "correct"):
            return page("error.html", 400, title="no verdict", message="right, wrong or correct.")
        right = verdict == "right"

        def mark(store: TraceStore) -> str:
            from .. import review

            if right:
                return review.mark(store, item_id, "right", None, "dashboard").status
            return review.mark(store, item_id, "wrong", correction, "dashboard").status

        try:
            status = await read(mark)
        except StillhouseError as err:
            return page("error.html", 400, title="not marked", message=str(err))
        return RedirectResponse(f"/review?done={quote(f'{item_id}: {status}')}", 303)

    async def logout(request: Request) -> Response:
        sessions.revoke(request.cookies.get(COOKIE, ""))
        response = page("error.html", 200, title="signed out", message="Signed out.")
        response.delete_cookie(COOKIE, httponly=True, samesite="strict")
        return response

    return [
        Route("/", overview, methods=["GET"]),
        Route("/logout", logout, methods=["GET", "POST"]),
        Route("/tasks/{task}", task, methods=["GET"]),
        Route("/registry", registry, methods=["GET"]),
        Route("/calls", calls, methods=["GET"]),
        Route("/calls/{call_id}", call, methods=["GET"]),
        Route("/review", review_page, methods=["GET"]),
        Route("/review/{item_id}", review_mark, methods=["POST"]),
    ]
