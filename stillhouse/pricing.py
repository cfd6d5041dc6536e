"""What a call cost, from the model's price in stillhouse.toml (dollars per million tokens)."""

from __future__ import annotations

from .config import Price


def call_cost(
    price: Price | None, input_tokens: int | None, output_tokens: int | None, cached_tokens: int = 0
) -> float | None:
    """Dollars for one call; None when the model has no price or the usage is unknown."""
    if price is None or input_tokens is None or output_tokens is None:
        return None
    cached = min(cached_tokens, input_tokens)
    cached_rate = (
        price.cached_input_per_mtok
        if price.cached_input_per_mtok is not None
        else price.input_per_mtok
    )
    dollars = (
        (input_tokens - cached) * price.input_per_mtok
        + cached * cached_rate
        + output_tokens * price.output_per_mtok
    )
    return dollars / 1_000_000
