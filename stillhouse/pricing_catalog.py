"""Published prices of common hosted models: the fallback when a [models.x] table has no `price`.

Prices move: these are a snapshot (CATALOG_DATE, CATALOG_SOURCE), to verify before relying on
them. A `price` in stillhouse.toml always wins over this table.
"""

from __future__ import annotations

import functools
import re

from .config import Price

CATALOG_DATE = "2025-07-01"
CATALOG_SOURCE = (
    "the providers' public pricing pages (openai.com/api/pricing, "
    "anthropic.com/pricing#api) as published on 2025-07-01; verify before relying on them"
)

# model -> (input, cached input, output), dollars per 1M tokens. "ft:<base>" is the inference
# price of a model fine-tuned from <base>. Anthropic's cached input is its cache-read price.
_TABLE: dict[str, tuple[float, float, float]] = {
    # OpenAI
    "gpt-4.1": (2.00, 0.50, 8.00),
    "gpt-4.1-mini": (0.40, 0.10, 1.60),
    "gpt-4.1-nano": (0.10, 0.025, 0.40),
    "gpt-4o": (2.50, 1.25, 10.00),
    "gpt-4o-mini": (0.15, 0.075, 0.60),
    "o3": (2.00, 0.50, 8.00),
    "o4-mini": (1.10, 0.275, 4.40),
    "ft:gpt-4.1": (3.00, 0.75, 12.00),
    "ft:gpt-4.1-mini": (0.80, 0.20, 3.20),
    "ft:gpt-4.1-nano": (0.20, 0.05, 0.80),
    "ft:gpt-4o": (3.75, 1.875, 15.00),
    "ft:gpt-4o-mini": (0.30, 0.15, 1.20),
    # Anthropic
    "claude-opus-4": (15.00, 1.50, 75.00),
    "claude-sonnet-4": (3.00, 0.30, 15.00),
    "claude-3-7-sonnet": (3.00, 0.30, 15.00),
    "claude-3-5-sonnet": (3.00, 0.30, 15.00),
    "claude-3-5-haiku": (0.80, 0.08, 4.00),
    "claude-3-haiku": (0.25, 0.03, 1.25),
}

CATALOG: dict[str, Price] = {
    name: Price(input_per_mtok=i, cached_input_per_mtok=c, output_per_mtok=o)
    for name, (i, c, o) in _TABLE.items()
}

# Provider names carry dates and aliases the table does not: gpt-4.1-2025-04-14,
# claude-sonnet-4-20250514, claude-3-5-haiku-latest, ft:gpt-4o-mini-2024-07-18:org::id.
_SUFFIX = re.compile(r"(-\d{4}-\d{2}-\d{2}|-\d{8}|-latest)$")


def _base(name: str) -> str:
    return _SUFFIX.sub("", name.strip().lower())


@functools.cache
def catalog_key(model: str) -> str | None:
    """The catalog entry a provider's model name falls under, or None."""
    name = model.strip().lower()
    if name.startswith("ft:"):
        key = "ft:" + _base(name.split(":")[1])
    else:
        key = _base(name.rsplit("/", 1)[-1])  # openai/gpt-4.1 (routers) -> gpt-4.1
    return key if key in CATALOG else None


def catalog_price(model: str) -> Price | None:
    """The published price of `model` (a provider's name for it), or None when unknown."""
    key = catalog_key(model)
    return CATALOG[key] if key is not None else None
