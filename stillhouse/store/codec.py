"""The codec of the store's JSON columns: one pair, `encode` and `decode`, for every one of them.

SQLite holds a JSON column as text and PostgreSQL as JSONB (psycopg hands back dicts and lists),
so a value read from either goes through `decode` before it leaves the store: no caller ever
decodes a column, or needs to know which backend it came from.
"""

from __future__ import annotations

from typing import Any

import orjson

# Every JSON column of the schema, by table (see schema.py: the columns typed {json}).
JSON_COLUMNS_OF: dict[str, frozenset[str]] = {
    "calls": frozenset({"request", "response", "metadata"}),
    "datasets": frozenset({"removed", "config"}),
    "dataset_examples": frozenset({"example"}),
    "candidates": frozenset({"config", "artifacts", "serving", "metrics"}),
    "eval_runs": frozenset({"metrics"}),
    "releases": frozenset({"config"}),
    "exports": frozenset({"config", "files"}),
    "lifecycle_events": frozenset({"detail"}),
    "responses": frozenset({"conversation", "response"}),
    "fine_tuning_jobs": frozenset({"hyperparameters", "metadata", "error", "serving", "result"}),
    "fine_tuning_events": frozenset({"data"}),
}


def encode(value: Any) -> str | None:
    """A value as a JSON column stores it (None stays NULL)."""
    return None if value is None else orjson.dumps(value).decode()


def decode(value: Any) -> Any:
    """A JSON column's value as Python: text (SQLite) is parsed, JSONB (PostgreSQL) already is."""
    return orjson.loads(value) if isinstance(value, str | bytes) else value


def agreement(value: Any) -> float:
    """A stored `shadow_agreement` score as a 0/1 outcome. Scores are stored 0/1 (answers.agree);
    one stored before that (a difflib ratio) counts as agreement only when perfect. Every read of
    the score goes through here, so gates, drift and reports see one meaning."""
    return 1.0 if float(value) >= 1.0 else 0.0
