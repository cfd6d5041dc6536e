"""Stopping the gateway under load loses no call that got a response; PostgreSQL captures too."""

from __future__ import annotations

import asyncio

import httpx
import openai

from .conftest import Gateway, make_config, start_serve


async def _hammer(url: str, stop: asyncio.Event) -> tuple[int, int]:
    """Send requests from 16 workers until told to stop; count answered and failed ones."""
    ok = failed = 0
    async with httpx.AsyncClient(timeout=10) as client:

        async def worker(n: int) -> None:
            nonlocal ok, failed
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    r = await client.post(
                        url,
                        json={
                            "model": "support",
                            "messages": [{"role": "user", "content": f"w{n} r{i}"}],
                        },
                    )
                    if r.status_code == 200:
                        ok += 1
                    else:
                        failed += 1
                except httpx.TransportError:
                    failed += 1
                    await asyncio.sleep(0.01)

        await asyncio.gather(*(worker(n) for n in range(16)))
    return ok, failed


def test_stopping_under_load_loses_no_answered_call(tmp_path, upstream) -> None:
    config = make_config(tmp_path, upstream[0])
    upstream[1].latency = 0.005
    gw = Gateway(config)

    async def scenario() -> tuple[int, int]:
        stop = asyncio.Event()
        load = asyncio.create_task(_hammer(gw.base_url + "/chat/completions", stop))
        await asyncio.sleep(1.5)
        await asyncio.to_thread(gw.stop)  # graceful stop while requests are in flight
        stop.set()
        return await load

    ok, _ = asyncio.run(scenario())
    assert ok > 50
    with gw.store() as store:
        stored = store.count_calls()["support"]["teacher"]
    assert stored >= ok  # every answered call is in the store (a cut-off one may be too)
    assert gw.app.state.writer.dropped == 0


def test_gateway_on_postgres_captures_every_call(
    tmp_path, upstream, gateway_factory, pg_url: str
) -> None:
    gw = gateway_factory(make_config(tmp_path, upstream[0], store_url=pg_url))
    client = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
    for i in range(20):
        client.chat.completions.create(
            model="support", messages=[{"role": "user", "content": f"q{i}"}]
        )
    list(
        client.chat.completions.create(
            model="support", stream=True, messages=[{"role": "user", "content": "s"}]
        )
    )
    gw.flush()
    with gw.store() as store:
        calls = store.list_calls(limit=100)
    assert len(calls) == 21
    assert sum(c.stream for c in calls) == 1
    assert all(c.output_tokens for c in calls)


def test_sigkill_right_after_answering_loses_nothing(tmp_path, upstream) -> None:
    import signal
    import sqlite3

    from stillhouse.store import open_store

    from .upstream import free_port

    (tmp_path / "stillhouse.toml").write_text(
        f'[store]\nurl = "sqlite:///calls.db"\n'
        f'[models.t]\nprovider = "openai-compatible"\nbase_url = "{upstream[0]}"\n'
        f'model = "m"\n[tasks.support]\nteacher = "t"\n'
    )
    port = free_port()
    proc = start_serve(tmp_path, port)
    # Hold the database's write lock: the gateway answers, but its writer cannot commit, so the
    # answered calls exist only in the journal when the process dies.
    blocker = sqlite3.connect(tmp_path / "calls.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
    ids = []
    for i in range(40):
        raw = client.chat.completions.with_raw_response.create(
            model="support", messages=[{"role": "user", "content": f"q{i}"}]
        )
        ids.append(raw.headers["x-stillhouse-call-id"])
    proc.send_signal(signal.SIGKILL)  # no shutdown, no flush
    proc.wait(10)
    assert blocker.execute("SELECT COUNT(*) FROM calls").fetchone() == (0,)
    blocker.execute("ROLLBACK")
    blocker.close()
    restarted = start_serve(tmp_path, port)  # replays what the dead process journaled
    restarted.send_signal(signal.SIGTERM)
    restarted.wait(30)
    with open_store(f"sqlite:///{tmp_path / 'calls.db'}") as store:
        stored = {c.id for c in store.list_calls(limit=1000)}
    assert stored == set(ids)
    assert list((tmp_path / "stillhouse.journal").glob("*.jsonl")) == []
