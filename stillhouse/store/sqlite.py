"""The SQLite trace store: one file in WAL mode, the default for a single gateway process."""

from __future__ import annotations

import contextlib
import fcntl
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from ..errors import StoreError
from .base import TraceStore


class SQLiteStore(TraceStore):
    dialect = "sqlite"
    placeholder = "?"

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.path = Path(url.removeprefix("sqlite:///"))
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit mode: we open write transactions ourselves with BEGIN IMMEDIATE.
            self.conn = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute("PRAGMA busy_timeout=30000")
        except sqlite3.Error as err:
            raise StoreError(f"cannot open SQLite store {self.path}: {err}") from err

    def _begin_write(self) -> None:
        if not self.conn.in_transaction:
            self.conn.execute("BEGIN IMMEDIATE")

    @contextlib.contextmanager
    def controller_lock(self) -> Iterator[bool]:
        """A file lock beside the database (`<file>.controller.lock`): the OS lets it go if the
        process dies."""
        path = Path(str(self.path) + ".controller.lock")
        with path.open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
