"""The names a user imports from `stillhouse`, and that the core import needs no torch."""

from __future__ import annotations

import subprocess
import sys

import stillhouse


def test_all_is_sorted_and_importable() -> None:
    assert stillhouse.__all__ == sorted(stillhouse.__all__)
    assert stillhouse.__all__ == [
        "BadRequest",
        "Config",
        "ConfigError",
        "HTTPError",
        "NotFound",
        "StillhouseError",
        "StoreError",
        "TraceStore",
        "UpstreamError",
        "create_app",
        "load_config",
        "open_store",
    ]
    for name in stillhouse.__all__:
        assert getattr(stillhouse, name) is not None


def test_gateway_imports_without_torch() -> None:
    code = (
        "import sys, stillhouse, stillhouse.cli, stillhouse.gateway.app; "
        "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
