"""Gateway API keys let only their holders in; upstream keys reach the upstream and nowhere else."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

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


UPSTREAM_KEY = "sk-upstream-secret-4242"


@pytest.fixture
def keyed_on(tmp_path, upstream, gateway_factory, monkeypatch, store_url):
    """A keyed gateway on SQLite and on PostgreSQL, logging everything at DEBUG to a file."""
    import logging

    monkeypatch.setenv("GW_KEY", "sh-gateway-key")
    monkeypatch.setenv("UP_KEY", UPSTREAM_KEY)
    config = make_config(
        tmp_path, upstream[0], store_url=store_url, gateway={"api_keys": ["env::GW_KEY"]}
    )
    teacher = config.models["teacher"].model_copy(update={"api_key": Secret("env::UP_KEY")})
    log_file = tmp_path / "all.log"
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield gateway_factory(config.model_copy(update={"models": {"teacher": teacher}})), log_file
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()


def _everything_stored(gw) -> bytes:
    """Every byte the store holds: the SQLite files, or every row of every table as text."""
    url = gw.config.store.url
    if url.startswith("sqlite:///"):
        db = url.removeprefix("sqlite:///")
        return b"".join(Path(p).read_bytes() for p in (db, db + "-wal") if Path(p).exists())
    import psycopg

    out = []
    with psycopg.connect(url) as conn:
        tables = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
        for (table,) in tables:
            for (row,) in conn.execute(f'SELECT t::text FROM "{table}" t'):
                out.append(row.encode())
    return b"\n".join(out)


def _everything_seen(gw, log_file: Path, answers: list[bytes], n_calls: int) -> bytes:
    """Every byte Stillhouse keeps or shows about the calls: the answers the client got, the
    journal, the store, every page (the dashboard's included), the log, `calls --json`."""
    seen = list(answers)
    gw.flush()
    journal = Path(gw.config.store.journal_dir)
    seen += [p.read_bytes() for p in journal.glob("*")]
    seen.append(_everything_stored(gw))
    auth = {"authorization": "Bearer sh-gateway-key"}
    with gw.store() as store:
        ids = [call.id for call in store.list_calls()]
    assert len(ids) == n_calls
    pages = ["/", "/tasks/support", "/calls", "/registry", "/metrics", "/healthz", "/review"]
    pages += ["/openapi.json", "/v1/models", *(f"/calls/{i}" for i in ids)]
    for path in pages:
        r = httpx.get(gw.url + path, headers=auth)
        assert r.status_code == 200, path
        seen.append(r.content)
    seen.append(log_file.read_bytes())
    folder = log_file.parent / "cli"
    folder.mkdir(exist_ok=True)
    (folder / "stillhouse.toml").write_text(
        f'[store]\nurl = "{gw.config.store.url}"\n'
        '[models.t]\nprovider = "openai"\nmodel = "gpt-4.1"\n[tasks.support]\nteacher = "t"\n'
    )
    from .test_cli import run

    listed = run("calls", "--json", "--limit", "100", cwd=folder)
    assert listed.stdout.count('"id": "call_') + listed.stdout.count('"id":"call_') == n_calls
    seen.append(listed.stdout.encode())
    return b"\n".join(seen)


def test_the_upstream_key_is_in_no_store_log_metric_page_or_answer(keyed_on, upstream) -> None:
    """Even an upstream that quotes the key it was sent in its error message (some do, masked
    or not) does not get it into anything Stillhouse keeps or shows. Its 401 is about the
    gateway's upstream key, so the caller gets a 502 naming the model, not an
    AuthenticationError that says their own key is wrong."""
    gw, log_file = keyed_on
    behaviour = upstream[1]
    c = openai.OpenAI(base_url=gw.base_url, api_key="sh-gateway-key", max_retries=0)
    c.chat.completions.create(model="support", messages=[{"role": "user", "content": "x"}])
    list(
        c.chat.completions.create(
            model="support", stream=True, messages=[{"role": "user", "content": "s"}]
        )
    )
    behaviour.fail(401, message=f"Incorrect API key provided: {UPSTREAM_KEY}.")
    with pytest.raises(openai.InternalServerError) as info:
        c.chat.completions.create(model="support", messages=[{"role": "user", "content": "y"}])
    assert info.value.status_code == 502
    assert info.value.body["code"] == "upstream_auth_failed"
    assert "models.teacher.api_key" in info.value.message
    assert behaviour.headers[-1]["authorization"] == f"Bearer {UPSTREAM_KEY}"  # it was sent
    everything = _everything_seen(gw, log_file, [info.value.response.content], 3)
    assert b"Incorrect API key provided: ***" in everything  # the error itself is kept
    assert UPSTREAM_KEY.encode() not in everything
    assert b"sh-gateway-key" not in everything


def test_an_upstream_that_quotes_its_key_mid_stream_leaks_it_nowhere(keyed_on, upstream) -> None:
    """The probe's case: one SSE chunk, then `data: {"error": {"message": "quota exceeded for
    key Bearer sk-..."}}`. Redaction ran only on non-2xx replies, so the message reached the
    client, calls.error, /calls/<id> and `stillhouse calls --json` whole."""
    gw, log_file = keyed_on
    behaviour = upstream[1]
    behaviour.error_stream_after = 2  # the role chunk and one word, then the error event
    behaviour.stream_error_message = f"quota exceeded for key Bearer {UPSTREAM_KEY}"
    c = openai.OpenAI(base_url=gw.base_url, api_key="sh-gateway-key", max_retries=0)
    raw = httpx.post(
        gw.base_url + "/chat/completions",
        json={"model": "support", "stream": True, "messages": [{"role": "user", "content": "a b"}]},
        headers={"authorization": "Bearer sh-gateway-key"},
    )
    assert b'"content":"echo:"' in raw.content and b"quota exceeded for key" in raw.content
    stream = c.chat.completions.create(
        model="support", stream=True, messages=[{"role": "user", "content": "c d"}]
    )
    with pytest.raises(openai.APIError) as info:
        list(stream)
    assert "quota exceeded for key" in info.value.message
    everything = _everything_seen(gw, log_file, [raw.content, info.value.message.encode()], 2)
    assert b"quota exceeded for key ***" in everything  # kept, as the error it is
    with gw.store() as store:
        assert {call.status for call in store.list_calls()} == {"error"}
    assert UPSTREAM_KEY.encode() not in everything
    assert b"sh-gateway-key" not in everything


@pytest.fixture
def seeded_gateway(tmp_path, upstream, gateway_factory, store_url):
    gw = gateway_factory(make_config(tmp_path, upstream[0], store_url=store_url))
    c = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
    for i in range(3):
        c.chat.completions.create(model="support", messages=[{"role": "user", "content": f"q{i}"}])
    gw.flush()
    return gw


HOSTILE = [
    "' OR '1'='1",
    "support'; DROP TABLE calls; --",
    "support\x00",
    "%",
    "../../../etc/passwd",
    "<script>alert(1)</script>",
    "\ud7ff" * 3,
    "x" * 5000,
]


def test_hostile_dashboard_filters_find_nothing_and_break_nothing(seeded_gateway) -> None:
    gw = seeded_gateway
    for value in HOSTILE:
        for name in ("task", "role", "status"):
            r = httpx.get(gw.url + "/calls", params={name: value, "limit": "5"})
            assert r.status_code == 200, (name, value, r.text[:300])
            assert "/calls/call_" not in r.text  # no call matches a hostile filter
            assert "<script>alert" not in r.text
        for path in ("/calls/", "/tasks/"):
            r = httpx.get(gw.url + path + quote(value, safe=""))
            assert r.status_code in (404, 400), (path, value, r.status_code)
    for days in ("nan", "-inf", "inf", "1e308", "-1", "x"):
        assert httpx.get(gw.url + "/", params={"days": days}).status_code == 200, days
    for limit in ("-5", "0", "1e9", "99999999999999999999", "x"):
        r = httpx.get(gw.url + "/calls", params={"limit": limit})
        assert r.status_code == 200, limit
    r = httpx.get(gw.url + "/calls", params={"task": "support"})
    assert r.text.count('href="/calls/call_') == 3  # the store is whole and filters still work


def test_hostile_cli_arguments_are_one_line_errors_and_leave_the_store_whole(
    seeded_gateway, tmp_path
) -> None:
    from .test_cli import run

    gw = seeded_gateway
    (tmp_path / "stillhouse.toml").write_text(
        f'[store]\nurl = "{gw.config.store.url}"\n'
        '[models.t]\nprovider = "openai"\nmodel = "gpt-4.1"\n[tasks.support]\nteacher = "t"\n'
    )
    for value in (HOSTILE[1], HOSTILE[4]):  # SQL and a path out of the folder (argv has no NUL)
        found = run("calls", "--task", value, "--json", cwd=tmp_path, check=False)
        assert found.returncode in (0, 1) and "Traceback" not in found.stderr
        if found.returncode == 0:
            assert "call_" not in found.stdout
        for verb in (
            ("train", "--task", "support", "--dataset", value),
            ("train", "--task", value),
            ("export", "--dataset", value, "--out", str(tmp_path / "out.jsonl")),
            ("lineage", value),
            ("eval", "--task", "support", "--candidate", value),
        ):
            result = run(*verb, cwd=tmp_path, check=False)
            assert result.returncode == 1, (verb, result.stdout, result.stderr)
            assert "Traceback" not in result.stderr
            assert len(result.stderr.strip().splitlines()) == 1, (verb, result.stderr)
    assert not (tmp_path / "out.jsonl").exists()
    with gw.store() as store:
        assert store.count_calls()["support"]["teacher"] == 3


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", "with space", ""])
def test_task_names_that_could_leave_their_folder_are_refused(tmp_path, name) -> None:
    from stillhouse.config import parse_config
    from stillhouse.errors import ConfigError

    data = {
        "models": {"t": {"provider": "openai", "model": "gpt-4.1"}},
        "tasks": {name: {"teacher": "t"}},
    }
    with pytest.raises(ConfigError, match="tasks"):
        parse_config(data, tmp_path)


def _a_dataset(tmp_path: Path, review: str = "") -> tuple[Path, str]:
    from .test_cli import run
    from .test_curate_cli import seed_calls, write_config

    url = f"sqlite:///{tmp_path / 'store.db'}"
    write_config(tmp_path, url, review)
    seed_calls(url)
    return tmp_path, json.loads(run("curate", "--task", "support", "--json", cwd=tmp_path).stdout)[
        "dataset"
    ]


def test_export_replaces_only_regular_files(tmp_path: Path) -> None:
    """`export --out` renamed a new file over its target: as root, `--out /dev/null` left
    /dev/null a regular file (symbolic links and /dev/stdout the same), and `--out ""` was a
    traceback. A FIFO stands in for the device here, so no run can harm the machine's."""
    from .test_cli import run

    folder, dataset = _a_dataset(tmp_path)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    (tmp_path / "dir").mkdir()
    real = tmp_path / "real.jsonl"
    real.write_text("old\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(real)
    to_device = tmp_path / "null"
    to_device.symlink_to("/dev/null")

    def export(out: str, *flags: str):
        return run("export", "--dataset", dataset, "--out", out, *flags, cwd=folder, check=False)

    for out, flags in (
        (str(fifo), ()),
        (str(tmp_path / "dir"), ()),
        ("", ()),
        (str(link), ()),
        (str(to_device), ("--force",)),
        ("/dev/stdout", ()),
    ):
        result = export(out, *flags)
        assert result.returncode != 0, out
        assert "Traceback" not in result.stderr and "rror" in result.stderr, result.stderr
    assert stat.S_ISFIFO(fifo.stat().st_mode) and link.is_symlink()
    assert to_device.is_symlink() and stat.S_ISCHR(Path("/dev/null").stat().st_mode)
    assert real.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []
    assert export(str(link), "--force").returncode == 0  # the link's target, the link kept
    assert link.is_symlink() and len(real.read_text().splitlines()) == 34
    assert export(str(real)).returncode == 0  # a regular file is replaced, as before


def test_captured_control_characters_never_reach_the_terminal(tmp_path: Path) -> None:
    """A caller's message can hold escape sequences (retitle the window, clear the screen, fake
    output); `calls` and `review` printed them raw to the operator's terminal."""
    from stillhouse.store import open_store
    from stillhouse.store.records import Call, new_id

    from .test_cli import run
    from .test_curate_cli import write_config

    url = f"sqlite:///{tmp_path / 'store.db'}"
    write_config(tmp_path, url, "[tasks.support.review]\nrate = 1.0\n")
    hostile = "hi \x1b]0;pwned\x07\x1b[2J\x9b31m \u202eevil"
    with open_store(url) as store:
        store.insert_calls(
            [
                Call(
                    id=new_id("call"),
                    task="support",
                    role="student",
                    request={"messages": [{"role": "user", "content": hostile}]},
                    response={"choices": [{"message": {"content": "ok " + hostile}}]},
                )
            ]
        )
    listed = run("calls", cwd=tmp_path).stdout
    reviewed = subprocess.run(
        [sys.executable, "-m", "stillhouse", "review"],
        cwd=tmp_path,
        input="q\n",
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    for out in (listed, reviewed):
        assert "hi \\x1b]0;pwned\\x07" in out
        for raw in ("\x1b", "\x07", "\x9b", "\u202e"):
            assert raw not in out
