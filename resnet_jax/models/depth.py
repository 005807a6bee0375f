"""Depth rules: depth always counts weighted layers, as in He et al. 2015."""

from __future__ import annotations

from resnet_jax.errors import ConfigError

# weighted layers per block, and examples of valid depths (stem + 3 stages of n blocks + classifier)
BLOCK_LAYERS = {
    "basic": (2, "8, 14, 20, 32, 44, 56, 110, 1202, ..."),
    "bottleneck": (3, "11, 20, 29, 56, 110, 164, 1001, ..."),
}


def cifar_blocks_per_stage(depth: int, block: str = "basic") -> int:
    """CIFAR ResNets have depth 3kn+2 for k-layer blocks: 6n+2 (basic), 9n+2 (bottleneck); returns n."""
    layers, examples = BLOCK_LAYERS[block]
    step = 3 * layers
    if depth >= step + 2 and (depth - 2) % step == 0:
        return (depth - 2) // step
    below = max(step + 2, depth - (depth - 2) % step)
    above = below + step if below <= depth else below
    nearest = f"{below}" if below == above else f"{below} or {above}"
    which = "model=cifar" if block == "basic" else "model=cifar model.block=bottleneck"
    raise ConfigError(
        f"model.depth={depth} is not valid for {which}: depth must be {step}n+2 with n >= 1 "
        f"({examples}); nearest valid: {nearest}"
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
