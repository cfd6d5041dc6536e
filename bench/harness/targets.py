"""Starting what a benchmark measures, as a user would: the loopback OpenAI-wire upstream
(tests/upstream.py), `stillhouse serve` with a given config, and LiteLLM's proxy for the side by
side. Each is started through `Procs` (so it is always stopped) and returned once it answers.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from .checkout import VENV_BIN
from .procs import Proc, Procs


def start_upstream(
    procs: Procs,
    src: Path,
    port: int,
    log: Path,
    *,
    latency_ms: float | None = None,
    cpu: int | None,
    env: dict[str, str] | None = None,
) -> Proc:
    """tests/upstream.py from `src` (a checkout), with its own default latency unless given."""
    argv = [str(VENV_BIN / "python"), str(src / "tests" / "upstream.py"), "--port", str(port)]
    if latency_ms is not None:
        argv += ["--latency-ms", str(latency_ms)]
    proc = procs.start("upstream", argv, port, log, cpu=cpu, env=env)
    procs.wait_ready(proc, "/v1/models", 30)
    return proc


def start_gateway(
    procs: Procs,
    config: Path,
    port: int,
    log: Path,
    *,
    cpu: int | None,
    env: dict[str, str] | None = None,
) -> Proc:
    """`stillhouse serve` on `config`: it runs the code that `env`'s PYTHONPATH puts first."""
    argv = [
        str(VENV_BIN / "stillhouse"),
        "serve",
        "--config",
        str(config),
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    proc = procs.start("gateway", argv, port, log, cpu=cpu, env=env)
    procs.wait_ready(proc, "/healthz", 30)
    return proc


def start_litellm(
    procs: Procs, venv: Path, upstream: int, port: int, tmp: Path, *, cpu: int | None
) -> tuple[Proc, str]:
    """LiteLLM's proxy in one worker with one model_list entry at the upstream; it captures
    nothing, so it does less work per request than the gateway. Returns it and its version."""
    cfg = tmp / "litellm.yaml"
    cfg.write_text(
        "model_list:\n"
        "  - model_name: bench\n"
        "    litellm_params:\n"
        "      model: openai/upstream-model\n"
        f"      api_base: http://127.0.0.1:{upstream}/v1\n"
        "      api_key: sk-bench\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
    )
    env = {
        "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": "ERROR",
        "LITELLM_TELEMETRY": "False",
    }
    argv = [
        str(venv / "bin" / "litellm"),
        "--config",
        str(cfg),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    proc = procs.start("litellm", argv, port, tmp / "litellm.log", cpu=cpu, env=env)
    procs.wait_ready(proc, "/health/liveliness", 120)
    ver = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import importlib.metadata as m; print(m.version('litellm'))",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return proc, ver.stdout.strip()
