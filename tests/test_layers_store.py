"""The store owns its SQL (STYLE.md 17): outside stillhouse/store/ no module writes SQL, reaches for
a store's connection or its private plumbing, or imports a database driver. It asks the store's
named methods, and writes go through its one `transaction()`."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "stillhouse"
STORE = PACKAGE / "store"

# SQL as it is written in this codebase: upper-case keywords (prose says "select", not "SELECT").
SQL = re.compile(
    r"\b(SELECT|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|CREATE\s+(TABLE|INDEX)|"
    r"DROP\s+TABLE|ALTER\s+TABLE|BEGIN\s+IMMEDIATE|COMMIT|ROLLBACK)\b|\bpg_\w+\("
)
PRIVATE = {"conn", "_sql", "_calls", "_begin_write"}  # a store's insides
CALLS = {"query", "commit", "rollback", "execute", "executemany", "cursor"}  # raw statements
DRIVERS = {"sqlite3", "psycopg", "psycopg2"}


def violations(source: str, name: str = "<source>") -> list[str]:
    """Each place in `source` that bypasses the store, as `name:line: what`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        what = None
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            match = SQL.search(node.value)
            if match:
                what = f"SQL ({match.group(0)!r})"
        elif isinstance(node, ast.Attribute) and node.attr in PRIVATE:
            what = f".{node.attr}"
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in CALLS
        ):
            what = f".{node.func.attr}(...)"
        elif isinstance(node, ast.Import | ast.ImportFrom):
            modules = (
                [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            )
            hit = [m for m in modules if m and m.split(".")[0] in DRIVERS]
            if hit:
                what = f"import {hit[0]}"
        if what:
            found.append(f"{name}:{getattr(node, 'lineno', '?')}: {what}")
    return found


def test_the_checker_catches_each_way_around_the_store() -> None:
    source = (
        "import psycopg\n"
        "rows = store.query('SELECT COUNT(*) FROM calls')\n"
        "store._begin_write()\n"
        "store.conn.execute(store._sql(f'UPDATE {t} SET x = ?'), ())\n"
        "store.conn.commit()\n"
        "store._calls('WHERE id = ?', ())\n"
        "lock = 'SELECT pg_try_advisory_lock(1)'\n"
    )
    found = " ".join(violations(source))
    for what in (
        "import psycopg",
        ".query(...)",
        "'SELECT'",
        "._begin_write",
        ".conn",
        "._sql",
        ".commit(...)",
        "._calls",
    ):
        assert what in found, what
    assert violations("rows = store.report_rows(since, task)\nx = 'select a model'\n") == []


def test_no_sql_outside_the_store() -> None:
    modules = [p for p in PACKAGE.rglob("*.py") if STORE not in p.parents]
    assert len(modules) > 50  # the walk found the package
    found = [
        v
        for path in sorted(modules)
        for v in violations(path.read_text(encoding="utf-8"), str(path.relative_to(PACKAGE)))
    ]
    assert found == [], "ask the store a named question instead:\n" + "\n".join(found)
