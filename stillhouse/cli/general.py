"""The general verb: build the forgetting guard's general set for a task."""

from __future__ import annotations

import click

from ..config import Config
from .common import config_option, main, print_json


@main.command()
@config_option
@click.option("--task", required=True, help="The task whose teacher answers the general set.")
@click.option("--count", type=click.IntRange(min=1), help="Prompts to use (default general.count).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def general(config: Config, task: str, count: int | None, as_json: bool) -> None:
    """Have the task's teacher answer general prompts, for the forgetting guard."""
    from ..general import build
    from ..store import open_store

    with open_store(config.store.url) as store:
        doc = build(store, config, task, count=count)
    if as_json:
        print_json(doc)
        return
    click.echo(
        f"{doc['task']}: {doc['answered']} answered now, {doc['answered_before']} before, "
        f"{doc['errors']} errors, of {doc['prompts']} prompts"
    )
