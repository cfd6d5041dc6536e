"""Verbs for data: curate, datasets, export, import."""

from __future__ import annotations

import datetime as dt
import sys

import click

from ..config import Config
from .common import config_option, main, print_json


@main.command()
@config_option
@click.option("--task", required=True, help="The task whose calls to curate.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def curate(config: Config, task: str, as_json: bool) -> None:
    """Curate a task's calls into an immutable, content-hashed fine-tuning dataset."""
    from ..curate.pipeline import curate as run_curate
    from ..store import open_store

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
    from ..store import open_store

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
@click.option("--force", is_flag=True, help="Follow --out when it is a symbolic link.")
def export(config: Config, dataset_id: str, out: str, split: str, force: bool) -> None:
    """Write a dataset split as OpenAI chat fine-tuning JSONL."""
    from ..curate import snapshot
    from ..store import open_store

    snapshot.export_target(out, force=force)  # refused before the store is opened
    with open_store(config.store.url) as store:
        dataset, n = snapshot.export(store, dataset_id, out, split, force=force)
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
@click.option("--skip-bad", is_flag=True, help="Import the readable records even if some are bad.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def import_(config: Config, fmt: str, file: str, task: str, skip_bad: bool, as_json: bool) -> None:
    """Import traces (OpenAI JSONL, Stored Completions, Langfuse, OpenTelemetry) as calls."""
    from ..curate.importers import parse_file
    from ..store import open_store

    result = parse_file(fmt, file, task)
    refused = bool(result.bad) and not skip_bad
    if not refused:
        with open_store(config.store.url) as store:
            store.insert_calls(result.calls)  # one transaction: all of them or none
    doc = {"task": task, "format": fmt, **result.to_json()}
    if refused:
        doc["imported"] = 0
    if as_json:
        print_json(doc)
    for b in result.bad:
        click.echo(f"{file}:{b.line}: {b.error}", err=True)
    if refused:
        click.echo(
            f"error: nothing imported: {len(result.bad)} bad records in {file} "
            "(fix them, or pass --skip-bad to import the rest)",
            err=True,
        )
        sys.exit(1)
    if as_json:
        return
    click.echo(
        f"imported {doc['imported']} calls into {task} ({len(result.bad)} bad, "
        f"{result.skipped} not model calls)"
    )
