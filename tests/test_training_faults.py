"""Training and adapter faults: a `stillhouse train` killed with SIGKILL mid-way resumes from its
checkpoint; a corrupt or mismatched adapter is refused with a clear error, never served."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from stillhouse.errors import AdapterError

from .models import seed_intent_calls
from .test_cli import run
from .test_train import write_local_config


def _checkpoint_step(run_dir: Path) -> int | None:
    import torch

    for folder in (run_dir / "checkpoint", run_dir / "checkpoint.old"):
        path = folder / "state.pt"
        if path.is_file():
            try:
                return int(torch.load(path, weights_only=False)["step"])
            except Exception:  # being written right now
                return None
    return None


@pytest.mark.slow
def test_a_train_run_killed_mid_way_resumes_from_its_checkpoint(
    tiny_base: Path, tmp_path: Path
) -> None:
    store_url = f"sqlite:///{tmp_path / 'calls.db'}"
    seed_intent_calls(store_url, 48)
    write_local_config(tmp_path, store_url, tiny_base)
    config = tmp_path / "stillhouse.toml"
    config.write_text(config.read_text() + "checkpoint_every = 1\nmax_steps = 30\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "stillhouse", "train", "--task", "support", "--json"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    step = None
    while step is None or step < 3:
        assert proc.poll() is None, "training ended before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint after 120 s"
        time.sleep(0.05)
        runs = list((tmp_path / "runs").glob("*"))
        step = _checkpoint_step(runs[0]) if runs else None
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    killed_at = _checkpoint_step(runs[0])
    assert killed_at is not None and 3 <= killed_at < 30
    assert json.loads(run("candidates", "--json", cwd=tmp_path).stdout)["candidates"] == []

    doc = json.loads(run("train", "--task", "support", "--json", cwd=tmp_path).stdout)
    assert doc["artifacts"]["run_dir"] == str(runs[0])  # the same run, picked up again
    assert doc["metrics"]["resumed_at"] >= killed_at
    assert doc["metrics"]["steps"] == 30
    assert not (runs[0] / "checkpoint").exists() and not (runs[0] / "checkpoint.old").exists()
    listed = json.loads(run("candidates", "--json", cwd=tmp_path).stdout)["candidates"]
    assert [c["id"] for c in listed] == [doc["candidate"]]


# -- corrupt adapters ----------------------------------------------------------------------------
def _broken_copies(adapter: Path, root: Path) -> dict[str, tuple[Path, str]]:
    """name -> (a damaged copy of `adapter`, what the error must say)."""
    out: dict[str, tuple[Path, str]] = {}

    def copy(name: str) -> Path:
        target = root / name
        shutil.copytree(adapter, target)
        return target

    weights = "adapter_model.safetensors"
    p = copy("truncated")
    data = (p / weights).read_bytes()
    (p / weights).write_bytes(data[: len(data) // 2])
    out["truncated"] = (p, "adapter_model.safetensors is corrupt")
    p = copy("garbage-weights")
    (p / weights).write_bytes(b"\x00" * 64)
    out["garbage-weights"] = (p, "adapter_model.safetensors is corrupt")
    p = copy("no-weights")
    (p / weights).unlink()
    out["no-weights"] = (p, "no weights")
    p = copy("bad-config")
    (p / "adapter_config.json").write_text('{"peft_type": "LORA", ')
    out["bad-config"] = (p, "adapter_config.json is unreadable")
    p = copy("no-config")
    (p / "adapter_config.json").unlink()
    out["no-config"] = (p, "adapter_config.json is missing")
    p = copy("wrong-shape")
    from safetensors.torch import load_file, save_file

    tensors = load_file(p / weights)
    save_file({k: v[..., :1].contiguous() for k, v in tensors.items()}, p / weights)
    out["wrong-shape"] = (p, "does not fit this base model")
    out["missing"] = (root / "nowhere", "no such folder")
    return out


def test_a_corrupt_adapter_is_refused_with_a_clear_error(
    tiny_base: Path, trained: Any, tmp_path: Path
) -> None:
    from stillhouse.engine.runtime import load_model

    load_model(str(tiny_base), adapter=trained.adapter_dir)  # the whole one loads
    for name, (folder, says) in _broken_copies(trained.adapter_dir, tmp_path).items():
        with pytest.raises(AdapterError) as info:
            load_model(str(tiny_base), adapter=folder)
        assert str(folder) in str(info.value) and says in str(info.value), name


def test_serve_model_refuses_a_corrupt_adapter_in_one_line(
    tiny_base: Path, trained: Any, tmp_path: Path
) -> None:
    broken = _broken_copies(trained.adapter_dir, tmp_path)["truncated"][0]
    result = run(
        "serve-model",
        str(tiny_base),
        "--adapter",
        str(broken),
        "--port",
        "1",
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: adapter {broken}: adapter_model.safetensors is corrupt: "
        + errors[0].split("is corrupt: ", 1)[1]
    ]
