"""Depth rules: depth always counts weighted layers, as in He et al. 2015."""

from __future__ import annotations

from resnet_jax.errors import ConfigError


def cifar_blocks_per_stage(depth: int) -> int:
    """CIFAR ResNets have depth 6n+2 (stem + 3 stages of n two-layer blocks + classifier); returns n."""
    if depth >= 8 and (depth - 2) % 6 == 0:
        return (depth - 2) // 6
    below = max(8, depth - (depth - 2) % 6)
    above = below + 6 if below <= depth else below
    nearest = f"{below}" if below == above else f"{below} or {above}"
    raise ConfigError(
        f"model.depth={depth} is not valid for model=cifar: depth must be 6n+2 with n >= 1 "
        f"(8, 14, 20, 32, 44, 56, 110, 1202, ...); nearest valid: {nearest}"
    )


def mlp_blocks(depth: int) -> int:
    """Dense nets have depth 2 + 2N (input layer, N two-layer blocks, classifier); returns N."""
    if depth >= 4 and depth % 2 == 0:
        return (depth - 2) // 2
    nearest = "4" if depth < 4 else f"{depth - 1} or {depth + 1}"
    raise ConfigError(
        f"model.depth={depth} is not valid for model=mlp: depth must be 2 + 2N with N >= 1 "
        f"(4, 6, 8, ...); nearest valid: {nearest}"
    )
