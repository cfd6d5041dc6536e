"""Where the code a benchmark runs comes from: the repository, its virtualenv, and a `git archive`
copy of a commit. A benchmark never measures the shared working tree's half-done edits by default.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / ".venv" / "bin"


def head_commit() -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def export_commit(commit: str, src: Path) -> Path:
    """Write `commit`'s stillhouse/ and tests/upstream.py into `src` (`git archive`): what a
    benchmark runs, untouched by half-done edits in the shared working tree."""
    src.mkdir()
    archive = subprocess.run(
        ["git", "archive", commit, "stillhouse", "tests/upstream.py"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    return src
