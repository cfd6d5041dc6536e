"""The capture writer: journal first, batches off the request path, replay when the queue is full,
when the store is down, or after a crash. Nothing submitted is lost or duplicated."""

from __future__ import annotations

import threading
from pathlib import Path

from stillhouse.store import CaptureWriter, open_store
from stillhouse.store.base import TraceStore
from stillhouse.store.writer import encode

from .test_store import make_call


def writer_for(url: str, tmp_path: Path, **kw) -> CaptureWriter:
    return CaptureWriter(lambda: open_store(url), tmp_path / "journal", **kw)


def count(url: str) -> int:
    with open_store(url) as store:
        return sum(sum(r.values()) for r in store.count_calls().values())


def segments(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "journal").glob("*.jsonl"))


def test_everything_submitted_lands_once(store_url: str, tmp_path: Path) -> None:
    writer = writer_for(store_url, tmp_path, batch_size=50)
    writer.start()
    for _ in range(1000):
        writer.submit(make_call())
    writer.close()
    assert count(store_url) == 1000
    assert writer.written == 1000 and writer.dropped == 0
    assert segments(tmp_path) == []  # every segment settled and deleted


def test_every_record_is_journaled_before_submit_returns(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    writer = writer_for(url, tmp_path)  # not started: nothing drains
    calls = [make_call() for _ in range(5)]
    for call in calls:
        writer.submit(call)
    text = b"".join(p.read_bytes() for p in segments(tmp_path))
    assert text == b"".join(encode(c) for c in calls)


def test_full_queue_overflows_to_the_journal_and_replays(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    gate = threading.Event()

    def slow_store() -> TraceStore:
        gate.wait(10)  # the writer thread is stuck until we let it go: the queue fills
        return open_store(url)

    writer = CaptureWriter(slow_store, tmp_path / "journal", queue_size=10, batch_size=5)
    writer.start()
    for _ in range(100):
        writer.submit(make_call())
    assert writer.overflowed >= 80
    gate.set()
    assert writer.flush(10)
    writer.close()
    assert count(url) == 100
    assert writer.dropped == 0 and writer.replayed >= 80
    assert segments(tmp_path) == []


def test_store_down_then_back(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    up = threading.Event()

    def flaky_store() -> TraceStore:
        if not up.is_set():
            raise OSError("database is down")
        return open_store(url)

    writer = CaptureWriter(flaky_store, tmp_path / "journal", retry_interval=0.05)
    writer.start()
    for _ in range(20):
        writer.submit(make_call())
    assert not writer.flush(0.5)  # cannot land while the store is down...
    assert writer.store_errors >= 1 and writer.dropped == 0
    up.set()
    assert writer.flush(10)  # ...and lands once it is back, from the journal
    writer.close()
    assert count(url) == 20


def test_a_store_down_at_shutdown_leaves_the_journal_for_the_next_start(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"

    def down() -> TraceStore:
        raise OSError("database is down")

    first = CaptureWriter(down, tmp_path / "journal", retry_interval=0.05)
    first.start()
    for _ in range(7):
        first.submit(make_call())
    first.close()
    assert segments(tmp_path)  # kept on disk
    second = writer_for(url, tmp_path)
    second.start()
    assert second.flush(10)
    second.close()
    assert count(url) == 7 and segments(tmp_path) == []


def test_a_crashed_writers_journal_is_replayed_without_duplicates(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    calls = [make_call() for _ in range(10)]
    # a previous process journaled 10 calls, 4 of which had reached the store, and the crash
    # tore its last line
    folder = tmp_path / "journal"
    folder.mkdir()
    (folder / "00000000000000000001-99999-1.jsonl").write_bytes(
        b"".join(encode(c) for c in calls) + b'{"kind": "call", "data": {"id": "call_torn"'
    )
    with open_store(url) as store:
        store.insert_calls(calls[:4])
    writer = writer_for(url, tmp_path)
    writer.start()
    assert writer.flush(10)
    writer.close()
    with open_store(url) as store:
        assert {c.id for c in store.list_calls(limit=100)} == {c.id for c in calls}
    assert segments(tmp_path) == []


def test_a_live_writers_segments_are_not_taken_by_another(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    owner = writer_for(url, tmp_path)  # journals but is not draining yet
    owner.submit(make_call())
    other = writer_for(url, tmp_path)
    assert other.journal.orphans() == []  # locked by its owner
    owner.journal.release()
    assert len(other.journal.orphans()) == 1


def test_unwritable_journal_is_counted_and_the_call_still_lands(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the journal folder should be")
    writer = CaptureWriter(lambda: open_store(url), blocker / "journal")
    writer.start()
    writer.submit(make_call())
    writer.close()
    assert writer.journal_errors == 1 and writer.dropped == 0
    assert count(url) == 1
