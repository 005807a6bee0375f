"""Value domains as one-line errors: each module states its own keys' rules with these, so every message
names the key, the value and what is allowed, in the same words."""

from __future__ import annotations

import math
import re

from resnet_jax.errors import ConfigError

SEED_MAX = 2**31 - 2  # seeds feed numpy, scikit-learn and JAX keys (the augmentation's key is seed + 1)
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.,=+-]*")


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


def seed(key: str, value: int) -> None:
    if not (isinstance(value, int) and 0 <= value <= SEED_MAX):
        raise ConfigError(f"{key}={value} is not allowed; it must be an integer in [0, {SEED_MAX}]")


def folder_name(key: str, value: str) -> None:
    """A value that names a folder: one path component, never `..` (it must not place a run elsewhere)."""
    if not (NAME.fullmatch(value) and ".." not in value):
        raise ConfigError(
            f"{key}={value!r} is not allowed; it names a folder: letters, digits and _ . , = + - only, "
            "starting with a letter or digit, no '/' or '..'"
        )


def pattern(key: str, value: str, regex: str, what: str) -> None:
    if not re.fullmatch(regex, value):
        raise ConfigError(f"{key}={value!r} is not allowed; it must be {what}")
