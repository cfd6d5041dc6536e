"""Faults while traffic flows: the client always gets an answer or an OpenAI-shaped error, and
every call is in the store with its outcome.

Upstream faults come from the loopback upstream (tests/upstream.py); the database outage stops a
PostgreSQL server of the test's own (Debian's binaries, a throwaway cluster on a free port, so the
shared one other tests use is never touched); the unwritable journal is a `stillhouse serve`
process whose file-size limit (RLIMIT_FSIZE = 0) makes every journal write fail with EFBIG, as a
full disk fails it with ENOSPC, without needing root to fill a filesystem.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from .conftest import Gateway, make_config, postgres_url
from .upstream import free_port

MESSAGES = [{"role": "user", "content": "one two three four five"}]


def client(gw: Gateway, timeout: float = 20) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0, timeout=timeout)


def stored(gw: Gateway) -> dict[str, object]:
    gw.flush()
    with gw.store() as store:
        return {c.id: c for c in store.list_calls(limit=10_000)}


def with_teacher(config, **update):
    teacher = config.models["teacher"].model_copy(update=update)
    return config.model_copy(update={"models": {"teacher": teacher}})


def assert_openai_error(body: dict) -> None:
    assert set(body) == {"error"}, body
    assert {"message", "type", "param", "code"} <= set(body["error"]), body
    assert body["error"]["message"]


# -- upstream faults -----------------------------------------------------------------------------
def test_429_past_the_retries_reaches_the_client_with_its_status(
    tmp_path, upstream, gateway_factory
) -> None:
    base_url, behaviour = upstream
    gw = gateway_factory(with_teacher(make_config(tmp_path, base_url), max_retries=1))
    behaviour.fail(429, times=2, retry_after=0.05)
    with pytest.raises(openai.RateLimitError) as info:
        client(gw).chat.completions.create(model="support", messages=MESSAGES)
    assert_openai_error(info.value.response.json())
    assert len(behaviour.requests) == 2  # one try and one retry, each after Retry-After
    (call,) = stored(gw).values()
    assert (call.status, call.http_status) == ("error", 429)


def test_a_stream_that_stalls_midway_ends_with_an_error_event(
    tmp_path, upstream, gateway_factory
) -> None:
    base_url, behaviour = upstream
    gw = gateway_factory(with_teacher(make_config(tmp_path, base_url), timeout=0.5))
    behaviour.stall_stream_after = 3
    stream = client(gw).chat.completions.create(model="support", messages=MESSAGES, stream=True)
    received = []
    started = time.monotonic()
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            received.append(chunk.choices[0].delta.content if chunk.choices else None)
    assert time.monotonic() - started < 5  # the stall was cut at the timeout, not waited out
    assert len(received) == 3
    assert "stalled" in info.value.message
    (call,) = stored(gw).values()
    assert (call.status, call.http_status, call.stream) == ("error", 504, True)
    assert call.response["choices"][0]["message"]["content"] == "echo: one"  # the partial answer


def test_a_stream_that_stalls_before_its_first_chunk_is_a_504(
    tmp_path, upstream, gateway_factory
) -> None:
    base_url, behaviour = upstream
    gw = gateway_factory(with_teacher(make_config(tmp_path, base_url), timeout=0.3, max_retries=0))
    behaviour.latency = 2.0
    with pytest.raises(openai.APIStatusError) as info:
        list(client(gw).chat.completions.create(model="support", messages=MESSAGES, stream=True))
    assert info.value.status_code == 504
    assert_openai_error(info.value.response.json())
    (call,) = stored(gw).values()
    assert (call.status, call.http_status) == ("error", 504)


def test_mixed_faults_under_concurrent_traffic_every_call_captured_with_its_outcome(
    tmp_path, upstream, gateway_factory
) -> None:
    """Two hundred requests, streamed and not, a fifth of them meeting a 500, a 429 or a cut
    stream: each answer the client saw matches its stored call, found by the call-id header."""
    base_url, behaviour = upstream
    gw = gateway_factory(with_teacher(make_config(tmp_path, base_url), max_retries=0))
    rng = random.Random(7)
    plan = []
    for i in range(200):
        fault = rng.choice([None, None, None, None, 500, 429, "cut"])
        plan.append((i, rng.random() < 0.5, fault))
    # Faults are consumed in arrival order, so requests go one fault-kind at a time: all the
    # 500s (concurrently), then all the 429s, then everything else. Mixing 500s and 429s in one
    # concurrent group would let arrival order hand a 429 to a request planned for a 500.
    groups = [
        [p for p in plan if p[2] == 500],
        [p for p in plan if p[2] == 429],
        [p for p in plan if p[2] not in (500, 429)],
    ]

    async def send(http: httpx.AsyncClient, i: int, stream: bool) -> tuple[str, int, bytes]:
        body = {"model": "support", "messages": [{"role": "user", "content": f"q{i} a b c"}]}
        if stream:
            body["stream"] = True
        r = await http.post(gw.base_url + "/chat/completions", json=body)
        return r.headers["x-stillhouse-call-id"], r.status_code, r.content

    async def scenario() -> list[tuple[tuple[int, bool, object], tuple[str, int, bytes]]]:
        out = []
        async with httpx.AsyncClient(timeout=20) as http:
            for group in groups:
                for _, _, fault in group:
                    if fault in (500, 429):
                        behaviour.fail(fault)
                behaviour.cut_stream_after = None
                cuts = [p for p in group if p[2] == "cut"]
                clean = [p for p in group if p[2] != "cut"]
                answers = await asyncio.gather(*(send(http, i, s) for i, s, _ in clean))
                out += list(zip(clean, answers, strict=True))
                behaviour.cut_stream_after = 2
                # A cut affects streams only: a non-streamed request in `cuts` is answered whole.
                answers = await asyncio.gather(*(send(http, i, s) for i, s, _ in cuts))
                out += list(zip(cuts, answers, strict=True))
                behaviour.cut_stream_after = None
        return out

    results = asyncio.run(scenario())
    calls = stored(gw)
    assert len(results) == 200 and len(calls) == 200
    for (_, stream, fault), (call_id, status, content) in results:
        call = calls[call_id]
        if fault in (500, 429):
            assert status == fault and call.http_status == fault and call.status == "error"
            assert_openai_error(httpx.Response(status, content=content).json())
        elif fault == "cut" and stream:
            assert status == 200 and b'"error"' in content and b"[DONE]" not in content
            assert call.status == "error" and call.response is not None
        else:
            assert status == 200 and call.status == "ok" and call.http_status == 200
            assert (b"[DONE]" in content) == stream
    assert gw.app.state.writer.dropped == 0


# -- PostgreSQL stopped and restarted while traffic flows ----------------------------------------
def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    path = found[-1] if found else shutil.which("pg_ctl")
    if not path:
        postgres_url()  # skips locally without PostgreSQL; fails in CI
        pytest.fail("PostgreSQL is set up for the tests but pg_ctl is not installed")
    return Path(path).parent


class OwnPostgres:
    """A throwaway PostgreSQL cluster on a free port, run as the `postgres` user under root."""

    def __init__(self) -> None:
        self.bin = _pg_bin()
        self.dir = Path(tempfile.mkdtemp(prefix="sh-pg-"))
        self.port = free_port()
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            shutil.chown(self.dir, "postgres")
        self._run("initdb", "-D", str(self.dir / "data"), "-A", "trust", "-U", "postgres")
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(
            [*self.as_user, str(self.bin / tool), *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.dir,
        )

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            "pg_ctl",
            "start",
            "-w",
            "-D",
            str(self.dir / "data"),
            "-o",
            opts,
            "-l",
            str(self.dir / "log"),
        )

    def stop(self) -> None:
        self._run("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.dir / "data"))


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    postgres_url()  # PostgreSQL tests run where STILLHOUSE_TEST_PG_URL is set
    pg = OwnPostgres()
    pg.start()
    try:
        yield pg
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            pg.stop()
        shutil.rmtree(pg.dir, ignore_errors=True)


def _metric(gw: Gateway, name: str) -> float:
    text = httpx.get(gw.url + "/metrics").text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


@pytest.mark.postgres
@pytest.mark.slow
def test_postgres_stopped_and_restarted_mid_traffic(
    tmp_path, upstream, gateway_factory, own_postgres
) -> None:
    gw = gateway_factory(make_config(tmp_path, upstream[0], store_url=own_postgres.url))
    c = client(gw)
    ids = []

    def burst(n: int, tag: str) -> None:
        for i in range(n):
            raw = c.chat.completions.with_raw_response.create(
                model="support",
                messages=[{"role": "user", "content": f"{tag} {i}"}],
                stream=i % 4 == 0,
            )
            ids.append(raw.headers["x-stillhouse-call-id"])
            raw.parse()  # read the whole answer (a stream to its end)

    burst(20, "before")
    gw.flush()
    own_postgres.stop()
    burst(40, "down")  # the gateway keeps serving while the database is gone
    deadline = time.monotonic() + 10
    while _metric(gw, "stillhouse_captures_store_errors_total") == 0:
        assert time.monotonic() < deadline, "the writer never noticed the database was down"
        time.sleep(0.1)
    waiting = list((tmp_path / "stillhouse.journal").glob("*.jsonl"))
    assert waiting, "captures made while the database was down must wait in the journal"
    burst(10, "still down")
    own_postgres.start()
    burst(10, "after")
    calls = stored(gw)
    assert set(calls) == set(ids) and len(ids) == 80
    assert all(call.status == "ok" for call in calls.values())
    assert gw.app.state.writer.dropped == 0
    assert _metric(gw, "stillhouse_captures_replayed_total") > 0


# -- the journal cannot be written (disk full) ---------------------------------------------------
def _no_file_writes() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))  # every write to a regular file: EFBIG


@pytest.mark.postgres
def test_an_unwritable_journal_keeps_serving_and_says_captures_are_at_risk(
    tmp_path, upstream, pg_url
) -> None:
    (tmp_path / "stillhouse.toml").write_text(
        f'[store]\nurl = "{pg_url}"\n'
        f'[models.t]\nprovider = "openai-compatible"\nbase_url = "{upstream[0]}"\n'
        f'model = "m"\n[tasks.support]\nteacher = "t"\n'
    )
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "stillhouse", "serve", "--port", str(port)],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        preexec_fn=_no_file_writes,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(base + "/healthz").status_code == 200:
                    break
            assert time.monotonic() < deadline and proc.poll() is None, "gateway did not start"
            time.sleep(0.05)
        c = openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0)
        ids = set()
        for i in range(30):
            raw = c.chat.completions.with_raw_response.create(
                model="support", messages=[{"role": "user", "content": f"q{i}"}]
            )
            assert raw.parse().choices[0].message.content == f"echo: q{i}"
            ids.add(raw.headers["x-stillhouse-call-id"])
        metrics = httpx.get(base + "/metrics").text
        assert "stillhouse_captures_journal_errors_total 30.0" in metrics
        assert "stillhouse_captures_at_risk" in metrics
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert b"captures at risk: cannot write the journal" in err
    assert b"File too large" in err
    from stillhouse.store import open_store

    with open_store(pg_url) as store:
        assert {call.id for call in store.list_calls(limit=100)} == ids


def test_a_line_the_disk_took_only_part_of_is_cut_off_again(tmp_path) -> None:
    """RLIMIT_FSIZE makes the kernel take part of the fourth 300-byte line (a short write, as a
    disk filling up does): the append fails, and the segment holds three whole lines only."""
    script = (
        "import resource, sys\n"
        "from stillhouse.store.journal import Journal\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))\n"
        "journal = Journal(sys.argv[1])\n"
        "for i in range(5):\n"
        "    try:\n"
        "        journal.append(b'%d' % i + b'x' * 298 + b'\\n')\n"
        "    except OSError as err:\n"
        "        print(i, err.errno)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert out[:2] == ["3 28", "4 28"]  # short writes (ENOSPC), never a torn line kept
    (segment,) = tmp_path.glob("*.jsonl")
    lines = segment.read_bytes().split(b"\n")
    assert [line[:1] for line in lines] == [b"0", b"1", b"2", b""]
    assert all(len(line) == 299 for line in lines[:3])


def test_captures_at_risk_counts_calls_only_in_memory_until_the_store_takes_them(
    tmp_path,
) -> None:
    """Journal unwritable (its folder is a file) and the store down (its folder is missing):
    the calls are held in memory and counted at risk; once the store is back they land and the
    count falls to 0."""
    from stillhouse.store import open_store
    from stillhouse.store.records import Call, new_id
    from stillhouse.store.writer import CaptureWriter

    (tmp_path / "journal").write_text("not a folder")
    db = tmp_path / "store" / "calls.db"
    store_up = False

    def opener():
        if not store_up:
            raise OSError("store down")
        return open_store(f"sqlite:///{db}")

    writer = CaptureWriter(opener, tmp_path / "journal", retry_interval=0.05)
    writer.start()
    try:
        calls = [Call(id=new_id("call"), task="t", request={"n": i}) for i in range(25)]
        for call in calls:
            writer.submit(call)
        time.sleep(0.3)
        assert writer.journal_errors == 25 and writer.at_risk == 25 and writer.dropped == 0
        store_up = True
        assert writer.flush(10)
        assert writer.at_risk == 0
    finally:
        writer.close()
    with open_store(f"sqlite:///{db}") as store:
        assert {c.id for c in store.list_calls(limit=100)} == {c.id for c in calls}
