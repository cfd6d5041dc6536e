"""Tiers: `tier = "cost" | "accuracy"` fills the gate threshold, the kept-agreement target and the
rollout's final share; a key in the TOML wins; `stillhouse status` says where each value came
from; a rollout under a tier ends at the tier's final share (the real controller on loopback)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stillhouse.config import parse_config
from stillhouse.errors import ConfigError
from stillhouse.lifecycle import manual as ctl
from stillhouse.lifecycle.states import State
from stillhouse.store import open_store
from stillhouse.tiers import TIERS

from .test_cli import run
from .test_lifecycle import World, roll_to_first_stage
from .test_lifecycle import world as world  # the fixture, re-exported

MODELS = {"t": {"provider": "openai", "model": "x"}, "s": {"provider": "openai", "model": "y"}}


def _task(**task: object):
    return parse_config({"models": MODELS, "tasks": {"a": {"teacher": "t", **task}}}).tasks["a"]


@pytest.mark.parametrize("tier", ["cost", "accuracy"])
def test_a_tier_sets_the_defaults_it_names(tier: str) -> None:
    task = _task(tier=tier)
    assert task.gate.agreement == TIERS[tier]["gate.agreement"]
    assert task.gate.kept_agreement == TIERS[tier]["gate.kept_agreement"]
    assert task.rollout.final_share == TIERS[tier]["rollout.final_share"]
    assert {s["source"] for s in task.settings().values()} == {f"tier:{tier}"}


def test_the_toml_overrides_a_tier_and_no_tier_keeps_the_defaults() -> None:
    task = _task(tier="cost", gate={"agreement": 0.8}, rollout={"final_share": 100})
    settings = task.settings()
    assert settings["gate.agreement"] == {"value": 0.8, "source": "toml"}
    assert settings["gate.kept_agreement"] == {"value": 0.95, "source": "tier:cost"}
    assert settings["rollout.final_share"] == {"value": 100, "source": "toml"}
    plain = _task().settings()
    assert plain["gate.agreement"] == {"value": 0.92, "source": "default"}
    assert plain["rollout.final_share"] == {"value": 100, "source": "default"}
    with pytest.raises(ConfigError, match=r"tasks\.a\.tier"):
        _task(tier="cheap")
    with pytest.raises(ConfigError, match=r"tasks\.a\.rollout\.final_share"):
        _task(rollout={"final_share": 0})


def test_status_shows_the_values_in_force_and_their_source(tmp_path: Path) -> None:
    (tmp_path / "stillhouse.toml").write_text(
        '[models.t]\nprovider = "openai"\nmodel = "x"\n'
        '[tasks.support]\nteacher = "t"\ntier = "accuracy"\n'
        "[tasks.support.gate]\nkept_agreement = 0.99\n"
    )
    doc = json.loads(run("status", "--json", cwd=tmp_path).stdout)["tasks"]["support"]
    assert doc["tier"] == "accuracy"
    assert doc["settings"] == {
        "gate.agreement": {"value": 0.92, "source": "tier:accuracy"},
        "gate.kept_agreement": {"value": 0.99, "source": "toml"},
        "gate.min_coverage": {"value": 0.9, "source": "tier:accuracy"},
        "rollout.final_share": {"value": 90, "source": "tier:accuracy"},
    }
    text = run("status", cwd=tmp_path).stdout
    assert "tier: accuracy; gate.agreement=0.92 (tier:accuracy)" in text
    assert "gate.kept_agreement=0.99 (toml)" in text


def test_a_rollout_under_a_tier_ends_at_its_final_share(world: World) -> None:
    w = world
    task = w.config.tasks["support"]
    tiered = parse_config(
        {
            "store": {"url": w.config.store.url},
            "models": {k: m.model_dump(exclude_none=True) for k, m in w.config.models.items()},
            "tasks": {
                "support": {
                    "teacher": "teacher",
                    "student": "student",
                    "tier": "accuracy",
                    "gate": {"agreement": task.gate.agreement},
                    "grace": task.grace.model_dump(),
                    "rollout": {
                        "stages": [25, 95],
                        "min_samples": 4,
                        "min_dwell": 0,
                        "max_latency_ratio": 100,
                    },
                    "routing": {"shadow_rate": 1.0},
                    "curate": {"intents": "metadata"},
                }
            },
        }
    )
    assert tiered.tasks["support"].rollout.final_share == 90
    w.config = tiered
    w.controller.config = tiered
    roll_to_first_stage(w)
    with open_store(w.config.store.url) as store:
        ctl.advance(store, w.config, "support")
    assert w.state().share == 0.9  # the 95% stage is capped at the tier's final share
    w.ask(32)  # enough shadow comparisons for the interval to clear the 0.6 gate
    assert w.tick() is State.SERVING
    assert w.state().share == 0.9  # serving keeps 10% of sessions on the teacher


@pytest.mark.parametrize("tier", ["cost", "accuracy"])
def test_init_with_a_tier_writes_its_model_pair(tmp_path: Path, tier: str) -> None:
    from stillhouse.config import load_config
    from stillhouse.tiers import MODEL_PAIRS

    run("init", "--tier", tier, cwd=tmp_path)
    config = load_config(tmp_path / "stillhouse.toml")
    task = config.tasks["support"]
    assert task.tier == tier
    assert config.models[task.teacher].model == MODEL_PAIRS[tier]["teacher"]
    assert task.student is not None
    assert config.models[task.student].model == MODEL_PAIRS[tier]["student"]
    assert {s["source"] for s in task.settings().values()} == {f"tier:{tier}"}
