"""Verbs for students: train, candidates, eval, optimize, lineage."""

from __future__ import annotations

import datetime as dt

import click

from ..config import Config
from .common import config_option, main, print_json


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
    from ..store import open_store
    from ..train.run import train_task

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
    metrics = doc["metrics"]
    if metrics.get("validation_examples") and doc.get("validation_loss") is not None:
        agreement = metrics.get("validation_agreement")
        judged = "" if agreement is None else f", agreement {agreement:.1%}"
        click.echo(
            f"validation: {metrics['validation_examples']} of the train split's examples "
            f"(loss {doc['validation_loss']:.4f}{judged}; the holdout is left to the gate)"
        )
    where = doc["artifacts"].get("adapter_dir") or doc["artifacts"].get("fine_tuned_model")
    click.echo(f"student: {where}")


@main.command()
@config_option
@click.option("--task", help="Only this task's candidates.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def candidates(config: Config, task: str | None, as_json: bool) -> None:
    """List trained candidates, newest first."""
    from ..store import open_store

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
    from ..evaluate.report import table
    from ..evaluate.run import evaluate
    from ..lifecycle.events import serving_student
    from ..store import open_store

    with open_store(config.store.url) as store:
        doc = evaluate(
            store,
            config,
            task,
            candidate_id,
            dataset=dataset_id,
            incumbent=serving_student(store, task, exclude=candidate_id),
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
@click.option(
    "--shots",
    type=click.IntRange(0, 64),
    help="Few-shot examples, one per intent (default: tasks.<task>.optimize.shots, 8).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def optimize(
    config: Config, task: str, dataset_id: str | None, shots: int | None, as_json: bool
) -> None:
    """Register a prompt candidate: distilled system prompt + few-shot examples on the student."""
    from ..optimize import optimize_task
    from ..store import open_store

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
    """Show where a dataset, candidate, eval run, release or export came from, and what came
    of it."""
    from ..registry import descendants
    from ..registry import lineage as chain_of
    from ..store import open_store

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
