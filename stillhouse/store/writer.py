"""The capture writer: moves captured records off the request path and into the store.

`submit` never touches the database: it appends the record to the journal (one write to the OS,
before the client gets its answer) and puts it on a bounded queue. One thread drains the queue in
batches. A record the queue had no room for, or that the store refused (database down), is
replayed from the journal later; so is everything a killed process left behind. Inserts are
idempotent on id, so a replay never duplicates a row.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from .base import TraceStore
from .journal import Journal, Segment
from .records import Call, Score, StoredResponse

log = logging.getLogger("stillhouse.capture")

Record = Call | Score | StoredResponse
KINDS: dict[str, type[Call] | type[Score] | type[StoredResponse]] = {
    "call": Call,
    "score": Score,
    "response": StoredResponse,
}
KIND_OF = {cls: kind for kind, cls in KINDS.items()}
_STOP = object()
ORPHAN_SCAN_SECONDS = 5.0
BATCH_WAIT = 0.05  # seconds the writer lets records gather before a transaction
MAX_UNJOURNALED = 100_000  # records held in memory while neither journal nor store takes them


def encode(record: Record) -> bytes:
    return orjson.dumps({"kind": KIND_OF[type(record)], "data": record.to_dict()}) + b"\n"


def decode(line: bytes) -> Record:
    item = orjson.loads(line)
    return KINDS[item["kind"]].from_dict(item["data"])


class CaptureWriter:
    """Journal + bounded queue + batch-writer thread. See the module docstring."""

    def __init__(
        self,
        open_store: Callable[[], TraceStore],
        journal_dir: str | os.PathLike[str],
        *,
        queue_size: int = 10_000,
        batch_size: int = 500,
        retry_interval: float = 1.0,
        rotate_seconds: float = 1.0,
    ) -> None:
        self._open_store = open_store
        self.journal = Journal(journal_dir, rotate_seconds=rotate_seconds)
        self.batch_size = batch_size
        self.retry_interval = retry_interval
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        self._store: TraceStore | None = None
        self._closed: list[Segment] = []  # rotated segments not yet deleted
        self._unjournaled: list[Record] = []  # the journal failed and the store refused too
        self._next_retry = 0.0
        self._next_orphan_scan = 0.0
        self._flush_requested = False
        self._dropped_saved = 0
        self._journal_failing = False
        self._unjournaled_stored = 0  # records the journal missed that reached the store
        self.written = 0  # records inserted from the queue
        self.replayed = 0  # records inserted from journal segments
        self.overflowed = 0  # records the queue had no room for (replayed from the journal)
        self.journal_errors = 0  # records the journal could not take: captures at risk
        self.store_errors = 0  # failed store writes (the records wait in the journal)
        self.dropped = 0  # records lost: must stay 0

    # -- request side ------------------------------------------------------------------------
    def submit(self, record: Record) -> None:
        """Journal the record and queue it for the store. Never blocks on the database."""
        segment = None
        try:
            segment = self.journal.append(encode(record))
        except OSError as err:
            self.journal_errors += 1
            if not self._journal_failing or self.journal_errors % 1000 == 0:
                log.error(
                    "captures at risk: cannot write the journal in %s (%s); %d records so far "
                    "are held only in memory until the store takes them",
                    self.journal.folder,
                    err,
                    self.journal_errors,
                )
            self._journal_failing = True
        else:
            if self._journal_failing:
                self._journal_failing = False
                log.warning("the journal in %s is writable again", self.journal.folder)
        if self._thread is not None and self._thread.is_alive():
            try:
                self._queue.put_nowait((record, segment))
                return
            except queue.Full:
                self.overflowed += 1
        if segment is not None:
            segment.needs_replay = True
        else:
            self._hold([record])

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    @property
    def at_risk(self) -> int:
        """Records neither the journal nor the store holds yet: a crash now would lose them."""
        return max(0, self.journal_errors - self._unjournaled_stored - self.dropped)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="stillhouse-capture", daemon=True
            )
            self._thread.start()

    def close(self, timeout: float = 30.0) -> None:
        """Write what is still queued, settle the journal where the store answers, then stop."""
        if self._thread is None:
            return
        self._queue.put(_STOP)
        self._thread.join(timeout)
        self._thread = None

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every submitted record is in the store; False if that took too long."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._flush_requested = True
            self._next_retry = 0.0
            if (
                self._queue.unfinished_tasks == 0
                and self.journal.current_records() == 0
                and not self._closed
                and not self._unjournaled
            ):
                self._flush_requested = False
                return True
            time.sleep(0.01)
        self._flush_requested = False
        return False

    # -- writer thread -----------------------------------------------------------------------
    def _run(self) -> None:
        stopping = False
        while True:
            batch, stopping = self._take(stopping)
            if batch:
                self._write_batch(batch)
            self._housekeep(force=stopping or self._flush_requested)
            if stopping and self._queue.empty():
                break
        for segment in self._closed:  # left for the next start to replay
            segment.handle.close()
        self._closed.clear()
        self.journal.release()
        if self._store is not None:
            self._store.close()
            self._store = None

    def _take(self, stopping: bool) -> tuple[list[tuple[Record, Segment | None]], bool]:
        batch: list[tuple[Record, Segment | None]] = []
        try:
            item = self._queue.get(timeout=0.0 if stopping else 0.1)
        except queue.Empty:
            return batch, stopping
        if not (stopping or self._flush_requested) and self._queue.qsize() < self.batch_size:
            # Let a batch gather: one transaction for many calls instead of one per call costs
            # the request path far less CPU, and every call is already safe in the journal.
            time.sleep(BATCH_WAIT)
        while True:
            if item is _STOP:
                self._queue.task_done()
                stopping = True
            else:
                batch.append(item)
            if len(batch) >= self.batch_size:
                break
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
        return batch, stopping

    def _write_batch(self, batch: list[tuple[Record, Segment | None]]) -> None:
        ok = self._insert([record for record, _ in batch])
        if ok:
            self.written += len(batch)
        for record, segment in batch:
            if segment is None:
                if ok:
                    self._unjournaled_stored += 1
                else:
                    self._hold([record])
            elif ok:
                segment.committed += 1
            else:
                segment.needs_replay = True
            self._queue.task_done()

    def _insert(self, records: list[Record]) -> bool:
        try:
            if self._store is None:
                self._store = self._open_store()
            calls = [r for r in records if isinstance(r, Call)]
            scores = [r for r in records if isinstance(r, Score)]
            responses = [r for r in records if isinstance(r, StoredResponse)]
            delta = self.dropped - self._dropped_saved
            with self._store.transaction():  # one BEGIN IMMEDIATE ... COMMIT for the batch
                if calls:
                    self._store.insert_calls(calls)
                if scores:
                    self._store.insert_scores(scores)
                if responses:
                    self._store.insert_responses(responses)
                if delta > 0:
                    self._store.add_counter("captures_dropped", delta)
            if delta > 0:
                self._dropped_saved += delta
        except Exception as err:
            self.store_errors += 1
            log.warning(
                "store write failed (%s); %d records wait in the journal", err, len(records)
            )
            if self._store is not None:
                with contextlib.suppress(Exception):
                    self._store.close()
            self._store = None
            self._next_retry = time.monotonic() + self.retry_interval
            return False
        return True

    def _hold(self, records: list[Record]) -> None:
        room = MAX_UNJOURNALED - len(self._unjournaled)
        self._unjournaled.extend(records[:room])
        if len(records) > room:
            self.dropped += len(records) - room
            log.error(
                "CAPTURE LOST: %d records (journal unwritable, store down)", len(records) - room
            )

    # -- journal housekeeping ----------------------------------------------------------------
    def _housekeep(self, force: bool) -> None:
        rotated = self.journal.rotate(force=force)
        if rotated is not None:
            self._closed.append(rotated)
        now = time.monotonic()
        can_retry = now >= self._next_retry
        for segment in list(self._closed):
            if segment.needs_replay:
                if can_retry and self._replay(segment.path):
                    self.journal.delete(segment)
                    self._closed.remove(segment)
            elif segment.committed >= segment.records:
                self.journal.delete(segment)
                self._closed.remove(segment)
        if self._unjournaled and can_retry:
            held = list(self._unjournaled)  # emptied only once stored: flush() waits for that
            if self._insert(held):
                self.replayed += len(held)
                self._unjournaled_stored += len(held)
                del self._unjournaled[: len(held)]
        if (force or now >= self._next_orphan_scan) and time.monotonic() >= self._next_retry:
            self._next_orphan_scan = now + ORPHAN_SCAN_SECONDS
            for path in self.journal.orphans():
                if self._replay(path):
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()

    def _replay(self, path: Path) -> bool:
        """Insert every record of a journal segment; False (and keep it) if the store refused."""
        try:
            lines = path.read_bytes().splitlines()
        except FileNotFoundError:
            return True  # another process replayed it first
        records = []
        for line in lines:
            try:
                records.append(decode(line))
            except (orjson.JSONDecodeError, KeyError, TypeError):
                log.warning("skipping a torn line in %s", path)
        for start in range(0, len(records), self.batch_size):
            if not self._insert(records[start : start + self.batch_size]):
                return False
        self.replayed += len(records)
        return True
