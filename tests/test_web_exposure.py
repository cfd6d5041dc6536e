"""What a web page, a stalled client or a curious caller can get out of a running gateway: the
probe's requests, sent as a browser or a client would send them, against real servers on loopback.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx
import openai
import pytest

from stillhouse.config import Secret
from stillhouse.dashboard.app import Sessions
from stillhouse.gateway.app import key_digest
from stillhouse.store.records import Call, new_id

from .conftest import make_config, start_serve
from .upstream import free_port

CHAT = {"model": "support", "messages": [{"role": "user", "content": "spend my tokens"}]}
CARD = "4111 1111 1111 1111"  # passes Luhn, as a real one does
EMAIL = "jane.doe@example.com"


# -- cross-site requests and DNS rebinding on a gateway without keys -----------------------------
def test_a_cross_site_simple_post_is_refused_before_the_upstream(gateway, upstream) -> None:
    """A page can POST `text/plain` (or a form type, or no type) cross-site without a CORS
    preflight: an open gateway that took it spent teacher tokens and stored training data."""
    import orjson

    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {"content-type": content_type} if content_type else {}
        r = httpx.post(
            gateway.base_url + "/chat/completions", content=orjson.dumps(CHAT), headers=headers
        )
        assert r.status_code == 415, (content_type, r.text)
        assert r.json()["error"]["code"] == "unsupported_media_type"
    assert upstream[1].requests == []
    ok = httpx.post(
        gateway.base_url + "/chat/completions",
        content=orjson.dumps(CHAT),
        headers={"content-type": "application/json; charset=utf-8"},
    )
    assert ok.status_code == 200
    gateway.flush()
    with gateway.store() as store:
        assert len(store.list_calls()) == 1  # only the JSON one


def test_an_open_gateway_answers_only_loopback_host_names(gateway) -> None:
    """DNS rebinding: a page under evil.example re-pointed at 127.0.0.1 reaches the gateway with
    `Host: evil.example`, and could read the dashboard as its own origin."""
    port = gateway.url.rsplit(":", 1)[1]
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.nip.io"):
        for path in ("/", "/calls", "/v1/models", "/healthz"):
            r = httpx.get(gateway.url + path, headers={"host": host})
            assert r.status_code == 400, (host, path)
            assert r.json()["error"]["code"] == "host_not_allowed"
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "LOCALHOST", f"[::1]:{port}"):
        assert httpx.get(gateway.url + "/", headers={"host": host}).status_code == 200, host


def test_allowed_hosts_can_be_named_and_keys_lift_the_loopback_default(
    tmp_path, upstream, gateway_factory, monkeypatch
) -> None:
    named = gateway_factory(
        make_config(tmp_path, upstream[0], gateway={"allowed_hosts": ["gw.internal"]})
    )
    assert httpx.get(named.url + "/healthz", headers={"host": "gw.internal"}).status_code == 200
    assert httpx.get(named.url + "/healthz").status_code == 400  # 127.0.0.1 no longer listed
    monkeypatch.setenv("GW_KEY", "sh-gateway-key")
    keyed = gateway_factory(
        make_config(tmp_path / "k", upstream[0], gateway={"api_keys": ["env::GW_KEY"]})
    )
    r = httpx.get(keyed.url + "/healthz", headers={"host": "gateway.example.com"})
    assert r.status_code == 200  # a page cannot send the key: any name may serve


# -- what every answer carries, and what the key guards -----------------------------------------
def test_every_answer_carries_the_security_headers(gateway) -> None:
    c = openai.OpenAI(base_url=gateway.base_url, api_key="x", max_retries=0)
    api = c.chat.completions.with_raw_response.create(**CHAT)
    for headers in (
        api.headers,
        httpx.get(gateway.url + "/").headers,
        httpx.get(gateway.url + "/nope").headers,
        httpx.get(gateway.url + "/healthz", headers={"host": "evil.example"}).headers,
    ):
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert "default-src 'none'" in headers["content-security-policy"]


@pytest.fixture
def keyed(tmp_path, upstream, gateway_factory, monkeypatch):
    monkeypatch.setenv("GW_KEY", "sh-gateway-key")
    config = make_config(tmp_path, upstream[0], gateway={"api_keys": ["env::GW_KEY"]})
    return gateway_factory(config)


def test_the_openapi_description_is_behind_the_key_like_the_task_list(keyed) -> None:
    r = httpx.get(keyed.url + "/openapi.json")
    assert r.status_code == 401 and "support" not in r.text
    auth = {"authorization": "Bearer sh-gateway-key"}
    assert "support" in httpx.get(keyed.url + "/openapi.json", headers=auth).text


def test_the_dashboard_session_is_signed_expires_and_ends_at_logout(keyed) -> None:
    with httpx.Client(base_url=keyed.url) as http:
        first = http.get("/", params={"key": "sh-gateway-key"})
        assert first.status_code == 303
        cookie = first.headers["set-cookie"]
        assert "sh-gateway-key" not in cookie  # the cookie used to be the key itself
        assert "Max-Age=43200" in cookie and "HttpOnly" in cookie
        session = http.cookies["stillhouse_session"]
        assert http.get("/calls").status_code == 200
        forged = session[:-1] + ("0" if session[-1] != "0" else "1")
        for value in (forged, "sh-gateway-key", f"9999999999.x.{'0' * 64}"):
            r = httpx.get(keyed.url + "/calls", cookies={"stillhouse_session": value})
            assert r.status_code == 401, value
        out = http.post("/logout")
        assert out.status_code == 200 and 'stillhouse_session=""' in out.headers["set-cookie"]
        r = httpx.get(keyed.url + "/calls", cookies={"stillhouse_session": session})
        assert r.status_code == 401  # the old session was revoked, not only forgotten
    sessions = Sessions([key_digest("sh-gateway-key")], max_age=60)
    old = sessions.new(now=time.time() - 61)
    assert not sessions.valid(old) and sessions.valid(sessions.new())
    other_keys = Sessions([key_digest("another-key")], max_age=60)
    assert not other_keys.valid(sessions.new())  # new keys end every session


# -- PII on the dashboard -----------------------------------------------------------------------
def test_review_and_call_pages_show_no_pii(tmp_path, upstream, gateway_factory) -> None:
    """/review rendered captured messages raw, and /calls/<id>'s fields table showed the
    session key (often the caller's email, from `user`) and the error raw."""
    config = make_config(
        tmp_path, upstream[0], tasks={"support": {"teacher": "teacher", "review": {"rate": 1.0}}}
    )
    gw = gateway_factory(config)
    upstream[1].fail(400, message=f"content refused: it holds the card {CARD}")
    c = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(
            model="support", user=EMAIL, messages=[{"role": "user", "content": f"pay {CARD}"}]
        )
    student = Call(
        id=new_id("call"),
        task="support",
        role="student",
        request={"messages": [{"role": "user", "content": f"I am {EMAIL}, card {CARD}"}]},
        response={"choices": [{"message": {"role": "assistant", "content": f"Mailed {EMAIL}"}}]},
    )
    gw.flush()
    with gw.store() as store:
        store.insert_calls([student])
        (failed,) = [call for call in store.list_calls() if call.role == "teacher"]
    assert failed.session_key == EMAIL and CARD in (failed.error or "")  # stored as it came
    review = httpx.get(gw.url + "/review")
    assert review.status_code == 200 and student.id in review.text
    page = httpx.get(gw.url + f"/calls/{failed.id}")
    assert page.status_code == 200
    for html in (review.text, page.text):
        assert EMAIL not in html and CARD not in html
        assert "[EMAIL]" in html and "[CARD]" in html


# -- clients that hold a connection ---------------------------------------------------------------
def _stalled_body(url: str) -> socket.socket:
    """A client that announces a body and sends only part of it."""
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)))
    s.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"model": '
    )
    return s


