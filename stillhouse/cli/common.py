"""What every verb shares: the `main` group, `--config`, `--json` output, error handling."""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable
from typing import Any

import click
import orjson

from ..config import CONFIG_ENV, DEFAULT_CONFIG_NAME, load_config
from ..errors import StillhouseError

CONFIG_HELP = f"Config file (default: ${CONFIG_ENV} or ./{DEFAULT_CONFIG_NAME})."


# C0 and C1 controls (ESC starts a terminal escape sequence) and the bidirectional overrides
# that make text read other than it is stored.
_UNSAFE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """Captured text made safe for the operator's terminal: a caller's message can hold escape
    sequences that retitle the window, hide lines or fake output, so each control character is
    shown as its `\\x..`/`\\u....` escape instead (newlines and tabs stay)."""
    return _UNSAFE.sub(lambda m: repr(m.group())[1:-1], text)


def log_to_stderr(level: str = "info") -> None:
    """Show the product's own log lines (lifecycle moves, training progress) on stderr, as
    uvicorn shows its own: a server's operator sees what the loop is doing. A server's log is
    lines: the progress bars Hugging Face libraries draw when a model loads are turned off
    (before they are imported; HF_HUB_DISABLE_PROGRESS_BARS=0 brings them back)."""
    import logging
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

    logger = logging.getLogger("stillhouse")
    if not any(getattr(h, "stillhouse_cli", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.stillhouse_cli = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(level.upper())


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
