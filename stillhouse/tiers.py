"""Tiers: `tier = "cost"` or `"accuracy"` picks a task's defaults in one word.

A tier fills only the keys the TOML leaves out; a key written in the TOML always wins. Every
tiered value remembers where it came from ("toml", "tier:cost", "default") so `stillhouse status`
can say why a threshold is what it is. Nothing here reads the store or the network.
"""

from __future__ import annotations

from typing import Any, Literal

Tier = Literal["cost", "accuracy"]

# The tiered keys, as dotted paths inside [tasks.<t>], and each tier's value for them.
TIERS: dict[str, dict[str, Any]] = {
    "cost": {
        "gate.agreement": 0.90,
        "gate.kept_agreement": 0.95,
        # the operating point (issue #21's target): 90% of answers kept by the student
        "gate.min_coverage": 0.90,
        "rollout.final_share": 95,
    },
    "accuracy": {
        "gate.agreement": 0.92,
        "gate.kept_agreement": 0.98,
        "gate.min_coverage": 0.90,
        "rollout.final_share": 90,
    },
}

# The model pair each tier suggests; `stillhouse init --tier` writes it into the starter file
# (the teacher priced from the catalog, the student a packaged local model).
MODEL_PAIRS: dict[str, dict[str, str]] = {
    "cost": {"teacher": "gpt-4.1-mini", "student": "smollm2-135m-instruct"},
    "accuracy": {"teacher": "gpt-4.1", "student": "qwen2.5-coder-0.5b-instruct"},
}

TIERED_KEYS: tuple[str, ...] = tuple(TIERS["cost"])


def source_of(key: str, explicit: bool, tier: str | None) -> str:
    """Where a tiered key's value comes from: the TOML, the task's tier, or the built-in default."""
    if explicit:
        return "toml"
    if tier is not None:
        return f"tier:{tier}"
    return "default"


def tiered_starter(text: str, tier: str) -> str:
    """The starter stillhouse.toml for a tier: its model pair, `tier = ...`, and no explicit
    gate.agreement (so the tier's threshold applies)."""
    pair = MODEL_PAIRS[tier]
    lines = []
    for line in text.splitlines(keepends=True):
        if line.startswith('model = "gpt-4.1-mini"'):
            line = f'model = "{pair["teacher"]}"\n'
        elif line.startswith("price = {"):
            continue  # the catalog's price for the tier's teacher
        elif line.startswith("# A task is one narrow job"):
            lines.append(
                f"[models.student]                           # the {tier} tier's student\n"
                'provider = "local"                         # needs stillhouse[train]\n'
                f'model = "{pair["student"]}"\n\n'
            )
        elif line.startswith('mode = "auto"'):
            setting = f'tier = "{tier}"'
            line += f'student = "student"\n{setting:<43}# cost | accuracy\n'
        elif line.startswith("agreement = "):
            continue  # the tier's
        lines.append(line)
    return "".join(lines)
