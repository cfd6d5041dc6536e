"""What a serving student could do for the demo's p95, on the same engine as its teacher: the
demo's tickets sent at the demo's concurrency to the teacher alone, then to the trained student
alone (its adapter, its JSON Schema as the gateway adds it), each model behind its own
`stillhouse serve-model --engine llama-cpp`, one after the other so they never share the cores.

No gateway, no fallback, no shadow: the student's side is the best "after" the demo could show
(a fallback only adds the teacher's time to the student's). Issue 20's target is the demo's p95
after >= 4x lower than before; this says whether the pair can reach it on this machine at all.

    .venv/bin/python bench/p95_pair.py --dir /work/demo-full-s10 [--calls 160] [--concurrency 16]

`--dir`: a demo folder kept by `bench/demo.py --keep` (its stillhouse.toml and its store's
newest local candidate). Raw: bench/results/p95_pair.json.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import platform
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stillhouse.answers import agree  # noqa: E402
from stillhouse.demo.tasks import TASKS  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(model: str, adapter: str | None, threads: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [sys.executable, "-m", "stillhouse", "serve-model", model, "--engine", "llama-cpp"]
    command += ["--port", str(port), "--threads", str(threads), "--log-level", "warning"]
    if adapter:
        command += ["--adapter", adapter]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"serve-model {model} exited: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        try:
            urllib.request.urlopen(url + "/healthz", timeout=2)
            return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"serve-model {model} did not start")


def side(
    model: str,
    adapter: str | None,
    tickets: list[Any],
    *,
    concurrency: int,
    max_tokens: int,
    schema: dict[str, Any] | None,
    threads: int,
) -> dict[str, Any]:
    from openai import OpenAI

    proc, url = serve(model, adapter, threads)
    try:
        client = OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=900)
        extra: dict[str, Any] = {}
        if schema is not None:  # what the gateway adds to a student's request
            extra["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": schema, "strict": True},
            }
        client.chat.completions.create(  # warm: the model loaded, the prompt cache filled
            model=model, messages=tickets[0].messages, max_tokens=max_tokens, temperature=0, **extra
        )

        def one(ticket: Any) -> tuple[float, str]:
            started = time.perf_counter()
            reply = client.chat.completions.create(
                model=model,
                messages=ticket.messages,
                max_tokens=max_tokens,
                temperature=0,
                **extra,
            )
            return time.perf_counter() - started, reply.choices[0].message.content or ""

        started = time.perf_counter()
        with cf.ThreadPoolExecutor(concurrency) as pool:
            results = list(pool.map(one, tickets))
        wall = time.perf_counter() - started
    finally:
        proc.terminate()
        proc.wait(30)
    seconds = sorted(r[0] for r in results)
    return {
        "model": model,
        "adapter": adapter,
        "wall_s": round(wall, 2),
        "p50_s": round(statistics.median(seconds), 3),
        "p95_s": round(seconds[min(len(seconds) - 1, int(0.95 * len(seconds)))], 3),
        "answers": [r[1] for r in results],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--calls", type=int, default=160)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/p95_pair.json")
    parser.add_argument(
        "--student-unconstrained",
        action="store_true",
        help="also time the student without its schema (llama.cpp's grammar off)",
    )
    args = parser.parse_args()
    config = tomllib.loads((args.dir / "stillhouse.toml").read_text())
    ((name, task_cfg),) = config["tasks"].items()
    task = TASKS[name]
    schema = task_cfg.get("response_schema")
    db = sqlite3.connect(args.dir / "stillhouse.db")
    candidate, artifacts = db.execute(
        "SELECT id, artifacts FROM candidates WHERE backend = 'local' ORDER BY created_at DESC"
    ).fetchone()
    adapter = json.loads(artifacts)["adapter_dir"]
    labels = len(task_cfg["response_schema"]["properties"]["intent"]["enum"]) if schema else None
    examples = task.examples(args.seed, labels)
    tickets = [examples.next() for _ in range(args.calls)]
    model = config["models"]
    common: dict[str, Any] = {
        "concurrency": args.concurrency,
        "max_tokens": task.max_tokens,
        "threads": args.threads,
    }
    teacher = side(model["teacher"]["model"], None, tickets, schema=None, **common)
    student = side(model["student"]["model"], adapter, tickets, schema=schema, **common)
    free = None
    if args.student_unconstrained:
        free = side(model["student"]["model"], adapter, tickets, schema=None, **common)
    metric = "json" if schema else "exact"
    pairs = zip(teacher["answers"], student["answers"], strict=True)
    agreed = [agree(metric, t, s) for t, s in pairs]
    doc = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "settings": {**vars(args), "dir": str(args.dir), "out": str(args.out)},
        "candidate": candidate,
        "teacher": {k: v for k, v in teacher.items() if k != "answers"},
        "student": {k: v for k, v in student.items() if k != "answers"},
        "student_unconstrained": free and {k: v for k, v in free.items() if k != "answers"},
        "p95_ratio": round(teacher["p95_s"] / student["p95_s"], 2),
        "p50_ratio": round(teacher["p50_s"] / student["p50_s"], 2),
        "student_agrees": round(sum(agreed) / len(agreed), 3),
    }
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
