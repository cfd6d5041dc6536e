"""The `stillhouse` command as a user runs it: a real subprocess, a real config file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import openai

from .conftest import start_serve
from .upstream import free_port, running_upstream


def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "stillhouse", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,  # a guard against hangs only: a loaded 2-core CI machine is slow
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_init_writes_a_starter_that_works(tmp_path: Path) -> None:
    run("init", cwd=tmp_path)
    assert "env::OPENAI_API_KEY" in (tmp_path / "stillhouse.toml").read_text()
    again = run("init", cwd=tmp_path, check=False)
    assert again.returncode == 1 and "already exists" in again.stderr
    status = json.loads(run("status", "--json", cwd=tmp_path).stdout)
    assert status == {
        "tasks": {
            "support": {
                "mode": "auto",
                "state": "grace",
                "stage": -1,
                "student_share": 0.0,
                "candidate": None,
                "reason": None,
                "teacher": "teacher",
                "student": None,
                "calls": 0,
                "teacher_calls": 0,
                "student_calls": 0,
                "grace": {
                    "conversations": 0,
                    "unique_intents": 0,
                    "intents_needed": 50,
                    "intent_method": "none",
                    "days": None,
                    "met": {
                        "min_conversations": False,
                        "min_unique_intents": False,
                        "max_days": False,
                    },
                    "ready": False,
                },
                "tier": None,
                "settings": {
                    "gate.agreement": {"value": 0.92, "source": "toml"},
                    "gate.kept_agreement": {"value": 0.97, "source": "default"},
                    "gate.min_coverage": {"value": None, "source": "default"},
                    "rollout.final_share": {"value": 100, "source": "default"},
                },
                "drift": None,  # read only once a student rolls out or serves
            }
        },
        "dropped": 0,
    }
    assert (tmp_path / "stillhouse.db").exists()


def test_user_mistakes_are_one_line_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "stillhouse.toml").write_text(
        '[models.t]\nprovider = "openai"\nmodel = "x"\n'
        '[tasks.s]\nteacher = "t"\n[tasks.s.gate]\nagreement = 2\n'
    )
    result = run("status", cwd=tmp_path, check=False)
    assert result.returncode == 1
    assert "tasks.s.gate.agreement" in result.stderr
    assert "Traceback" not in result.stderr
    missing = run("status", "--config", "nope.toml", cwd=tmp_path, check=False)
    assert missing.returncode == 1 and "no such file" in missing.stderr


def test_help_explains_each_verb(tmp_path: Path) -> None:
    out = run("--help", cwd=tmp_path).stdout
    for verb in ("init", "serve", "status", "calls"):
        assert verb in out
    assert "--config" in run("calls", "--help", cwd=tmp_path).stdout


def test_serve_captures_and_status_and_calls_report_it(tmp_path: Path) -> None:
    with running_upstream() as (base_url, _):
        (tmp_path / "stillhouse.toml").write_text(
            f'[store]\nurl = "sqlite:///calls.db"\n'
            f'[models.t]\nprovider = "openai-compatible"\nbase_url = "{base_url}"\n'
            f'model = "m"\n[tasks.support]\nteacher = "t"\n'
        )
        port = free_port()
        server = start_serve(tmp_path, port)
        try:
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x")
            for i in range(5):
                client.chat.completions.create(
                    model="support", messages=[{"role": "user", "content": f"question {i}"}]
                )
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(30)
    status = json.loads(run("status", "--json", cwd=tmp_path).stdout)
    assert status["tasks"]["support"]["calls"] == 5
    assert status["tasks"]["support"]["teacher_calls"] == 5
    assert status["dropped"] == 0
    listed = json.loads(
        run("calls", "--task", "support", "--limit", "3", "--json", cwd=tmp_path).stdout
    )
    assert len(listed["calls"]) == 3
    text = run("calls", cwd=tmp_path).stdout
    assert text.count("support") == 5 and "question 4" in text
