"""Value domains as one-line errors: each module states its own keys' rules with these, so every message
names the key, the value and what is allowed, in the same words."""

from __future__ import annotations

import math

from resnet_jax.errors import ConfigError


def one_of(key: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not allowed; choose one of: {', '.join(allowed)}")


def positive(key: str, value: float, *, allow_zero: bool = False) -> None:
    """A finite number > 0 (or >= 0)."""
    ok = (
        isinstance(value, (int, float)) and math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    )
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{key}={value} is not allowed; it must be a finite number {bound}")


def in_interval(
    key: str, value: float, low: float, high: float, *, include_low: bool = True, include_high: bool = False
) -> None:
    """`value` in the interval from `low` to `high` ([low, high) unless told otherwise)."""
    above = value >= low if include_low else value > low
    below = value <= high if include_high else value < high
    if not (isinstance(value, (int, float)) and math.isfinite(value) and above and below):
        interval = f"{'[' if include_low else '('}{low}, {high}{']' if include_high else ')'}"
        raise ConfigError(f"{key}={value} is not allowed; it must lie in {interval}")