def test_a_stalled_body_gets_a_408_and_its_connection_back(
    tmp_path, upstream, gateway_factory
) -> None:
    gw = gateway_factory(make_config(tmp_path, upstream[0], gateway={"read_timeout": 1}))
    started = time.monotonic()
    with _stalled_body(gw.url) as s:
        s.settimeout(10)
        reply = s.recv(4096)
    assert reply.startswith(b"HTTP/1.1 408"), reply
    assert b'"code":"body_timeout"' in reply
    assert time.monotonic() - started < 5


def test_serve_refuses_connections_past_its_limit(tmp_path: Path, upstream) -> None:
    (tmp_path / "stillhouse.toml").write_text(
        '[gateway]\nmax_connections = 2\n[store]\nurl = "sqlite:///calls.db"\n'
        f'[models.t]\nprovider = "openai-compatible"\nbase_url = "{upstream[0]}"\n'
        'model = "m"\n[tasks.support]\nteacher = "t"\n'
    )
    port = free_port()
    proc = start_serve(tmp_path, port)
    held = []
    try:
        url = f"http://127.0.0.1:{port}"
        held = [_stalled_body(url) for _ in range(2)]
        time.sleep(0.5)
        r = httpx.get(url + "/healthz")
        assert r.status_code == 503
    finally:
        for s in held:
            s.close()
        proc.terminate()
        proc.wait(10)


def test_an_open_gateway_keeps_its_secret_defaults(tmp_path) -> None:
    """The starter has no keys: its defaults are the safe ones."""
    from stillhouse.gateway.security import allowed_hosts

    config = make_config(tmp_path, "http://127.0.0.1:9/v1")
    assert allowed_hosts(config) == {"localhost", "127.0.0.1", "::1"}
    keyed = config.model_copy(
        update={"gateway": config.gateway.model_copy(update={"api_keys": [Secret("k" * 12)]})}
    )
    assert allowed_hosts(keyed) is None
