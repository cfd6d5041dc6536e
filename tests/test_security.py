"""Gateway API keys let only their holders in; upstream keys reach the upstream and nowhere else."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest

from stillhouse.config import Secret

from .conftest import make_config


@pytest.fixture
def keyed(tmp_path, upstream, gateway_factory, monkeypatch):
    monkeypatch.setenv("GW_KEY", "sh-gateway-key")
    monkeypatch.setenv("UP_KEY", "sk-upstream-secret")
    config = make_config(tmp_path, upstream[0], gateway={"api_keys": ["env::GW_KEY"]})
    teacher = config.models["teacher"].model_copy(update={"api_key": Secret("env::UP_KEY")})
    return gateway_factory(config.model_copy(update={"models": {"teacher": teacher}}))


def test_wrong_or_missing_key_is_401(keyed) -> None:
    for key in ("wrong", ""):
        c = openai.OpenAI(base_url=keyed.base_url, api_key=key or "x", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            c.chat.completions.create(model="support", messages=[{"role": "user", "content": "x"}])
    r = httpx.get(keyed.base_url + "/models")
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


def test_right_key_gets_in_and_the_upstream_key_is_never_stored(keyed, upstream) -> None:
    c = openai.OpenAI(base_url=keyed.base_url, api_key="sh-gateway-key", max_retries=0)
    c.chat.completions.create(model="support", messages=[{"role": "user", "content": "x"}])
    assert upstream[1].headers[0]["authorization"] == "Bearer sk-upstream-secret"
    keyed.flush()
    db = keyed.config.store.url.removeprefix("sqlite:///")
    files = [Path(db), Path(db + "-wal")]
    raw = b"".join(f.read_bytes() for f in files if f.exists())
    assert b"support" in raw  # the call is there...
    for secret in (b"sk-upstream-secret", b"sh-gateway-key"):
        assert secret not in raw  # ...and the keys are not


def test_a_gateway_key_env_var_that_is_unset_refuses_to_start(
    tmp_path, upstream, monkeypatch
) -> None:
    from stillhouse.errors import ConfigError
    from stillhouse.gateway import create_app

    monkeypatch.delenv("GW_KEY_UNSET", raising=False)
    config = make_config(tmp_path, upstream[0], gateway={"api_keys": ["env::GW_KEY_UNSET"]})
    with pytest.raises(ConfigError, match=r"gateway.api_keys\[0\]"):
        create_app(config)
