"""The review verb: a person marks queued answers right or wrong, or corrects them."""

from __future__ import annotations

from typing import Any

import click

from ..config import Config
from .common import StillhouseGroup, config_option, main, print_json, printable


def _text(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def _check_task(config: Config, task: str | None) -> None:
    if task is not None:
        config.task(task)  # an unknown task is an error naming the known ones


@main.group(cls=StillhouseGroup, invoke_without_command=True)
@config_option
@click.option("--task", help="Only this task's items.")
@click.option("--json", "as_json", is_flag=True, help="List pending items as one JSON document.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@click.pass_context
def review(ctx: click.Context, config: Config, task: str | None, as_json: bool, limit: int) -> None:
    """Review queued answers in the terminal: right, wrong, or a correction (--json: list)."""
    if ctx.invoked_subcommand is not None:
        return
    from .. import review as queue
    from ..store import open_store

    _check_task(config, task)
    with open_store(config.store.url) as store:
        queue.enqueue(store, config)
        pending = [queue.show(store, i) for i in queue.items(store, task, limit=limit)]
        if as_json:
            print_json({"items": pending})
            return
        if not pending:
            click.echo("nothing to review")
            return
        done = 0
        for doc in pending:
            click.echo(f"\n[{doc['id']}] task {doc['task']} ({doc['reason']})")
            for m in doc["messages"]:
                click.echo(f"  {printable(str(m['role']))}: {printable(_text(m['content']))}")
            click.echo(f"  answer: {printable(doc['answer'])}")
            if doc["teacher_answer"] is not None:
                click.echo(f"  teacher's answer: {printable(doc['teacher_answer'])}")
            choice = click.prompt(
                "right, wrong, correct, skip or quit",
                type=click.Choice(["r", "w", "c", "s", "q"]),
                show_choices=True,
            )
            if choice == "q":
                break
            if choice == "s":
                continue
            correction = click.prompt("correct answer") if choice == "c" else None
            queue.mark(store, doc["id"], "right" if choice == "r" else "wrong", correction)
            done += 1
        click.echo(f"{done} marked")


@review.command()
@config_option
@click.argument("item_id")
@click.option("--verdict", required=True, type=click.Choice(["right", "wrong"]))
@click.option("--correction", help="The right answer (with --verdict wrong): training data.")
@click.option("--reviewer", help="Who reviewed (kept with the verdict).")
def mark(
    config: Config, item_id: str, verdict: str, correction: str | None, reviewer: str | None
) -> None:
    """Mark one queued item right or wrong, optionally with a correction."""
    from .. import review as queue
    from ..store import open_store

    with open_store(config.store.url) as store:
        item = queue.mark(
            store, item_id, "right" if verdict == "right" else "wrong", correction, reviewer
        )
    click.echo(f"{item.id}: {item.status}")
