"""The `stillhouse` command: one group of thin verbs over library code.

A user's mistake (bad config, unreachable store) is one line on stderr and exit status 1, never a
traceback. Every verb with `--json` prints exactly one JSON document on stdout and nothing else.
"""

from __future__ import annotations

import datetime as dt
import functools
import sys
from collections.abc import Callable
from importlib import resources
from typing import Any

import click
import orjson

from .config import CONFIG_ENV, DEFAULT_CONFIG_NAME, Config, config_path, load_config
from .errors import StillhouseError

CONFIG_HELP = f"Config file (default: ${CONFIG_ENV} or ./{DEFAULT_CONFIG_NAME})."


def print_json(payload: Any) -> None:
    click.echo(orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode())


def config_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Give a verb `--config F` and hand it the loaded Config as `config`."""

    @click.option("--config", "config_file", type=click.Path(dir_okay=False), help=CONFIG_HELP)
    @functools.wraps(fn)
    def wrapper(config_file: str | None, **kwargs: Any) -> Any:
        return fn(config=load_config(config_file), **kwargs)

    return wrapper


class StillhouseGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except StillhouseError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(1)


@click.group(cls=StillhouseGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="stillhouse")
def main() -> None:
    """Stillhouse: distil your LLM traffic into a small student model, and swap it in safely."""


@main.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help=CONFIG_HELP)
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def init(config_file: str | None, force: bool) -> None:
    """Write a commented starter stillhouse.toml that works as it is."""
    target = config_path(config_file)
    if target.exists() and not force:
        raise StillhouseError(f"{target} already exists (use --force to overwrite)")
    text = resources.files("stillhouse").joinpath("starter.toml").read_text(encoding="utf-8")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    load_config(target)  # the starter must always parse
    click.echo(f"wrote {target}: next, `stillhouse serve --config {target}`", err=True)


@main.command()
@config_option
@click.option("--host", help="Address to listen on (default: gateway.host).")
@click.option("--port", type=int, help="Port to listen on (default: gateway.port).")
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
def serve(config: Config, host: str | None, port: int | None, log_level: str) -> None:
    """Run the OpenAI-compatible gateway (captures every call) and the lifecycle controller."""
    import threading

    import uvicorn

    from .gateway import create_app
    from .lifecycle.controller import Controller
    from .store import open_store

    open_store(config.store.url).close()  # fail now, with a clear message, if the store is wrong
    app = create_app(config)
    if config.lifecycle.controller:
        # Off the request path: a daemon thread that ticks and publishes into the app's table.
        controller = Controller(config, routing=app.state.routing)
        threading.Thread(
            target=controller.run,
            args=(threading.Event(),),
            name="stillhouse-lifecycle",
            daemon=True,
        ).start()
    host = host or config.gateway.host
    port = port or config.gateway.port
    click.echo(
        f"stillhouse gateway on http://{host}:{port}/v1  (tasks: "
        f"{', '.join(sorted(config.tasks)) or 'none'})",
        err=True,
    )
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=30,
    )


def task_status(config: Config) -> dict[str, Any]:
    """The `status --json` document."""
    from .curate.readiness import grace_readiness
    from .lifecycle import events
    from .store import open_store

    with open_store(config.store.url) as store:
        counts = store.count_calls()
        dropped = store.counter("captures_dropped")
        grace = grace_readiness(store, config)
        states = events.current_all(store)
    tasks = {}
    for name, task in sorted(config.tasks.items()):
        by_role = counts.get(name, {})
        lifecycle = states.get(name)
        tasks[name] = {
            "mode": (lifecycle.mode if lifecycle else None) or task.mode,
            "state": str(lifecycle.state) if lifecycle else "grace",
            "stage": lifecycle.stage if lifecycle else -1,
            "student_share": lifecycle.share if lifecycle else 0.0,
            "candidate": lifecycle.candidate_id if lifecycle else None,
            "reason": lifecycle.reason if lifecycle else None,
            "teacher": task.teacher,
            "student": task.student,
            "calls": sum(by_role.values()),
            "teacher_calls": by_role.get("teacher", 0),
            "student_calls": by_role.get("student", 0),
            "grace": grace[name],
        }
    return {"tasks": tasks, "dropped": dropped}


@main.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def status(config: Config, as_json: bool) -> None:
    """Show each task's mode, lifecycle state and captured calls."""
    doc = task_status(config)
    if as_json:
        print_json(doc)
        return
    if not doc["tasks"]:
        click.echo("no tasks configured")
    for name, t in doc["tasks"].items():
        click.echo(
            f"{name:<20} mode={t['mode']:<8} state={t['state']:<10} calls={t['calls']} "
            f"(teacher {t['teacher_calls']}, student {t['student_calls']})"
        )
        g = t["grace"]
        met = ", ".join(k for k, v in g["met"].items() if v) or "none yet"
        click.echo(
            f"{'':<20} grace: {g['conversations']} conversations, {g['unique_intents']} intents, "
            f"{g['days']} days; met: {met}"
        )
    click.echo(f"dropped captures: {doc['dropped']}")


