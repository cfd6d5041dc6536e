"""The capture journal: every captured record is appended here before its response is sent.

Appends go to the OS with one write each (no fsync: the page cache survives the process, so a
SIGKILL right after answering loses nothing). Segments rotate; a segment is deleted once every
record in it is in the store. A segment whose owner died (its lock is free) is replayed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

SUFFIX = ".jsonl"


@dataclass
class Segment:
    path: Path
    handle: BinaryIO  # kept open, with an exclusive lock, until the segment is deleted
    opened: float = field(default_factory=time.monotonic)
    size: int = 0  # bytes of whole lines written
    records: int = 0  # lines written (under the journal's lock)
    committed: int = 0  # of those, inserted by the writer thread (only it counts them)
    needs_replay: bool = False  # some line never reached the store through the queue


class Journal:
    """Append-only segment files in one folder, shared safely by several processes."""

    def __init__(
        self,
        folder: str | os.PathLike[str],
        *,
        rotate_seconds: float = 1.0,
        rotate_records: int = 20_000,
    ) -> None:
        self.folder = Path(folder)
        self.rotate_seconds = rotate_seconds
        self.rotate_records = rotate_records
        self._lock = threading.Lock()
        self._current: Segment | None = None
        self._sequence = 0

    # -- appending (request path) ----------------------------------------------------------------
    def append(self, line: bytes) -> Segment:
        """Write one record line; returns the segment it went to. Raises OSError (disk full).

        A line the disk took only part of is cut off again, so the next line starts clean."""
        with self._lock:
            segment = self._current
            if segment is None:
                segment = self._current = self._open()
            try:
                written = segment.handle.write(line)
                if written != len(line):
                    raise OSError(errno.ENOSPC, "short write to the journal", str(segment.path))
            except OSError:
                with contextlib.suppress(OSError):
                    segment.handle.truncate(segment.size)
                raise
            segment.size += len(line)
            segment.records += 1
            return segment

    def _open(self) -> Segment:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._sequence += 1
        name = f"{time.time_ns():020d}-{os.getpid()}-{self._sequence}{SUFFIX}"
        handle = open(self.folder / name, "ab", buffering=0)  # noqa: SIM115 - held until deleted
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return Segment(self.folder / name, handle)

    # -- housekeeping (writer thread) ------------------------------------------------------------
    def rotate(self, force: bool = False) -> Segment | None:
        """Close the current segment if it is old or full enough; returns it when closed."""
        with self._lock:
            segment = self._current
            if segment is None or segment.records == 0:
                return None
            due = (
                time.monotonic() - segment.opened >= self.rotate_seconds
                or segment.records >= self.rotate_records
            )
            if not (due or force):
                return None
            self._current = None
            return segment

    def current_records(self) -> int:
        segment = self._current
        return segment.records if segment is not None else 0

    def release(self) -> None:
        """Let go of the open segment without deleting it: the next start replays it."""
        with self._lock:
            if self._current is not None:
                self._current.handle.close()
                self._current = None

    @staticmethod
    def delete(segment: Segment) -> None:
        with contextlib.suppress(FileNotFoundError):
            segment.path.unlink()
        segment.handle.close()

    def orphans(self) -> list[Path]:
        """Segments left by processes that died: their lock is free. Oldest first."""
        if not self.folder.is_dir():
            return []
        found = []
        for path in sorted(self.folder.glob("*" + SUFFIX)):
            try:
                with open(path, "rb") as probe:
                    fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    fcntl.flock(probe, fcntl.LOCK_UN)
            except BlockingIOError:
                continue  # a live process owns it
            except FileNotFoundError:
                continue
            found.append(path)
        return found
