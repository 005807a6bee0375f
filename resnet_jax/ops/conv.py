"""Convolution that stays fast inside loops on every backend: the formulations, and `conv2d`, which the
models call.

XLA's CPU convolution (above all its gradient) runs 20-40x slower inside `lax.scan`/`nnx.scan`
(jax-ml/jax#12868), and at about half of oneDNN's speed outside loops. On CPU the default is oneDNN
called as an XLA custom call (`resnet_jax.ops.onednn`); where oneDNN cannot run, a k x k convolution as a
sum of k*k shifted matrix products, which XLA compiles to plain GEMMs that stay fast inside loops.
GPU/TPU keep XLA's native convolution. Which one runs is `resnet_jax.ops.kernels`' choice.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from resnet_jax.ops import kernels, onednn


def _out_size(size: int, stride: int) -> int:
    return -(-size // stride)


@partial(jax.checkpoint, static_argnums=(2,))
def conv_shifted(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """NHWC convolution with symmetric `k // 2` zero padding, as k*k shifted matmuls.

    Checkpointed: the backward pass re-slices the k*k shifted views from `x` instead of keeping them,
    so a conv stores one activation, not k*k (ResNet-1202 would otherwise need ~60 GiB at batch 128).
    """
    kh, kw = kernel.shape[:2]
    if kh == kw == 1:
        return jnp.dot(x[:, ::stride, ::stride, :], kernel[0, 0])
    ph, pw = kh // 2, kw // 2
    padded = jnp.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    ho, wo = _out_size(x.shape[1], stride), _out_size(x.shape[2], stride)
    out = None
    for i in range(kh):
        for j in range(kw):
            patch = padded[:, i : i + (ho - 1) * stride + 1 : stride, j : j + (wo - 1) * stride + 1 : stride]
            term = jnp.dot(patch, kernel[i, j])
            out = term if out is None else out + term
    return out


def conv_xla(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """NHWC convolution with symmetric `k // 2` zero padding, XLA's native op (GPU/TPU)."""
    kh, kw = kernel.shape[:2]
    return jax.lax.conv_general_dilated(
        x,
        kernel,
        window_strides=(stride, stride),
        padding=((kh // 2, kh // 2), (kw // 2, kw // 2)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )


def conv2d(x: jax.Array, kernel: jax.Array, stride: int, impl: str) -> jax.Array:
    """NHWC x HWIO convolution with symmetric `k // 2` zero padding, by the kernel that `model.conv_impl`
    (`impl`) selects for this backend and dtype."""
    chosen = kernels.select("conv", impl, dtype=x.dtype)
    if chosen == "xla":
        return conv_xla(x, kernel, stride)
    if chosen == "onednn":
        return onednn.conv_onednn(x, kernel, stride)
    return conv_shifted(x, kernel, stride)
