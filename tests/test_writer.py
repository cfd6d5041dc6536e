"""The capture writer: batches off the request path, spills when full or when the store is down,
replays, and flushes on close. Nothing submitted is lost or duplicated."""

from __future__ import annotations

import threading
from pathlib import Path

from stillhouse.store import CaptureWriter, open_store
from stillhouse.store.base import TraceStore

from .test_store import make_call


def writer_for(url: str, tmp_path: Path, **kw) -> CaptureWriter:
    return CaptureWriter(lambda: open_store(url), tmp_path / "spill.jsonl", **kw)


def count(url: str) -> int:
    with open_store(url) as store:
        return sum(sum(r.values()) for r in store.count_calls().values())


def test_everything_submitted_lands_once(store_url: str, tmp_path: Path) -> None:
    writer = writer_for(store_url, tmp_path, batch_size=50)
    writer.start()
    calls = [make_call() for _ in range(1000)]
    for call in calls:
        writer.submit(call)
    writer.close()
    assert count(store_url) == 1000
    assert writer.written == 1000 and writer.dropped == 0


def test_full_queue_spills_to_file_and_replays(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    gate = threading.Event()

    def slow_store() -> TraceStore:
        gate.wait(10)  # the writer thread is stuck until we let it go: the queue fills
        return open_store(url)

    writer = CaptureWriter(slow_store, tmp_path / "spill.jsonl", queue_size=10, batch_size=5)
    writer.start()
    for _ in range(100):
        writer.submit(make_call())
    assert writer.spilled >= 80
    assert (tmp_path / "spill.jsonl").exists()
    gate.set()
    assert writer.flush(10)
    writer.close()
    assert count(url) == 100
    assert writer.dropped == 0
    assert not list(tmp_path.glob("spill.jsonl*"))


def test_store_down_then_back(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    up = threading.Event()

    def flaky_store() -> TraceStore:
        if not up.is_set():
            raise OSError("database is down")
        return open_store(url)

    writer = CaptureWriter(flaky_store, tmp_path / "spill.jsonl", retry_interval=0.05)
    writer.start()
    for _ in range(20):
        writer.submit(make_call())
    assert not writer.flush(0.5)  # cannot land while the store is down...
    assert writer.store_errors >= 1 and writer.spilled == 20
    up.set()
    assert writer.flush(10)  # ...and lands once it is back
    writer.close()
    assert count(url) == 20


def test_spill_left_by_a_crash_is_replayed_without_duplicates(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    calls = [make_call() for _ in range(10)]
    # a previous process spilled 10 calls, 4 of which had reached the store, and the last
    # line was torn by the crash
    first = CaptureWriter(lambda: open_store(url), tmp_path / "spill.jsonl")
    first._spill(calls)
    with open(tmp_path / "spill.jsonl", "ab") as fh:
        fh.write(b'{"kind": "call", "data": {"id": "call_torn"')
    with open_store(url) as store:
        store.insert_calls(calls[:4])
    writer = writer_for(url, tmp_path)
    writer.start()
    assert writer.flush(10)
    writer.close()
    with open_store(url) as store:
        assert {c.id for c in store.list_calls(limit=100)} == {c.id for c in calls}


def test_unwritable_spill_counts_dropped_and_persists_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the spill folder should be")
    writer = CaptureWriter(lambda: open_store(url), blocker / "spill.jsonl")
    writer.submit(make_call())  # not started: goes to the spill file, which cannot be written
    assert writer.dropped == 1
    writer.start()
    writer.submit(make_call())
    writer.close()
    with open_store(url) as store:
        assert store.counter("captures_dropped") == 1
