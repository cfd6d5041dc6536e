"""Verbs for the gateway and its captures: init, serve, status, calls."""

from __future__ import annotations

import datetime as dt
from importlib import resources
from typing import Any

import click

from ..config import Config, config_path, load_config
from ..errors import StillhouseError
from .common import CONFIG_HELP, config_option, log_to_stderr, main, print_json, printable


@main.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help=CONFIG_HELP)
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@click.option(
    "--tier",
    type=click.Choice(["cost", "accuracy"]),
    help="Start from a tier's model pair and thresholds.",
)
def init(config_file: str | None, force: bool, tier: str | None) -> None:
    """Write a commented starter stillhouse.toml that works as it is."""
    target = config_path(config_file)
    if target.exists() and not force:
        raise StillhouseError(f"{target} already exists (use --force to overwrite)")
    text = resources.files("stillhouse").joinpath("starter.toml").read_text(encoding="utf-8")
    if tier is not None:
        from ..tiers import tiered_starter

        text = tiered_starter(text, tier)
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

    from ..gateway import create_app
    from ..store import open_store
    from ..worker import controller

    open_store(config.store.url).close()  # fail now, with a clear message, if the store is wrong
    log_to_stderr(log_level)
    app = create_app(config)
    if config.lifecycle.controller:
        # Off the request path: a daemon thread that ticks and publishes into the app's table.
        threading.Thread(
            target=controller(config, app.state.routing).run,
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
        # past it, new requests get 503 rather than piling up (the body's own time limit is
        # gateway.read_timeout, enforced by the app)
        limit_concurrency=config.gateway.max_connections,
    )


def task_status(config: Config) -> dict[str, Any]:
    """The `status --json` document."""
    from ..curate.readiness import grace_readiness
    from ..lifecycle import events
    from ..lifecycle.states import State
    from ..store import open_store

    with open_store(config.store.url) as store:
        counts = store.count_calls()
        dropped = store.counter("captures_dropped")
        grace = grace_readiness(store, config)
        states = events.current_all(store)
        drift = {
            name: _drift(store, name, config.tasks[name], lifecycle.detail.get("dataset"))
            for name, lifecycle in states.items()
            if name in config.tasks and lifecycle.state in (State.SERVING, State.ROLLOUT)
        }
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
            "tier": task.tier,
            "settings": task.settings(),
            "drift": drift.get(name),
        }
    return {"tasks": tasks, "dropped": dropped}


def _drift(store: Any, name: str, task: Any, dataset: str | None) -> dict[str, Any]:
    """The drift monitor's reading now: drifted, insufficient evidence, or no drift."""
    from ..lifecycle.monitor import check_drift
    from ..worker import DefaultSteps

    found = check_drift(store, name, task, dataset, DefaultSteps().cluster)
    state = "drifted" if found.drifted else "insufficient evidence" if found.insufficient else "ok"
    return {"state": state, "reason": found.reason, **found.detail}


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
            f"{'':<20} grace: {g['conversations']} conversations, "
            f"{g['unique_intents']} intents ({g['intent_method']}, {g['intents_needed']} needed), "
            f"{g['days']} days; met: {met}"
        )
        settings = ", ".join(
            f"{key}={s['value']} ({s['source']})" for key, s in t["settings"].items()
        )
        click.echo(f"{'':<20} tier: {t['tier'] or '-'}; {settings}")
        if t["drift"] is not None:
            click.echo(f"{'':<20} drift: {t['drift']['reason']}")
    click.echo(f"dropped captures: {doc['dropped']}")


def _preview(call_request: dict[str, Any], width: int = 48) -> str:
    users = [m for m in call_request.get("messages", []) if m.get("role") == "user"]
    content = users[-1].get("content") if users else ""
    text = (
        content
        if isinstance(content, str)
        else " ".join(p.get("text", "") for p in content or [] if isinstance(p, dict))
    )
    text = printable(" ".join(str(text).split()))
    return text if len(text) <= width else text[: width - 1] + "…"


@main.command()
@config_option
@click.option("--task", help="Only this task's calls.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def calls(config: Config, task: str | None, limit: int, as_json: bool) -> None:
    """List the most recent captured calls."""
    from ..store import open_store

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
