"""`wrk` for the maximum throughput (closed loop, where its low CPU cost matters): the Lua script
for the POST body and the parse of its report.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .loadgen import request_body


def write_post_script(path: Path, stream: bool) -> Path:
    path.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = [==[{request_body(stream).decode()}]==]\n"
    )
    return path


def parse_wrk(text: str) -> dict[str, Any]:
    def ms(value: str) -> float:
        m = re.match(r"([\d.]+)(us|ms|s|m)", value)
        if not m:
            return float("nan")
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[m.group(2)]
        return float(m.group(1)) * scale

    out: dict[str, Any] = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    out["rps"] = float(m.group(1)) if m else None
    m = re.search(r"(\d+) requests in", text)
    out["requests"] = int(m.group(1)) if m else None
    for q in ("50", "90", "99"):
        m = re.search(rf"^\s+{q}%\s+(\S+)", text, re.M)
        out[f"p{q}_ms"] = round(ms(m.group(1)), 3) if m else None
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    out["non_2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: (.*)", text)
    out["socket_errors"] = m.group(1).strip() if m else None
    return out
