"""Shared fixtures: a loopback upstream, a config pointing at it, a running gateway, stores."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from stillhouse.config import Config, parse_config
from stillhouse.gateway import create_app
from stillhouse.store import open_store

# Session-wide real tiny models (tests/models.py), for every test module that trains or evaluates.
from .models import tiny_base, trained  # noqa: F401
from .upstream import ServerThread, UpstreamBehaviour, running_upstream

PG_ENV = "STILLHOUSE_TEST_PG_URL"


@pytest.fixture
def upstream() -> Iterator[tuple[str, UpstreamBehaviour]]:
    with running_upstream() as up:
        yield up


def make_config(
    tmp_path: Path, base_url: str, store_url: str | None = None, **extra: Any
) -> Config:
    data: dict[str, Any] = {
        "store": {"url": store_url or "sqlite:///calls.db"},
        "models": {
            "teacher": {
                "provider": "openai-compatible",
                "base_url": base_url,
                "model": "upstream-model",
                "max_retries": 2,
                "timeout": 5,
                "price": {"input_per_mtok": 2.0, "output_per_mtok": 8.0},
            },
        },
        "tasks": {"support": {"teacher": "teacher"}},
    }
    for key, value in extra.items():
        data[key] = {**data.get(key, {}), **value}
    return parse_config(data, tmp_path)


class Gateway:
    """A gateway app served by uvicorn on a loopback port, as a user would run it."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.app = create_app(config)
        self.server = ServerThread(self.app).start()
        self.url = self.server.url

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def flush(self) -> None:
        assert self.app.state.writer.flush(10), "captures did not reach the store"

    def store(self):
        return open_store(self.config.store.url)

    def stop(self) -> None:
        self.server.stop()


def sdk_client(gw: Gateway, **options: Any) -> openai.OpenAI:
    """The official openai SDK pointed at `gw`, without retries (a test sees every failure)."""
    return openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0, **options)


def only_call(gw: Gateway, task: str | None = None) -> Any:
    """The one call `gw` captured (of `task`), once every capture reached the store."""
    gw.flush()
    with gw.store() as store:
        (call,) = store.list_calls(task=task)
    return call


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[Gateway] = []

    def start(config: Config) -> Gateway:
        gw = Gateway(config)
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()


@pytest.fixture
def gateway(
    tmp_path: Path, upstream: tuple[str, UpstreamBehaviour], gateway_factory: Any
) -> Gateway:
    base_url, _ = upstream
    return gateway_factory(make_config(tmp_path, base_url))


def postgres_url() -> str:
    url = os.environ.get(PG_ENV)
    if not url:
        if os.environ.get("CI"):
            pytest.fail(f"{PG_ENV} is not set: CI must run the PostgreSQL tests")
        pytest.skip(f"{PG_ENV} not set (make test starts PostgreSQL and sets it)")
    return url


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test."""
    import psycopg

    admin = postgres_url()
    name = f"sh_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = admin.rpartition("/")
    yield f"{base}/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each store test runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("pg_url")


def start_serve(folder: Path, port: int) -> subprocess.Popen[bytes]:
    """`stillhouse serve` as a user runs it, in `folder` (with its config), once healthy."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stillhouse",
            "serve",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=folder,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline and proc.poll() is None, "gateway did not start"
        time.sleep(0.05)
