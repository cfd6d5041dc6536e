"""stillhouse.toml: defaults, dotted-key errors, secrets, relative paths, the starter file."""

from __future__ import annotations

from pathlib import Path

import pytest

from stillhouse.config import Secret, load_config, parse_config
from stillhouse.errors import ConfigError

MINIMAL = {
    "models": {"t": {"provider": "openai", "model": "gpt-4.1", "api_key": "env::OPENAI_KEY_X"}},
    "tasks": {"support": {"teacher": "t"}},
}


def test_defaults_follow_the_design() -> None:
    config = parse_config(MINIMAL)
    task = config.tasks["support"]
    assert task.mode == "auto"
    assert task.grace.min_conversations == 300 and task.grace.min_unique_intents == 50
    assert task.gate.agreement == 0.92
    assert task.rollout.stages == [10, 25, 50, 75, 90]
    assert task.rollout.min_dwell == 3600
    assert config.gateway.port == 8400


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        (
            {"tasks": {"support": {"teacher": "t", "gate": {"agreement": 1.5}}}},
            "tasks.support.gate.agreement: Input should be less than or equal to 1",
        ),
        (
            {"tasks": {"support": {"teacher": "t", "colour": "red"}}},
            "tasks.support.colour: unknown key",
        ),
        (
            {"tasks": {"support": {"teacher": "nobody"}}},
            "tasks.support.teacher: unknown model 'nobody' (models: t)",
        ),
        (
            {"tasks": {"support": {"teacher": "t", "rollout": {"stages": [50, 10]}}}},
            "tasks.support.rollout.stages: must be increasing percentages",
        ),
        (
            {"tasks": {"support": {"teacher": "t", "rollout": {"min_dwell": "soon"}}}},
            "tasks.support.rollout.min_dwell: must be a duration",
        ),
        (
            {"models": {"t": {"provider": "openai-compatible", "model": "m"}}},
            "models.t: provider 'openai-compatible' needs base_url",
        ),
        ({"store": {"url": "mysql://x"}}, "store.url: must start with sqlite:/// or postgresql://"),
        ({"tasks": {"support": {"teacher": "t", "mode": "robot"}}}, "tasks.support.mode:"),
    ],
)
def test_mistakes_name_the_dotted_key(patch: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({**MINIMAL, **patch})
    assert message in str(info.value)


def test_secrets_are_references_and_never_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    config = parse_config(MINIMAL)
    key = config.models["t"].api_key
    assert isinstance(key, Secret)
    with pytest.raises(ConfigError, match="OPENAI_KEY_X is not set"):
        key.reveal()
    monkeypatch.setenv("OPENAI_KEY_X", "sk-very-secret")
    assert key.reveal() == "sk-very-secret"
    assert "sk-very-secret" not in repr(config)
    assert "sk-very-secret" not in config.model_dump_json()


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    folder = tmp_path / "deploy"
    folder.mkdir()
    (folder / "stillhouse.toml").write_text('[store]\nurl = "sqlite:///data/calls.db"\n')
    config = load_config(folder / "stillhouse.toml")
    assert config.store.url == f"sqlite:///{folder / 'data' / 'calls.db'}"
    assert config.store.journal_dir == str(folder / "stillhouse.journal")


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no such file.*stillhouse init"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[store\nurl=1")
    with pytest.raises(ConfigError, match=r"bad\.toml"):
        load_config(bad)


def test_config_env_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "elsewhere.toml"
    path.write_text("[gateway]\nport = 9999\n")
    monkeypatch.setenv("STILLHOUSE_CONFIG", str(path))
    assert load_config().gateway.port == 9999
