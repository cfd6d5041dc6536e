"""Documentation that must match the code: every config key is in the reference."""

from __future__ import annotations

import typing
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel

from stillhouse.config import Config

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _model_in(annotation: object) -> type[BaseModel] | None:
    candidates = [annotation, *typing.get_args(annotation)]
    for c in candidates:
        if isinstance(c, type) and issubclass(c, BaseModel):
            return c
    return None


def config_keys(model: type[BaseModel] = Config, prefix: str = "") -> Iterator[str]:
    """Every dotted key, with `<model>`/`<task>` standing for the names of named tables."""
    for name, field in model.model_fields.items():
        path = prefix + name
        annotation = field.annotation
        if typing.get_origin(annotation) is dict:
            sub = _model_in(typing.get_args(annotation)[1])
            if sub is not None:
                yield from config_keys(sub, f"{path}.<{name.removesuffix('s')}>.")
                continue
        yield path
        sub = _model_in(annotation)
        if sub is not None:
            yield from config_keys(sub, path + ".")


def test_every_config_key_is_documented() -> None:
    text = (DOCS / "configuration.md").read_text()
    keys = list(config_keys())
    assert len(keys) > 40
    missing = [k for k in keys if f"`{k}`" not in text]
    assert not missing, f"undocumented keys in docs/configuration.md: {missing}"


def test_the_starter_file_parses_and_uses_documented_keys(tmp_path: Path) -> None:
    from importlib import resources

    from stillhouse.config import load_config

    path = tmp_path / "stillhouse.toml"
    path.write_text(resources.files("stillhouse").joinpath("starter.toml").read_text())
    config = load_config(path)
    assert config.tasks["support"].teacher == "teacher"
