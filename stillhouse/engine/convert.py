"""A Hugging Face model folder written as GGUF, by llama.cpp's own converter.

llama.cpp's `convert_hf_to_gguf.py` knows every architecture llama.cpp runs and writes the
tokenizer's metadata as llama.cpp reads it; Stillhouse runs it rather than imitating it. The
llama-cpp-python wheel does not install that script, but its source distribution vendors it:
`stillhouse models --get-converter` fetches that source (the installed version) from PyPI and keeps
the converter under home()/llama.cpp; `STILLHOUSE_LLAMA_CPP` may name a llama.cpp checkout instead.
The converter itself needs torch and sentencepiece (the train extra).
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from ..errors import ConfigError
from .sources import home, models_dir, stat_key

CONVERTER_ENV = "STILLHOUSE_LLAMA_CPP"
SCRIPT = "convert_hf_to_gguf.py"
KEEP = (SCRIPT, "conversion/", "gguf-py/", "LICENSE")  # what the script imports, and its licence
HOW = (
    "run `stillhouse models --get-converter` (fetches llama-cpp-python's source from PyPI, ~77 MB, "
    f"and keeps llama.cpp's {SCRIPT}), or set {CONVERTER_ENV} to a llama.cpp checkout"
)


def kept_dir() -> Path:
    return home() / "llama.cpp"


def converter_dir() -> Path:
    """The folder holding llama.cpp's converter: $STILLHOUSE_LLAMA_CPP, else the fetched copy."""
    named = os.environ.get(CONVERTER_ENV)
    if named:
        folder = Path(named).expanduser()
        if not (folder / SCRIPT).is_file():
            raise ConfigError(
                f"{CONVERTER_ENV}={named}: no {SCRIPT} there (name a llama.cpp checkout)"
            )
        return folder
    if (kept_dir() / SCRIPT).is_file():
        return kept_dir()
    raise ConfigError(f"writing a Hugging Face folder as GGUF needs llama.cpp's converter: {HOW}")


def fetch_converter() -> Path:
    """Fetch the installed llama-cpp-python's source distribution from PyPI and keep the converter
    it vendors under kept_dir() (written aside, then renamed). Nothing is fetched when that version
    is kept already."""
    try:
        version = importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(
            "the converter is taken from the installed llama-cpp-python's source: pip install "
            "'stillhouse[cpu]' first"
        ) from None
    target = kept_dir()
    stamp = target / "VERSION"
    if stamp.is_file() and stamp.read_text().strip() == version:
        return target
    with tempfile.TemporaryDirectory() as tmp:
        pip = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:"]
        got = subprocess.run(
            [*pip, f"llama-cpp-python=={version}", "-d", tmp],
            capture_output=True,
            text=True,
        )
        archives = sorted(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        if got.returncode != 0 or not archives:
            raise ConfigError(
                f"could not fetch llama-cpp-python {version}'s source from PyPI: "
                f"{_tail(got.stderr) or 'pip wrote no archive'}"
            )
        building = target.with_name(f"{target.name}.building-{os.getpid()}")
        shutil.rmtree(building, ignore_errors=True)
        prefix = archives[0].name.removesuffix(".tar.gz") + "/vendor/llama.cpp/"
        with tarfile.open(archives[0]) as tar:
            members = []
            for member in tar.getmembers():
                inner = member.name.removeprefix(prefix)
                if inner != member.name and inner.startswith(KEEP):
                    member.name = inner
                    members.append(member)
            tar.extractall(building, members=members, filter="data")
    if not (building / SCRIPT).is_file():
        shutil.rmtree(building, ignore_errors=True)
        raise ConfigError(f"llama-cpp-python {version}'s source has no vendor/llama.cpp/{SCRIPT}")
    (building / "VERSION").write_text(version + "\n")
    shutil.rmtree(target, ignore_errors=True)
    building.replace(target)
    return target


def _tail(text: str, lines: int = 3) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


def hf_to_gguf(folder: Path, out: Path, outtype: str = "f16") -> Path:
    """Write the Hugging Face model in `folder` as one GGUF file `out` (weights in `outtype`)."""
    script = converter_dir() / SCRIPT
    partial = out.with_name(out.name + ".partial")
    command = [sys.executable, str(script), str(folder), "--outfile", str(partial)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([*command, "--outtype", outtype], capture_output=True, text=True, env=env)
    if done.returncode != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        raise ConfigError(
            f"llama.cpp's converter could not write {folder} as GGUF: {_tail(done.stderr)}"
            + (" (it needs the train extra)" if "No module named" in done.stderr else "")
        )
    partial.replace(out)
    return out


def converted_gguf(folder: Path) -> Path:
    """`folder` written as GGUF once and kept under models_dir(), keyed by its files' sizes and
    times, so that serving it on llama.cpp or exporting it again does not convert again."""
    key = stat_key(sorted(p for p in folder.iterdir() if p.is_file()))
    target = models_dir() / f"{folder.name}-{key}.gguf"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        hf_to_gguf(folder, target)
    return target
