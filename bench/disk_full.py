"""The journal's disk really full: a recorded one-off for docs/reliability.md (needs root).

    sudo .venv/bin/python bench/disk_full.py

The test suite makes the journal unwritable with RLIMIT_FSIZE (tests/test_faults.py), which needs
no privileges; this script does it the way it happens in production: the journal folder is a
256 KiB tmpfs, filled to the last byte while the gateway serves. It sends 200 requests with room,
300 with the disk full, frees the space, sends 200 more, stops the gateway, and counts: answers,
rows in the store (SQLite, on another filesystem), the capture metrics, and the log lines.
Results: bench/results/disk-full-<time>.json.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from harness import (
    ROOT,
    Procs,
    free_port,
    metrics_values,
    start_gateway,
    start_upstream,
    store_rows,
    wait_captures,
    write_result,
)


def send(port: int, n: int, tag: str) -> dict[int, int]:
    statuses: dict[int, int] = {}
    with httpx.Client(timeout=10) as client:
        for i in range(n):
            body = {"model": "bench", "messages": [{"role": "user", "content": f"{tag} {i}"}]}
            r = client.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body)
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
    return statuses


def fill(folder: Path) -> int:
    """Write a file until the filesystem refuses; returns the bytes written."""
    written = 0
    with open(folder / "filler", "wb", buffering=0) as fh, contextlib.suppress(OSError):
        while True:
            written += fh.write(b"\0" * 4096)
    return written


def main() -> int:
    if os.geteuid() != 0:
        print("needs root (mount -t tmpfs)", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="stillhouse-diskfull-"))
    journal = tmp / "journal"
    journal.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(journal)], check=True)
    procs = Procs(pin=False)
    try:
        up = free_port()
        start_upstream(procs, ROOT, up, tmp / "upstream.log", cpu=None)
        port = free_port()
        db = tmp / "calls.db"
        (tmp / "stillhouse.toml").write_text(
            f'[store]\nurl = "sqlite:///{db}"\njournal_dir = "{journal}"\n\n'
            f'[models.teacher]\nprovider = "openai-compatible"\n'
            f'base_url = "http://127.0.0.1:{up}/v1"\nmodel = "m"\n\n'
            '[tasks.bench]\nteacher = "teacher"\nmode = "teacher"\n'
        )
        log = tmp / "gateway.log"
        start_gateway(procs, tmp / "stillhouse.toml", port, log, cpu=None)
        phases = {"room": send(port, 200, "room")}
        filled = fill(journal)
        phases["full"] = send(port, 300, "full")
        metrics_full = metrics_values(port)
        health_full = httpx.get(f"http://127.0.0.1:{port}/healthz").json()
        (journal / "filler").unlink()
        time.sleep(1.5)  # the next segment opens on the next rotation
        phases["freed"] = send(port, 200, "freed")
        metrics_end = wait_captures(port, expected=700)
        procs.stop_all()  # SIGTERM: the gateway drains and settles its journal
        rows = store_rows(db)["rows"]
        lines = log.read_text(errors="replace").splitlines()
        doc = {
            "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "journal_fs": "tmpfs, 256 KiB",
            "filler_bytes": filled,
            "answers": phases,
            "metrics_while_full": metrics_full,
            "healthz_while_full": health_full,
            "metrics_end": metrics_end,
            "rows_in_store": rows,
            "log_lines": [ln for ln in lines if "journal" in ln][:6],
            "journal_left": sorted(p.name for p in journal.iterdir()),
        }
    finally:
        procs.stop_all()
        subprocess.run(["umount", str(journal)], check=False)
    write_result("disk-full", doc)
    print(json.dumps(doc, indent=1))
    return 0 if rows == 700 else 1


if __name__ == "__main__":
    sys.exit(main())
