"""What a call cost: the model's `price` in stillhouse.toml, else the published catalog.

Prices are dollars per million tokens; a self-hosted model may instead give its GPU's hourly cost
and measured throughput, which become a per-token price here. Pure functions: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import ModelConfig, Price
from .pricing_catalog import catalog_key, catalog_price


@dataclass(frozen=True, slots=True)
class Rates:
    """Dollars per million input, cached input and output tokens."""

    input: float
    cached_input: float
    output: float


def rates(price: Price) -> Rates:
    """A price as per-million-token rates; a GPU hour is spread over every token it processes."""
    if price.gpu_hour is not None and price.tokens_per_second:
        per_mtok = price.gpu_hour / 3600 / price.tokens_per_second * 1_000_000
        return Rates(per_mtok, per_mtok, per_mtok)
    cached = (
        price.cached_input_per_mtok
        if price.cached_input_per_mtok is not None
        else price.input_per_mtok
    )
    return Rates(price.input_per_mtok, cached, price.output_per_mtok)


def price_for(model: ModelConfig) -> Price | None:
    """The model's configured price, else the catalog's for its provider name, else None."""
    if model.price is not None:
        return model.price
    return catalog_price(model.model)


def price_source(model: ModelConfig) -> str:
    """Where price_for's answer comes from: config, catalog:<key> or none."""
    if model.price is not None:
        return "config"
    key = catalog_key(model.model)
    return f"catalog:{key}" if key else "none"


def call_cost(
    price: Price | None, input_tokens: int | None, output_tokens: int | None, cached_tokens: int = 0
) -> float | None:
    """Dollars for one call; None when the model has no price or the usage is unknown."""
    if price is None or input_tokens is None or output_tokens is None:
        return None
    r = rates(price)
    cached = min(cached_tokens, input_tokens)
    dollars = (input_tokens - cached) * r.input + cached * r.cached_input + output_tokens * r.output
    return dollars / 1_000_000
