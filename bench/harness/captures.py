"""Capture integrity as the gateway reports it: its /metrics capture counters, and the rows its
SQLite store holds (read-only: a check must never write to the store it counts).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from .procs import http_get


def metrics_values(port: int) -> dict[str, float]:
    _, text = http_get(port, "/metrics")
    out = {}
    for line in text.decode().splitlines():
        if line.startswith("stillhouse_capture"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def store_rows(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        total, ok, stream = conn.execute(
            "SELECT count(*), coalesce(sum(status = 'ok'), 0), coalesce(sum(stream), 0) FROM calls"
        ).fetchone()
    finally:
        conn.close()
    return {"rows": total, "rows_ok": ok, "rows_stream": stream}


def wait_captures(port: int, expected: int | None, timeout: float = 30.0) -> dict[str, float]:
    """Wait until the capture queue is empty (and `expected` records are written, if given)."""
    deadline = time.monotonic() + timeout
    m = metrics_values(port)
    while time.monotonic() < deadline:
        m = metrics_values(port)
        written = m.get("stillhouse_captures_written_total", 0) + m.get(
            "stillhouse_captures_replayed_total", 0
        )
        if m.get("stillhouse_capture_queue_depth", 0) == 0 and (
            expected is None or written >= expected
        ):
            break
        time.sleep(0.2)
    time.sleep(0.3)  # the writer commits a batch after counting it
    return metrics_values(port)
