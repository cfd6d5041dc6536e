"""The demo verb: the whole lifecycle on local models, in a fresh folder (stillhouse/demo/)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..demo.tasks import TASKS
from .common import main, print_json


@main.command()
@click.option(
    "--fast",
    is_flag=True,
    help="8 intents, 96 calls and fewer training steps: the loop in about 9 minutes on 2 CPU "
    "cores, with a holdout too small to earn the cost tier's gates (docs/benchmarks.md).",
)
@click.option(
    "--dir",
    "folder",
    default="stillhouse-demo",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Working folder, emptied at the start of each run.",
)
@click.option(
    "--task",
    "task_name",
    type=click.Choice(list(TASKS)),
    default="triage",
    show_default=True,
    help="The demo's app: triage (a ticket's intent and priority) or extract (an order's "
    "number, amount, currency and date from a customer's message, null when absent).",
)
@click.option("--teacher", help="Teacher model spec (default qwen2.5-coder-0.5b-instruct).")
@click.option("--student", help="Student base model spec (default smollm2-135m-instruct).")
@click.option(
    "--intents",
    type=click.IntRange(1, 22),
    help="How many of the task's intents (triage 22, extract's message kinds 8) the requests "
    "use (default all; --fast: 8).",
)
@click.option(
    "--calls",
    type=click.IntRange(20, 100_000),
    help="Teacher calls in grace (default: the profile's, 700; --fast: 96). The cost tier's "
    "gates need a holdout (30% of the schema-valid ones) of about 150.",
)
@click.option(
    "--rounds",
    type=click.IntRange(1, 10),
    default=1,
    show_default=True,
    help="Grace rounds: after a candidate fails the gate the demo sends another round of calls "
    "(new distinct ones) and the lifecycle curates, trains and judges again, up to this many.",
)
@click.option(
    "--engine",
    type=click.Choice(["auto", "torch", "llama-cpp"]),
    default="auto",
    show_default=True,
    help="The local engine teacher and student run on: llama-cpp (GGUF models, several times "
    "faster on a CPU; the cpu extra, which `make demo` installs) or torch; auto: llama-cpp "
    "when llama-cpp-python is installed, else torch. Training is torch either way.",
)
@click.option("--train", "train_json", help="JSON object of train settings to override.")
@click.option("--json", "as_json", is_flag=True, help="Print only the final figures as JSON.")
def demo(
    fast: bool,
    folder: Path,
    task_name: str,
    teacher: str | None,
    student: str | None,
    intents: int | None,
    calls: int | None,
    rounds: int,
    engine: str,
    train_json: str | None,
    as_json: bool,
) -> None:
    """Watch a teacher's traffic become a LoRA student that takes most of it over, on this
    machine: grace, curation, a prompt candidate, training, validation, rollout stages, serving
    with fallback. Progress goes to stderr; the report (or --json) to stdout."""
    from dataclasses import replace

    from ..demo import report
    from ..demo.driver import run
    from ..demo.setup import FAST, FULL, STUDENT, TEACHER

    try:
        train = json.loads(train_json) if train_json else None
    except json.JSONDecodeError as err:
        raise click.UsageError(f"--train is not JSON: {err}") from None
    if train is not None and not isinstance(train, dict):
        raise click.UsageError("--train must be a JSON object")
    task = TASKS[task_name]
    if intents is not None and intents > len(task.labels):
        raise click.UsageError(f"--intents: the {task.name} task has {len(task.labels)}")
    _check_can_run(teacher or TEACHER, student or STUDENT)
    if engine == "auto":
        import importlib.util

        engine = "llama-cpp" if importlib.util.find_spec("llama_cpp") else "torch"
    if engine == "llama-cpp":
        from ..engine.llamacpp import import_llama_cpp
        from ..errors import ConfigError

        try:
            import_llama_cpp()  # refused now, not after the folder is emptied
        except ConfigError as err:
            raise click.ClickException(f"--engine llama-cpp: {err}") from None

    def say(line: str) -> None:
        click.echo(line, err=True)

    say(f"engine: {engine} (teacher and student; training is torch)")
    profile = FAST if fast else FULL
    profile = replace(profile, rounds=rounds)
    if calls is not None:
        profile = replace(profile, grace_calls=calls)
    try:
        doc = run(
            folder.resolve(),
            profile,
            say=say,
            teacher=teacher,
            student=student,
            train=train,
            intents=intents,
            engine=engine,
            task=task,
        )
    except FileExistsError as err:
        raise click.ClickException(str(err)) from None
    doc["chart"] = str(report.chart(doc, folder.resolve()))
    (folder / "demo.json").write_text(json.dumps(doc, indent=2) + "\n")
    if as_json:
        print_json(doc)
    else:
        click.echo(report.text(doc))


def _check_can_run(*models: str) -> None:
    """Refuse at once, not minutes in: the ML stack missing, or a model that is not there."""
    from importlib.util import find_spec

    missing = [m for m in ("torch", "transformers", "peft") if find_spec(m) is None]
    if missing:
        raise click.ClickException(
            f"the demo runs and trains models in this process and needs {', '.join(missing)}: "
            "pip install torch==2.13.0 (the CPU build), then pip install 'stillhouse[train]' "
            "(or run `make demo`)"
        )
    from ..engine.sources import check_available

    for spec in models:
        check_available(spec)
