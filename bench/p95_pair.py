"""What a serving student could do for the demo's p95, on the same engine as its teacher: the
demo's tickets sent at the demo's concurrency to the teacher alone, then to the trained student
alone (its adapter, its JSON Schema as the gateway adds it), each model behind its own
`stillhouse serve-model --engine llama-cpp`, one after the other so they never share the cores.

No gateway, no fallback, no shadow: the student's side is the best "after" the demo could show
(a fallback only adds the teacher's time to the student's). Issue 20's target is the demo's p95
after >= 4x lower than before; this says whether the pair can reach it on this machine at all.

    .venv/bin/python bench/p95_pair.py --dir /work/demo-full-s10 [--calls 160] [--concurrency 16]

`--dir`: a demo folder kept by `bench/demo.py --keep` (its stillhouse.toml and its store's
newest local candidate). p50 and p95 by `stillhouse.stats.percentile`, as the demo's own.
Raw: bench/results/p95_pair.json.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import ROOT
from harness.procs import Procs, free_port

from stillhouse.answers import agree
from stillhouse.config import load_config
from stillhouse.demo.tasks import TASKS
from stillhouse.stats import percentile
from stillhouse.store import open_store


def serve(procs: Procs, model: str, adapter: str | None, threads: int, logs: Path) -> str:
    """`stillhouse serve-model MODEL --engine llama-cpp` of this checkout, ready; its URL."""
    port = free_port()
    command = [sys.executable, "-m", "stillhouse", "serve-model", model, "--engine", "llama-cpp"]
    command += ["--port", str(port), "--threads", str(threads), "--log-level", "warning"]
    if adapter:
        command += ["--adapter", adapter]
    log = logs / f"{model}{'-adapter' if adapter else ''}.log"
    proc = procs.start(model, command, port, log, None, {"PYTHONPATH": str(ROOT)})
    procs.wait_ready(proc, "/healthz", timeout=300)
    return f"http://127.0.0.1:{port}"


def side(
    model: str,
    adapter: str | None,
    tickets: list[Any],
    *,
    concurrency: int,
    max_tokens: int,
    schema: dict[str, Any] | None,
    threads: int,
    logs: Path,
) -> dict[str, Any]:
    from openai import OpenAI

    procs = Procs(pin=False)
    try:
        url = serve(procs, model, adapter, threads, logs)
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
        procs.stop_all()
    seconds = [r[0] for r in results]
    return {
        "model": model,
        "adapter": adapter,
        "wall_s": round(wall, 2),
        "p50_s": round(percentile(seconds, 50) or 0.0, 3),
        "p95_s": round(percentile(seconds, 95) or 0.0, 3),
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
    config = load_config(args.dir / "stillhouse.toml")
    ((name, task_config),) = config.tasks.items()
    task = TASKS[name]
    schema = task_config.response_schema
    with open_store(config.store.url) as store:  # newest first
        trained = next(c for c in store.list_candidates(name) if c.backend == "local")
    adapter = trained.artifacts["adapter_dir"]
    labels = len(schema["properties"]["intent"]["enum"]) if schema else None
    examples = task.examples(args.seed, labels)
    tickets = [examples.next() for _ in range(args.calls)]
    teacher_model, student_model = (config.models[m].model for m in ("teacher", "student"))
    logs = Path(tempfile.mkdtemp(prefix="p95-pair-"))
    common: dict[str, Any] = {
        "concurrency": args.concurrency,
        "max_tokens": task.max_tokens,
        "threads": args.threads,
        "logs": logs,
    }
    teacher = side(teacher_model, None, tickets, schema=None, **common)
    student = side(student_model, adapter, tickets, schema=schema, **common)
    free = None
    if args.student_unconstrained:
        free = side(student_model, adapter, tickets, schema=None, **common)
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
        "candidate": trained.id,
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
