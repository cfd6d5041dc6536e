"""The dashboard in a real headless Chromium (Debian's), after real traffic through the gateway.

Every page must load without console errors and draw its charts with data; a screenshot of each
page is written to test-artifacts/dashboard/ (or $STILLHOUSE_TEST_ARTIFACTS) to look at.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from stillhouse.gateway import create_app
from stillhouse.routing import RoutingTable, TaskRoute
from stillhouse.store import open_store

from .conftest import make_config
from .upstream import ServerThread

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(
    os.environ.get("STILLHOUSE_TEST_ARTIFACTS")
    or Path(__file__).resolve().parent.parent / "test-artifacts"
)
# As the machines here need them: no sandbox as root, and no background traffic to Google.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str:
    path = shutil.which("chromium") or (CHROMIUM if Path(CHROMIUM).exists() else None)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: make test installs it (scripts/test-chromium.sh)")
        pytest.skip("chromium not installed (scripts/test-chromium.sh installs it)")
    return path


def _config(tmp_path: Path, base_url: str, **extra: Any):
    student = {
        "provider": "openai-compatible",
        "base_url": base_url,
        "model": "student-model",
        "price": {"gpu_hour": 2.5, "tokens_per_second": 1500},
    }
    teacher = {"provider": "openai-compatible", "base_url": base_url, "model": "gpt-4.1"}
    return make_config(
        tmp_path,
        base_url,
        models={"teacher": teacher, "student": student},
        tasks={
            "support": {
                "teacher": "teacher",
                "student": "student",
                "routing": {"shadow_rate": 0.5},
            },
            "billing": {"teacher": "teacher"},
        },
        **extra,
    )


class Served:
    def __init__(self, config, routing: RoutingTable) -> None:
        self.config = config
        self.app = create_app(config, routing=routing)
        self.server = ServerThread(self.app).start()
        self.url = self.server.url

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture
def served(tmp_path: Path, upstream) -> Iterator[Served]:
    base_url, _ = upstream
    routing = RoutingTable({"support": TaskRoute(state="rollout", share=0.5)})
    gw = Served(_config(tmp_path, base_url), routing)
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
    for i in range(40):
        task = "billing" if i % 5 == 0 else "support"
        messages = [{"role": "user", "content": f"question {i}: where is parcel {i}"}]
        if i == 3:
            messages[0]["content"] = "my email is jane.doe@example.com, where is my parcel"
        if i % 4 == 0:
            for _ in client.chat.completions.create(
                model=task, messages=messages, user=f"user-{i}", stream=True
            ):
                pass
        else:
            client.chat.completions.create(model=task, messages=messages, user=f"user-{i}")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the shadow comparisons run after the answers
        assert gw.app.state.writer.flush(10)
        with open_store(gw.config.store.url) as store:
            if store.scores_for_task("support"):
                break
        time.sleep(0.1)
    yield gw
    gw.stop()


def test_every_page_loads_in_chromium_with_its_charts_drawn(served: Served) -> None:
    from playwright.sync_api import sync_playwright

    out = ARTIFACTS / "dashboard"
    out.mkdir(parents=True, exist_ok=True)
    with open_store(served.config.store.url) as store:
        calls = store.list_calls(limit=1000)
    pii_call = next(c for c in calls if "jane.doe" in str(c.request))
    assert {c.role for c in calls} == {"teacher", "student"}

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))

        def visit(path: str, name: str) -> None:
            response = page.goto(served.url + path)
            assert response is not None and response.status == 200, path
            page.screenshot(path=str(out / f"{name}.png"), full_page=True)
            assert errors == [], f"{path}: {errors}"

        visit("/", "overview")
        assert page.locator("#tasks tr").count() == 3  # header + support + billing
        assert page.locator("#traffic svg.chart rect.bar").count() > 0
        assert page.locator("#latency svg.chart rect.bar").count() == 4  # 2 models x p50/p95
        assert "grace" in page.locator("#tasks").inner_text() or "rollout" in page.inner_text(
            "#tasks"
        )

        visit("/tasks/support", "task-support")
        assert page.locator("#traffic rect.bar").count() > 0
        assert page.locator("#quality svg.chart circle.point").count() > 0
        assert page.locator("#cost svg.chart circle.point").count() > 0
        assert page.locator("#latency rect.bar").count() == 4
        legend = page.locator("#traffic").inner_text()
        assert "student" in legend and "teacher" in legend

        visit("/tasks/billing", "task-billing")
        assert "No student answers yet" in page.locator("#quality").inner_text()
        assert page.locator("#traffic rect.bar").count() > 0

        visit("/registry", "registry")
        assert "No datasets yet" in page.locator("#datasets").inner_text()
        assert "No candidates yet" in page.locator("#candidates").inner_text()

        visit("/calls", "calls")
        assert page.locator("tr.call").count() == len(calls)
        visit("/calls?task=support&role=student", "calls-student")
        roles = page.locator("tr.call td:nth-child(4)").all_inner_texts()
        assert roles and set(roles) == {"student"}
        page.select_option("select[name=role]", "teacher")
        page.click("form.filters button")
        page.wait_for_url("**role=teacher**")
        assert set(page.locator("tr.call td:nth-child(4)").all_inner_texts()) == {"teacher"}

        visit(f"/calls/{pii_call.id}", "call")
        request_text = page.locator("#request").inner_text()
        assert "[EMAIL]" in request_text and "jane.doe" not in page.content()
        assert "where is my parcel" in request_text
        assert errors == []
        browser.close()
    pages = ["overview", "task-support", "task-billing", "registry", "calls", "calls-student"]
    assert sorted(f.name for f in out.glob("*.png")) == sorted(f"{n}.png" for n in [*pages, "call"])


def test_dashboard_needs_the_gateway_key_when_there_is_one(tmp_path: Path, upstream) -> None:
    base_url, _ = upstream
    gw = Served(_config(tmp_path, base_url, gateway={"api_keys": ["s3cret"]}), RoutingTable())
    try:
        with httpx.Client(base_url=gw.url, follow_redirects=True) as http:
            assert http.get("/").status_code == 401
            assert "?key=" in http.get("/calls").text
            assert http.get("/", params={"key": "wrong"}).status_code == 401
            ok = http.get("/", headers={"Authorization": "Bearer s3cret"})
            assert ok.status_code == 200 and "Overview" in ok.text
            # ?key= once: a redirect that drops the key from the address and sets the cookie
            first = http.get("/calls", params={"key": "s3cret", "task": "support"})
            assert first.status_code == 200 and str(first.url).endswith("/calls?task=support")
            cookie = first.history[0].headers["set-cookie"]
            assert "HttpOnly" in cookie and "SameSite=strict" in cookie
            assert http.get("/tasks/support").status_code == 200  # the cookie is enough now
        with httpx.Client(base_url=gw.url) as other:
            assert other.get("/tasks/support").status_code == 401
            # the API itself is unchanged: JSON errors in the OpenAI shape
            assert other.get("/v1/models").json()["error"]["code"] == "invalid_api_key"
            assert other.get("/nope").json()["error"]["code"] == "unknown_url"
    finally:
        gw.stop()


def test_unknown_task_and_call_are_404_pages(served: Served) -> None:
    with httpx.Client(base_url=served.url) as http:
        assert http.get("/tasks/nope").status_code == 404
        assert http.get("/calls/call_nope").status_code == 404
        assert http.get("/?days=bogus").status_code == 200
