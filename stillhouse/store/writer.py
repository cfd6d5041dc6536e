"""The capture writer: moves captured records off the request path and into the store.

`submit` never blocks and never touches the database: it puts the record on a bounded queue, and
when the queue is full it appends the record to a local spill file. One thread drains the queue in
batches; a batch the store refuses (database down) is spilled too, and spill files are replayed
once the store answers again. Inserts are idempotent, so a replay never duplicates a row.
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
from .records import Call, Score

log = logging.getLogger("stillhouse.capture")

Record = Call | Score
_STOP = object()


def _encode(record: Record) -> bytes:
    kind = "call" if isinstance(record, Call) else "score"
    return orjson.dumps({"kind": kind, "data": record.to_dict()}) + b"\n"


def _decode(line: bytes) -> Record:
    item = orjson.loads(line)
    cls = Call if item["kind"] == "call" else Score
    return cls.from_dict(item["data"])


class CaptureWriter:
    """Bounded queue + batch-writer thread + spill file. See the module docstring."""

    def __init__(
        self,
        open_store: Callable[[], TraceStore],
        spill_path: str | os.PathLike[str],
        *,
        queue_size: int = 10_000,
        batch_size: int = 500,
        retry_interval: float = 1.0,
    ) -> None:
        self._open_store = open_store
        self.spill_path = Path(spill_path)
        self.batch_size = batch_size
        self.retry_interval = retry_interval
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._spill_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._store: TraceStore | None = None
        self._next_replay = 0.0
        self._dropped_saved = 0
        self.written = 0  # records inserted into the store
        self.spilled = 0  # records appended to a spill file
        self.dropped = 0  # records lost (the spill file could not be written): must stay 0
        self.store_errors = 0

    # -- request side ------------------------------------------------------------------------
    def submit(self, record: Record) -> None:
        """Hand a record over for storage. Never blocks on the database."""
        if self._thread is not None and self._thread.is_alive():
            try:
                self._queue.put_nowait(record)
                return
            except queue.Full:
                pass
        self._spill([record])

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="stillhouse-capture", daemon=True
            )
            self._thread.start()

    def close(self, timeout: float = 30.0) -> None:
        """Write what is still queued (and replay spill files if the store answers), then stop."""
        if self._thread is None:
            return
        self._queue.put(_STOP)
        self._thread.join(timeout)
        self._thread = None

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every submitted record is in the store; False if that took too long."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.unfinished_tasks == 0 and not self._spill_files():
                return True
            self._next_replay = 0.0
            time.sleep(0.01)
        return False

    # -- writer thread -----------------------------------------------------------------------
    def _run(self) -> None:
        stopping = False
        while True:
            batch, stopping = self._take(stopping)
            if batch:
                if not self._write(batch):
                    self._spill(batch)
                for _ in batch:
                    self._queue.task_done()
            if time.monotonic() >= self._next_replay:
                self._replay()
            if stopping and self._queue.empty():
                break
        if self._store is not None:
            self._store.close()
            self._store = None

    def _take(self, stopping: bool) -> tuple[list[Record], bool]:
        batch: list[Record] = []
        try:
            item = self._queue.get(timeout=0.0 if stopping else 0.2)
        except queue.Empty:
            return batch, stopping
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

    def _write(self, batch: list[Record]) -> bool:
        try:
            if self._store is None:
                self._store = self._open_store()
            calls = [r for r in batch if isinstance(r, Call)]
            scores = [r for r in batch if isinstance(r, Score)]
            if calls:
                self._store.insert_calls(calls)
            if scores:
                self._store.insert_scores(scores)
            if self.dropped > self._dropped_saved:
                delta = self.dropped - self._dropped_saved
                self._store.add_counter("captures_dropped", delta)
                self._dropped_saved += delta
        except Exception as err:
            self.store_errors += 1
            log.warning("store write failed (%s); %d records go to the spill file", err, len(batch))
            if self._store is not None:
                with contextlib.suppress(Exception):
                    self._store.close()
            self._store = None
            self._next_replay = time.monotonic() + self.retry_interval
            return False
        self.written += len(batch)
        return True

    # -- spill file --------------------------------------------------------------------------
    def _spill(self, records: list[Record]) -> None:
        data = b"".join(_encode(r) for r in records)
        try:
            with self._spill_lock:
                self.spill_path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.spill_path, "ab") as fh:
                    fh.write(data)
            self.spilled += len(records)
        except OSError as err:
            self.dropped += len(records)
            log.error("CAPTURE LOST: cannot write spill file %s: %s", self.spill_path, err)

    def _spill_files(self) -> list[Path]:
        pattern = self.spill_path.name + "*"
        return sorted(p for p in self.spill_path.parent.glob(pattern) if p.is_file())

    def _replay(self) -> None:
        """Move spill files into the store; leave them in place if the store still refuses."""
        with self._spill_lock:
            if self.spill_path.exists():
                # New spills go to a fresh file while this one is replayed.
                self.spill_path.rename(f"{self.spill_path}.replay-{time.time_ns()}")
        for path in self._spill_files():
            if path == self.spill_path:
                continue
            records = []
            for line in path.read_bytes().splitlines():
                try:
                    records.append(_decode(line))
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    log.warning("skipping a torn line in %s", path)
            for start in range(0, len(records), self.batch_size):
                if not self._write(records[start : start + self.batch_size]):
                    return
            path.unlink()
        self._next_replay = time.monotonic() + self.retry_interval
