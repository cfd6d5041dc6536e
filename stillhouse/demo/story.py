"""The demo's story, read back from the store for its chart: the users' requests by route over
time, the lifecycle states as time spans, each gate's agreement with its interval, and the
coverage curve the newest fallback threshold was chosen on."""

from __future__ import annotations

from typing import Any

from ..report import read_rows, route_of
from ..store.base import TraceStore
from .figures import user_requests

BUCKETS = 24
ROUTES = ("teacher", "student", "fallback")


def story(
    store: TraceStore, task: str, spans: list[tuple[float, str]], started: float
) -> dict[str, Any]:
    """`spans`: (when, state) as the demo saw the lifecycle move, oldest first."""
    rows = user_requests(read_rows(store, started, task))
    end = max([r.created_at for r in rows] + [started + 1.0])
    width = (end - started) / BUCKETS
    traffic = {route: [0] * BUCKETS for route in ROUTES}
    for r in rows:
        i = min(BUCKETS - 1, int((r.created_at - started) / width))
        traffic[route_of(r)][i] += 1  # user requests: never a shadow
    states = [(t - started, label) for t, label in spans]
    gates = []
    newest: dict[str, Any] = {}
    for doc, backend in reversed(store.eval_metrics(task)):  # oldest first
        gates.append(
            {
                "kind": "prompt" if backend == "prompt" else "LoRA",
                "agreement": doc.get("agreement"),
                "agreement_ci": doc.get("agreement_ci"),
                "passed": doc.get("passed"),
                "bar": ((doc.get("gate") or {}).get("rules") or {}).get("agreement"),
            }
        )
        if backend != "prompt":
            newest = doc
    return {
        "seconds": end - started,
        "traffic": traffic,
        "states": [{"t": round(t, 1), "state": label} for t, label in states],
        "gates": gates,
        "coverage": (newest.get("coverage") or {}).get("overall") or [],
        "operating_point": newest.get("operating_point"),
    }
