"""Verbs for the lifecycle: mode, rollout, worker."""

from __future__ import annotations

import click

from ..config import Config
from ..errors import StillhouseError
from .common import StillhouseGroup, config_option, log_to_stderr, main, print_json


@main.command()
@config_option
@click.option("--task", required=True, help="The task whose mode to set.")
@click.option(
    "--force", is_flag=True, help="Allow mode student before the student has been stable."
)
@click.argument("mode", type=click.Choice(["teacher", "auto", "student"]))
def mode(config: Config, task: str, mode: str, force: bool) -> None:
    """Set a task's mode (teacher | auto | student); running gateways pick it up."""
    from ..lifecycle.manual import set_mode
    from ..store import open_store

    with open_store(config.store.url) as store:
        state = set_mode(store, config, task, mode, force=force)
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
        from ..lifecycle import events, manual
        from ..store import open_store

        verbs = {"advance": manual.advance, "pause": manual.pause, "rollback": manual.rollback}
        with open_store(config.store.url) as store:
            if name != "status":
                verbs[name](store, config, task)
            config.task(task)  # an unknown task is an error naming the known ones
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

    from ..lifecycle.controller import controller_lock
    from ..worker import controller

    ctl = controller(config)
    if once:
        with controller_lock(config.store.url) as held:
            if not held:
                raise StillhouseError("another controller holds the lock")
            for name, state in ctl.tick().items():
                click.echo(f"{name}: {state.state} share={state.share:.0%}  {state.reason}")
        return
    click.echo(f"stillhouse worker: ticking every {config.lifecycle.tick:g} s", err=True)
    log_to_stderr()
    with contextlib.suppress(KeyboardInterrupt):
        ctl.run(threading.Event())
