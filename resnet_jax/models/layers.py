"""Shared pieces of the conv and dense nets: He-initialised layers and optional BatchNorm."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from resnet_jax.ops.conv import conv2d

# Per-layer and per-block measurements a forward pass can return (see resnet_jax.probes).
Probes = dict[str, jax.Array]

# Kernel variance = scale / fan_in. He et al. 2015's 2 / fan_in (PyTorch's kaiming_normal_) keeps a plain
# ReLU net's signal constant through depth: the critical scale. LeCun's 1 / fan_in halves its variance at
# every layer (the vanishing regime); twice He's, 4 / fan_in, doubles it (the exploding regime).
KERNEL_INIT_SCALES = {"he": 2.0, "lecun": 1.0, "double_he": 4.0}
he_normal = nnx.initializers.variance_scaling(KERNEL_INIT_SCALES["he"], "fan_in", "normal")

# He et al. 2015 / PyTorch: running statistics decay 0.9 per step (NNX defaults to 0.99).
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


class Conv(nnx.Module):
    """A bias-free k x k convolution (BatchNorm follows, so a bias would be redundant)."""

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int, impl: str, *, rngs: nnx.Rngs):
        self.kernel = nnx.Param(he_normal(rngs.params(), (kernel_size, kernel_size, cin, cout)))
        self.stride = stride
        self.impl = impl

    def __call__(self, x: jax.Array) -> jax.Array:
        return conv2d(x, self.kernel[...].astype(x.dtype), self.stride, self.impl)


class Dense(nnx.Module):
    """A fully connected layer with a He-normal (or LeCun-normal) kernel and zero bias."""

    def __init__(self, fan_in: int, fan_out: int, *, init: str = "he", rngs: nnx.Rngs):
        kernel_init = nnx.initializers.variance_scaling(KERNEL_INIT_SCALES[init], "fan_in", "normal")
        self.kernel = nnx.Param(kernel_init(rngs.params(), (fan_in, fan_out)))
        self.bias = nnx.Param(jnp.zeros((fan_out,)))

    def __call__(self, x: jax.Array) -> jax.Array:
        return x @ self.kernel[...].astype(x.dtype) + self.bias[...].astype(x.dtype)


class Norm(nnx.Module):
    """BatchNorm after a conv (momentum 0.9), or nothing when `model.norm=none`. `zero_scale`: its scale
    starts at 0 (Goyal et al. 2017: a residual branch that ends in it starts as the zero map)."""

    def __init__(self, features: int, enabled: bool, *, zero_scale: bool = False, rngs: nnx.Rngs):
        scale_init = nnx.initializers.zeros_init() if zero_scale else nnx.initializers.ones_init()
        self.bn = (
            nnx.BatchNorm(
                features, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, scale_init=scale_init, rngs=rngs
            )
            if enabled
            else None
        )

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        if self.bn is None:
            return x
        return self.bn(x, use_running_average=not train).astype(x.dtype)


def response_std(x: jax.Array) -> jax.Array:
    """Std of a layer's response over batch, positions and channels (He et al. 2015, Fig. 7)."""
    return jnp.std(x.astype(jnp.float32))


def branch_ratio(branch: jax.Array, identity: jax.Array) -> jax.Array:
    """||F(x)|| / ||x||: 0 when a block is exactly the identity map."""
    branch, identity = branch.astype(jnp.float32), identity.astype(jnp.float32)
    return jnp.sqrt(jnp.sum(branch**2)) / (jnp.sqrt(jnp.sum(identity**2)) + 1e-12)
