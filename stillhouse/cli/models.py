"""Verbs for local models: models, serve-model."""

from __future__ import annotations

import click

from ..engine.sources import PACKAGED
from .common import main, print_json


def _size(n: int) -> str:
    return f"{n / 1e6:.0f} MB"


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option(
    "--prepare",
    "prepare",
    multiple=True,
    type=click.Choice(sorted(PACKAGED)),
    help="Convert this installed packaged model into the cache now (repeatable; needs the "
    "train extra), so its first use does not wait for it. `make demo` prepares the demo's two.",
)
@click.option(
    "--get-converter",
    is_flag=True,
    help="Fetch llama.cpp's convert_hf_to_gguf.py (from the installed llama-cpp-python's source "
    "on PyPI, ~77 MB) so that a Hugging Face folder can be served on llama.cpp and exported as "
    "GGUF. `make install` fetches it.",
)
def models(as_json: bool, prepare: tuple[str, ...], get_converter: bool) -> None:
    """List the local models that ship in PyPI packages and whether they run offline."""
    from ..engine.sources import list_models, local_directory, models_dir, resolve

    if get_converter:
        from ..engine.convert import fetch_converter

        click.echo("fetching llama.cpp's converter ...", err=True)
        click.echo(f"  converter: {fetch_converter()}", err=True)

    for name in prepare:
        click.echo(f"preparing {name} (converted once, then cached) ...", err=True)
        click.echo(f"  {name}: {local_directory(resolve(name))}", err=True)
    rows = list_models()
    if as_json:
        print_json({"models": rows, "cache": str(models_dir())})
        return
    for m in rows:
        state = "cached" if m["cached"] else "ready" if m["ready"] else "not installed"
        click.echo(f"{m['name']:<30} {_size(m['size_bytes']):>7}  {state:<13}  {m['source']}")
        if not m["ready"]:
            click.echo(f"{'':<30} install: {m['install']}")
    click.echo(f"cache: {models_dir()}", err=True)


@main.command("serve-model")
@click.argument("model")
@click.option(
    "--engine",
    default="torch",
    show_default=True,
    type=click.Choice(["torch", "llama-cpp"]),
    help="torch (transformers, batched) or llama-cpp (GGUF models, or a Hugging Face folder "
    "converted once; the cpu extra).",
)
@click.option(
    "--adapter",
    type=click.Path(),
    help="A LoRA adapter: a peft directory (either engine) or a GGUF adapter (llama-cpp).",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option(
    "--max-batch",
    default=8,
    show_default=True,
    type=click.IntRange(1, 256),
    help="torch: requests decoded together.",
)
@click.option(
    "--threads", type=click.IntRange(1, 256), help="CPU threads (default: torch's; llama-cpp: all)."
)
@click.option(
    "--dtype",
    default="float32",
    show_default=True,
    type=click.Choice(["float32", "bfloat16", "auto"]),
    help="Weights' precision; auto: bfloat16 where the CPU computes it natively.",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
def serve_model(
    model: str,
    engine: str,
    adapter: str | None,
    host: str,
    port: int,
    max_batch: int,
    threads: int | None,
    dtype: str,
    log_level: str,
) -> None:
    """Serve one local model (a name from `stillhouse models` or a path) over the OpenAI API."""
    import uvicorn

    from ..engine.sequence import Runtime
    from ..engine.server import create_model_app

    click.echo(f"loading {model}{f' + {adapter}' if adapter else ''} on {engine} ...", err=True)
    runtime: Runtime
    if engine == "llama-cpp":
        from ..engine.llamacpp import LlamaCppEngine

        runtime = LlamaCppEngine.load(model, adapter=adapter, threads=threads)
    else:
        from ..engine.runtime import Engine

        runtime = Engine.load(
            model, adapter=adapter, threads=threads, max_batch=max_batch, dtype=dtype
        )
    app = create_model_app(runtime, model, owns_engine=True)
    click.echo(f"stillhouse model server on http://{host}:{port}/v1  (model: {model})", err=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
