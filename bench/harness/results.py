"""Where results go and what they record about the run: the machine and the versions of what ran.
Every result is a timestamped JSON file in bench/results/ (committed when docs/ cite it).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

from .checkout import ROOT

RESULTS = ROOT / "bench" / "results"


def write_result(prefix: str, doc: dict[str, Any], *, suffix: str = "", indent: int = 1) -> Path:
    """bench/results/<prefix>-<local time><suffix>.json"""
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{prefix}-{dt.datetime.now():%Y%m%d-%H%M%S}{suffix}.json"
    out.write_text(json.dumps(doc, indent=indent, default=str))
    return out


def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def versions(litellm: str | None) -> dict[str, Any]:
    import importlib.metadata as md

    out: dict[str, Any] = {}
    for pkg in ("stillhouse", "uvicorn", "starlette", "httpx", "uvloop", "httptools", "orjson"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[pkg] = md.version(pkg)
    rev = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    out["git"] = rev.stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--short", "--", "stillhouse"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    # the gateway runs from this working tree (editable install): note uncommitted changes
    out["stillhouse_uncommitted"] = dirty.stdout.splitlines()[:20] if dirty.stdout else []
    wrk = shutil.which("wrk")
    out["wrk"] = wrk
    out["litellm"] = litellm
    return out