def _preview(call_request: dict[str, Any], width: int = 48) -> str:
    users = [m for m in call_request.get("messages", []) if m.get("role") == "user"]
    content = users[-1].get("content") if users else ""
    text = (
        content
        if isinstance(content, str)
        else " ".join(p.get("text", "") for p in content or [] if isinstance(p, dict))
    )
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


@main.command()
@config_option
@click.option("--task", help="Only this task's calls.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def calls(config: Config, task: str | None, limit: int, as_json: bool) -> None:
    """List the most recent captured calls."""
    from .store import open_store

    with open_store(config.store.url) as store:
        found = store.list_calls(task=task, limit=limit)
    if as_json:
        print_json({"calls": [c.to_dict() for c in found]})
        return
    for c in found:
        when = dt.datetime.fromtimestamp(c.created_at).strftime("%Y-%m-%d %H:%M:%S")
        latency = f"{c.latency_ms:.0f}ms" if c.latency_ms is not None else "-"
        tokens = f"{c.input_tokens or 0}/{c.output_tokens or 0}"
        click.echo(
            f"{when}  {c.id}  {c.task:<12} {c.role:<7} {c.status:<5} {latency:>7} "
            f"{tokens:>9}  {_preview(c.request)}"
        )
    if not found:
        click.echo("no calls captured yet", err=True)


def _money(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"${value:,.{digits}f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}ms"


@main.command()
@config_option
@click.option("--task", help="Only this task.")
@click.option("--days", default=7.0, show_default=True, type=click.FloatRange(min=0.001))
@click.option(
    "--calls-per-day",
    type=click.FloatRange(min=0),
    help="Project monthly spend at this volume (default: the window's own rate).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def report(
    config: Config, task: str | None, days: float, calls_per_day: float | None, as_json: bool
) -> None:
    """Costs, savings vs all-teacher, latency and quality per task, model and route."""
    from .report import report as build_report
    from .store import open_store

    with open_store(config.store.url) as store:
        doc = build_report(store, config, task=task, days=days, calls_per_day=calls_per_day)
    if as_json:
        print_json(doc)
        return
    click.echo(f"last {days:g} days; prices: {doc['prices']['catalog_source']}")
    for name, t in doc["tasks"].items():
        c, q = t["costs"], t["quality"]
        click.echo(
            f"\n{name}: {c['requests']} requests, {c['calls_per_day']}/day; per call "
            f"{_money(c['cost_per_call'], 6)} vs all-teacher "
            f"{_money(c['teacher_cost_per_call'], 6)}"
        )
        click.echo(
            f"  monthly {_money(c['monthly'])} vs all-teacher {_money(c['teacher_monthly'])}: "
            f"saving {_money(c['saving_monthly'])}"
            + (f" ({c['saving_fraction']:.1%})" if c["saving_fraction"] is not None else "")
        )
        agreement = "-" if q["agreement"] is None else f"{q['agreement']:.3f}"
        fallback = "-" if q["fallback_rate"] is None else f"{q['fallback_rate']:.1%}"
        click.echo(f"  agreement {agreement} (n={q['agreement_samples']}), fallback {fallback}")
        for route, r in t["routes"].items():
            if r["calls"]:
                click.echo(f"  route {route:<9} {r['calls']:>7} calls  {_money(r['cost'], 4)}")
        for model, m in t["models"].items():
            lat, ttft = m["latency_ms"], m["ttft_ms"]
            click.echo(
                f"  model {model:<12} {m['calls']:>7} calls  {_money(m['cost_per_call'], 6)}/call"
                f"  p50 {_ms(lat['p50'])} p95 {_ms(lat['p95'])}"
                f"  ttft p50 {_ms(ttft['p50'])} p95 {_ms(ttft['p95'])}"
            )


@main.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help=CONFIG_HELP)
@click.option("--teacher", required=True, help="A model of stillhouse.toml or of the catalog.")
@click.option("--student", required=True, help="A model of stillhouse.toml or of the catalog.")
@click.option("--share", default=0.9, show_default=True, type=click.FloatRange(0, 1))
@click.option("--calls-per-day", required=True, type=click.FloatRange(min=0))
@click.option("--input-tokens", required=True, type=click.IntRange(min=0))
@click.option("--output-tokens", required=True, type=click.IntRange(min=0))
@click.option("--cached-tokens", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def costs(
    config_file: str | None,
    teacher: str,
    student: str,
    share: float,
    calls_per_day: float,
    input_tokens: int,
    output_tokens: int,
    cached_tokens: int,
    as_json: bool,
) -> None:
    """What-if: monthly cost of all-teacher against a teacher/student hybrid."""
    from .report import what_if

    path = config_path(config_file)
    config = load_config(path) if config_file or path.exists() else None
    doc = what_if(
        teacher,
        student,
        share=share,
        calls_per_day=calls_per_day,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_tokens=cached_tokens,
        config=config,
    )
    if as_json:
        print_json(doc)
        return
    t, s, h, sv = doc["teacher"], doc["student"], doc["hybrid"], doc["saving"]
    a = doc["assumptions"]
    click.echo(
        f"{a['calls_per_day']:,g} calls/day, {input_tokens} input + {output_tokens} output "
        f"tokens, {a['days_per_month']}-day month (prices as of {a['catalog_date']} unless set)"
    )
    click.echo(
        f"  all-teacher {t['model']:<20} {_money(t['per_call'], 6)}/call  "
        f"{_money(t['monthly'])}/month"
    )
    click.echo(
        f"  hybrid {share:.0%} {s['model']:<16} {_money(h['per_call'], 6)}/call  "
        f"{_money(h['monthly'])}/month"
    )
    click.echo(f"  saving {_money(sv['monthly'])}/month ({sv['fraction']:.1%})")


@main.command()
@config_option
@click.option("--task", required=True, help="The task whose calls to curate.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def curate(config: Config, task: str, as_json: bool) -> None:
    """Curate a task's calls into an immutable, content-hashed fine-tuning dataset."""
    from .curate.pipeline import curate as run_curate
    from .store import open_store

    with open_store(config.store.url) as store:
        doc = run_curate(store, config, task).to_json()
    if as_json:
        print_json(doc)
        return
    note = "" if doc["created"] else "  (identical to a stored snapshot)"
    click.echo(
        f"{doc['dataset']}  task={task}  train={doc['train']}  holdout={doc['holdout']}  "
        f"intents={doc['intents']}  from {doc['calls']} calls{note}"
    )
    removed = ", ".join(f"{k} {v}" for k, v in doc["removed"].items() if v)
    click.echo(f"removed: {removed or 'nothing'}")


@main.command()
@config_option
@click.option("--task", help="Only this task's datasets.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def datasets(config: Config, task: str | None, as_json: bool) -> None:
    """List curated dataset snapshots, newest first."""
    from .store import open_store

    with open_store(config.store.url) as store:
        found = store.list_datasets(task)
    if as_json:
        print_json({"datasets": [d.to_dict() for d in found]})
        return
    for d in found:
        when = dt.datetime.fromtimestamp(d.created_at).strftime("%Y-%m-%d %H:%M:%S")
        click.echo(
            f"{d.id}  {when}  {d.task:<12} train={d.train_count:<6} holdout={d.holdout_count:<6} "
            f"intents={d.intents_count}"
        )
    if not found:
        click.echo("no datasets yet: run `stillhouse curate --task T`", err=True)


@main.command()
@config_option
@click.option("--dataset", "dataset_id", required=True, help="Dataset id (see `datasets`).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="JSONL to write.")
@click.option(
    "--split", default="train", show_default=True, type=click.Choice(["train", "holdout", "all"])
)
def export(config: Config, dataset_id: str, out: str, split: str) -> None:
    """Write a dataset split as OpenAI chat fine-tuning JSONL."""
    from .curate import snapshot
    from .store import open_store

    with open_store(config.store.url) as store:
        dataset, n = snapshot.export(store, dataset_id, out, split)
    click.echo(f"wrote {n} {split} examples of {dataset.id} to {out}", err=True)


@main.command("import")
@config_option
@click.argument(
    "fmt",
    metavar="FORMAT",
    type=click.Choice(["openai-chat", "stored-completions", "langfuse", "otel"]),
)
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--task", required=True, help="The task the imported calls belong to.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def import_(config: Config, fmt: str, file: str, task: str, as_json: bool) -> None:
    """Import traces (OpenAI JSONL, Stored Completions, Langfuse, OpenTelemetry) as calls."""
    from .curate.importers import parse_file
    from .store import open_store

    result = parse_file(fmt, file, task)
    with open_store(config.store.url) as store:
        store.insert_calls(result.calls)
    doc = {"task": task, "format": fmt, **result.to_json()}
    if as_json:
        print_json(doc)
        return
    for b in result.bad:
        click.echo(f"{file}:{b.line}: skipped: {b.error}", err=True)
    click.echo(
        f"imported {doc['imported']} calls into {task} ({len(result.bad)} bad, "
        f"{result.skipped} not model calls)"
    )


def _size(n: int) -> str:
    return f"{n / 1e6:.0f} MB"


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def models(as_json: bool) -> None:
    """List the local models that ship in PyPI packages and whether they run offline."""
    from .engine.sources import list_models, models_dir

    rows = list_models()
    if as_json:
        print_json({"models": rows, "cache": str(models_dir())})
        return
    for m in rows:
        state = "cached" if m["cached"] else "ready" if m["ready"] else "not installed"
        click.echo(f"{m['name']:<30} {_size(m['size_bytes']):>7}  {state:<13}  {m['source']}")
        if not m["ready"]:
            click.echo(f"{'':<30} install: {m['install']}")
    click.echo(f"cache: {models_dir()}", err=True)


@main.command("serve-model")
@click.argument("model")
@click.option("--adapter", type=click.Path(file_okay=False), help="A LoRA adapter directory.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--max-batch", default=8, show_default=True, type=click.IntRange(1, 256))
@click.option("--threads", type=click.IntRange(1, 256), help="torch threads (default: torch's).")
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
def serve_model(
    model: str,
    adapter: str | None,
    host: str,
    port: int,
    max_batch: int,
    threads: int | None,
    log_level: str,
) -> None:
    """Serve one local model (a name from `stillhouse models` or a path) over the OpenAI API."""
    import uvicorn

    from .engine.runtime import Engine
    from .engine.server import create_model_app

    click.echo(f"loading {model}{f' + {adapter}' if adapter else ''} ...", err=True)
    engine = Engine.load(model, adapter=adapter, threads=threads, max_batch=max_batch)
    app = create_model_app(engine, model, owns_engine=True)
    click.echo(f"stillhouse model server on http://{host}:{port}/v1  (model: {model})", err=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)


@main.command()
@config_option
@click.option("--task", required=True, help="The task whose student to train.")
@click.option("--dataset", "dataset_id", help="Dataset id (default: curate the task's calls now).")
@click.option(
    "--backend",
    type=click.Choice(["local", "openai", "azure"]),
    help="Where to train (default: tasks.<task>.train.backend).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def train(
    config: Config, task: str, dataset_id: str | None, backend: str | None, as_json: bool
) -> None:
    """Train a student (local LoRA or a provider's fine-tuning job) and register it."""
    from .store import open_store
    from .train.run import train_task

    def log(line: str) -> None:
        click.echo(line, err=True)

    with open_store(config.store.url) as store:
        _, doc = train_task(
            store, config, task, dataset=dataset_id, backend=backend, progress=True, log=log
        )
    if as_json:
        print_json(doc)
        return
    loss = doc["train_loss"]
    click.echo(
        f"{doc['candidate']}  task={task}  dataset={doc['dataset']}  backend={doc['backend']}  "
        f"train_loss={'-' if loss is None else f'{loss:.4f}'}  {doc['seconds']:.1f}s"
    )
    where = doc["artifacts"].get("adapter_dir") or doc["artifacts"].get("fine_tuned_model")
    click.echo(f"student: {where}")


@main.command()
@config_option
@click.option("--task", help="Only this task's candidates.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def candidates(config: Config, task: str | None, as_json: bool) -> None:
    """List trained candidates, newest first."""
    from .store import open_store

    with open_store(config.store.url) as store:
        found = store.list_candidates(task)
    if as_json:
        print_json({"candidates": [c.to_dict() for c in found]})
        return
    for c in found:
        when = dt.datetime.fromtimestamp(c.created_at).strftime("%Y-%m-%d %H:%M:%S")
        loss = c.metrics.get("train_loss")
        click.echo(
            f"{c.id}  {when}  {c.task:<12} {c.backend:<6} {c.dataset_id}  "
            f"loss={'-' if loss is None else f'{loss:.4f}'}  {c.base_model}"
        )
    if not found:
        click.echo("no candidates yet: run `stillhouse train --task T`", err=True)


@main.command("eval")
@config_option
@click.option("--task", required=True, help="The task the candidate belongs to.")
@click.option("--candidate", "candidate_id", required=True, help="Candidate id (cand_…).")
@click.option(
    "--dataset", "dataset_id", help="Dataset whose holdout to use (default: the candidate's)."
)
@click.option("--concurrency", default=8, show_default=True, help="Requests in flight.")
@click.option("--seed", default=0, show_default=True, help="Bootstrap seed.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def eval_(
    config: Config,
    task: str,
    candidate_id: str,
    dataset_id: str | None,
    concurrency: int,
    seed: int,
    as_json: bool,
) -> None:
    """Evaluate a candidate against the teacher on the holdout, calibrate, apply the gate."""
    from .evaluate.report import table
    from .evaluate.run import evaluate
    from .store import open_store

    with open_store(config.store.url) as store:
        doc = evaluate(
            store,
            config,
            task,
            candidate_id,
            dataset=dataset_id,
            concurrency=concurrency,
            seed=seed,
            progress=not as_json,
        )
    if as_json:
        print_json(doc)
        return
    click.echo(table(doc), nl=False)
    click.echo(f"chart: {doc['report']['chart']}")


@main.command()
@config_option
@click.option("--task", required=True, help="The task to write a prompt for.")
@click.option("--dataset", "dataset_id", help="Dataset id (default: the task's newest).")
@click.option("--shots", default=8, show_default=True, help="Few-shot examples (one per intent).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def optimize(config: Config, task: str, dataset_id: str | None, shots: int, as_json: bool) -> None:
    """Register a prompt candidate: distilled system prompt + few-shot examples on the student."""
    from .optimize import optimize_task
    from .store import open_store

    with open_store(config.store.url) as store:
        _, doc = optimize_task(store, config, task, dataset=dataset_id, shots=shots)
    if as_json:
        print_json(doc)
        return
    click.echo(
        f"{doc['candidate']}  task={task}  dataset={doc['dataset']}  backend=prompt  "
        f"shots={len(doc['prompt']['examples'])}  {doc['base_model']}"
    )


@main.command()
@config_option
@click.argument("record_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def lineage(config: Config, record_id: str, as_json: bool) -> None:
    """Show where a dataset, candidate, eval run or release came from, and what came of it."""
    from .registry import descendants
    from .registry import lineage as chain_of
    from .store import open_store

    with open_store(config.store.url) as store:
        chain = chain_of(store, record_id)
        children = descendants(store, record_id)
    if as_json:
        print_json(
            {
                "id": record_id,
                "chain": [link.to_json() for link in chain],
                "children": [link.to_json() for link in children],
            }
        )
        return
    for depth, link in enumerate(chain):
        when = dt.datetime.fromtimestamp(link.created_at).strftime("%Y-%m-%d %H:%M:%S")
        arrow = "   " * depth + ("└─ " if depth else "")
        click.echo(f"{arrow}{link.kind:<9} {link.id}  {when}  config {link.config_hash[:12]}")
    for link in children:
        click.echo(f"{'   ' * len(chain)}→ {link.kind:<9} {link.id}")


@main.command()
@config_option
@click.option("--task", required=True, help="The task whose mode to set.")
@click.argument("mode", type=click.Choice(["teacher", "auto", "student"]))
def mode(config: Config, task: str, mode: str) -> None:
    """Set a task's mode (teacher | auto | student); running gateways pick it up."""
    from .lifecycle.controller import set_mode
    from .store import open_store

    with open_store(config.store.url) as store:
        state = set_mode(store, config, task, mode)
    click.echo(f"{task}: mode={state.mode} state={state.state}")


@main.group(cls=StillhouseGroup)
def rollout() -> None:
    """Show or steer a task's progressive rollout (status, advance, pause, rollback)."""


def _rollout_verb(name: str, help_text: str) -> None:
    @rollout.command(name=name, help=help_text)
    @config_option
    @click.option("--task", required=True, help="The task.")
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
    def verb(config: Config, task: str, as_json: bool) -> None:
        from .lifecycle import controller, events
        from .store import open_store

        with open_store(config.store.url) as store:
            if name != "status":
                getattr(controller, name)(store, config, task)
            if task not in config.tasks:
                raise StillhouseError(f"unknown task '{task}'")
            state = events.current(store, task)
            recent = events.history(store, task, limit=20)
        doc = {"task": task, **state.to_json(), "history": recent}
        if as_json:
            print_json(doc)
            return
        click.echo(
            f"{task}: state={state.state} share={state.share:.0%} "
            f"candidate={state.candidate_id or '-'}"
        )
        click.echo(f"  reason: {state.reason}")
        for event in recent[1:6]:
            click.echo(f"  before: {event['state']:<11} {event['share']:.0%}  {event['reason']}")


_rollout_verb("status", "Show the task's lifecycle state, student share and recent transitions.")
_rollout_verb("advance", "Move the task's rollout to its next stage now.")
_rollout_verb("pause", "Freeze the task where it is; the controller leaves it alone.")
_rollout_verb("rollback", "Send every session back to the teacher and collect data again.")


@main.command()
@config_option
@click.option("--once", is_flag=True, help="Run one pass and exit.")
def worker(config: Config, once: bool) -> None:
    """Run the lifecycle controller alone (one runs per store, through a lock)."""
    import contextlib
    import threading

    from .lifecycle.controller import Controller, controller_lock

    ctl = Controller(config)
    if once:
        with controller_lock(config.store.url) as held:
            if not held:
                raise StillhouseError("another controller holds the lock")
            for name, state in ctl.tick().items():
                click.echo(f"{name}: {state.state} share={state.share:.0%}  {state.reason}")
        return
    click.echo(f"stillhouse worker: ticking every {config.lifecycle.tick:g} s", err=True)
    with contextlib.suppress(KeyboardInterrupt):
        ctl.run(threading.Event())
