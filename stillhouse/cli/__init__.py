"""The `stillhouse` command: one group of thin verbs over library code.

A user's mistake (bad config, unreachable store) is one line on stderr and exit status 1, never a
traceback. Every verb with `--json` prints exactly one JSON document on stdout and nothing else.

Verbs live by family: gateway (init, serve, status, calls), data (curate, datasets, export,
import), models (models, serve-model), students (train, candidates, eval, optimize, lineage),
lifecycle (mode, rollout, worker), reports (report, costs), review, general, demo.
"""

from . import data, demo, gateway, general, lifecycle, models, reports, review, students
from .common import main

__all__ = [
    "data",
    "demo",
    "gateway",
    "general",
    "lifecycle",
    "main",
    "models",
    "reports",
    "review",
    "students",
]
