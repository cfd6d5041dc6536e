"""What every verb shares: the `main` group, `--config`, `--json` output, error handling."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import click
import orjson

from ..config import CONFIG_ENV, DEFAULT_CONFIG_NAME, load_config
from ..errors import StillhouseError

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
