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
    consistency = doc.get("teacher_consistency") or {}
    if consistency.get("agreement") is not None:
        low, high = consistency["agreement_ci"]
        click.echo(
            f"teacher consistency over retellings: {consistency['agreement']:.1%} "
            f"[{low:.1%}, {high:.1%}] of {consistency['examples']} (a student's ceiling: "
            "docs/quality.md)"
        )


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
@click.option("--dataset", "dataset_id", help="Dataset id (see `datasets`): write it as JSONL.")
@click.option("--candidate", "candidate_id", help="Candidate id (see `candidates`): as GGUF.")
@click.option("--out", required=True, type=click.Path(), help="JSONL file, or GGUF folder.")
@click.option(
    "--split", default="train", show_default=True, type=click.Choice(["train", "holdout", "all"])
)
@click.option(
    "--format", "fmt", default=None, type=click.Choice(["jsonl", "gguf"]), help="jsonl or gguf."
)
@click.option("--merge", is_flag=True, help="gguf: merge the LoRA into the base weights.")
@click.option("--quant", type=click.Choice(["q8_0", "q4_k_m"]), help="gguf --merge: quantise.")
@click.option("--force", is_flag=True, help="Follow --out when it is a symbolic link.")
def export(
    config: Config,
    dataset_id: str | None,
    candidate_id: str | None,
    out: str,
    split: str,
    fmt: str | None,
    merge: bool,
    quant: str | None,
    force: bool,
) -> None:
    """Write a dataset split as fine-tuning JSONL, or a candidate as GGUF for llama.cpp/Ollama."""
    from ..curate import snapshot
    from ..store import open_store

    if (dataset_id is None) == (candidate_id is None):
        raise click.UsageError("give one of --dataset (JSONL) or --candidate (GGUF)")
    if candidate_id is not None:
        if fmt not in (None, "gguf"):
            raise click.UsageError("a candidate is exported as --format gguf")
        _export_candidate(config, candidate_id, out, merge, quant)
        return
    if fmt not in (None, "jsonl") or merge or quant:
        raise click.UsageError("a dataset is exported as --format jsonl")
    snapshot.export_target(out, force=force)  # refused before the store is opened
    with open_store(config.store.url) as store:
        dataset, n = snapshot.export(store, dataset_id or "", out, split, force=force)
    click.echo(f"wrote {n} {split} examples of {dataset.id} to {out}", err=True)


def _export_candidate(
    config: Config, candidate_id: str, out: str, merge: bool, quant: str | None
) -> None:
    from pathlib import Path

    from ..engine.export import export_gguf
    from ..engine.sources import sha256_of
    from ..errors import ConfigError
    from ..registry import lineage, record_export
    from ..store import open_store

    with open_store(config.store.url) as store:
        candidate = store.get_candidate(candidate_id)
        if candidate is None:
            raise ConfigError(f"no candidate {candidate_id!r} (see `stillhouse candidates`)")
        chain = [link.to_json() for link in lineage(store, candidate_id)]
    adapter = candidate.artifacts.get("adapter_dir")
    if candidate.backend != "local" or not adapter:
        raise ConfigError(f"candidate {candidate_id} has no LoRA adapter to export (a remote job)")
    click.echo(f"exporting {candidate_id} ({candidate.base_model} + LoRA) to {out} ...", err=True)
    done = export_gguf(
        candidate.base_model,
        adapter,
        Path(out),
        merge=merge,
        quant=quant,
        manifest={"candidate": candidate_id, "task": candidate.task, "lineage": chain},
    )
    files = {
        p.name: {"bytes": p.stat().st_size, "sha256": sha256_of([p])}
        for p in (done.model, done.adapter, done.modelfile, done.manifest)
        if p is not None
    }
    with open_store(config.store.url) as store:
        record = record_export(
            store,
            candidate_id,
            fmt="gguf",
            path=str(Path(out).resolve()),
            config={"base_model": candidate.base_model, "merge": merge, "quant": quant},
            files=files,
        )
    for path in (done.model, done.adapter, done.modelfile, done.manifest):
        if path is not None:
            click.echo(f"  {path}", err=True)
    click.echo(f"recorded as {record.id} (stillhouse lineage {record.id})", err=True)
    click.echo(f"then: cd {out} && ollama create {candidate.task} -f Modelfile", err=True)


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
