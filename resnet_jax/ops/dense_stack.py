"""The dense net's stack of residual (or plain) blocks in one oneDNN call each way, on CPU.

Block l: `h = relu(a W1[l] + b1[l])`, `a <- relu(h W2[l] + b2[l] + a)` (plain: without `+ a`), with the
blocks' parameters stacked on axis 0 as `nnx.scan` keeps them. Why: at the widths of these studies
(64) a block's products take microseconds, and XLA's loop bookkeeping around them (slicing stacked
weights, stacking saved activations and gradients, small fusions) cost as much again;
`onednn_dense.cc` runs all blocks in one call, the batch split over the cores. Elsewhere (GPU/TPU,
bfloat16, probed passes) the model scans its blocks in plain JAX.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from resnet_jax.ops import onednn


class StackParams(NamedTuple):
    """The blocks' parameters stacked on axis 0, named as each block holds them (the handlers' operand order
    is this module's business)."""

    w1: jax.Array  # [L, W, W]: each block's first layer
    b1: jax.Array  # [L, W]
    w2: jax.Array  # [L, W, W]: each block's second layer
    b2: jax.Array  # [L, W]


# Operands and results in Shardy's notation: `b` the batch (split across devices), `l` the blocks,
# `i j k` the widths before, inside and after a block. The backward results without `b` are the
# parameters' gradients, summed over the batch.
FORWARD_RULE = "b i, l i j, l j, l j k, l k -> l b j, l b k"
BACKWARD_RULE = "b k, b i, l b j, l b k, l i j, l j k -> b i, l i j, l j, l j k, l k, l b j, l b k"


def _with_members(rule: str) -> str:
    """`rule` with a population's member axis `m` leading every operand and result."""
    sides = (", ".join(f"m {term.strip()}" for term in side.split(",")) for side in rule.split("->"))
    return " -> ".join(sides)


def _local(name: str, residual: bool) -> Callable[..., tuple[jax.Array, ...]]:
    """The handler on one device's operands (its share of the batch, or of a population's members, whose
    operands have a leading member axis)."""

    def call(*args: jax.Array) -> tuple[jax.Array, ...]:
        onednn.register()
        a0, w1 = (args[0], args[1]) if name == "DenseStackForward" else (args[1], args[4])
        members = a0.shape[:-2]
        (batch, width), blocks = a0.shape[-2:], w1.shape[len(members)]
        act = jax.ShapeDtypeStruct((*members, blocks, batch, width), jnp.float32)
        if name == "DenseStackForward":
            results = (act, act)
        else:
            vec = jax.ShapeDtypeStruct((*members, blocks, width), jnp.float32)
            ker = jax.ShapeDtypeStruct(w1.shape, jnp.float32)
            results = (jax.ShapeDtypeStruct(a0.shape, jnp.float32), ker, vec, ker, vec, act, act)
        handler = jax.ffi.ffi_call(onednn.PREFIX + name, results, vmap_method="sequential")
        return tuple(handler(*args, residual=residual))

    return call


@functools.cache
def _op(name: str, residual: bool, members: bool = False) -> Callable[..., tuple[jax.Array, ...]]:
    """Handler `name`, split across devices along the batch (one net: `onednn.batch_partitioned`, the
    parameter gradients summed over the shards) or along the members (`members`: every operand has a
    leading member axis). Under `vmap` the members go through one call, the kernel looping over them; a
    `vmap` of members folds into their axis."""
    rule = FORWARD_RULE if name == "DenseStackForward" else BACKWARD_RULE
    local = _local(name, residual)
    partitioned = (
        onednn.batch_partitioned(local, _with_members(rule), factor="m")
        if members
        else onednn.batch_partitioned(local, rule)
    )
    op = jax.custom_batching.custom_vmap(partitioned)

    @op.def_vmap
    def all_members_in_one_call(axis_size: int, batched: list[bool], *args: jax.Array):
        stacked = [
            x if b else jnp.broadcast_to(x, (axis_size, *x.shape)) for x, b in zip(args, batched, strict=True)
        ]
        if not members:
            outs = _op(name, residual, members=True)(*stacked)
            return outs, (True,) * len(outs)
        folded = [x.reshape(-1, *x.shape[2:]) for x in stacked]  # (vmap axis, members, ...) -> one axis
        outs = tuple(x.reshape(axis_size, -1, *x.shape[1:]) for x in op(*folded))
        return outs, (True,) * len(outs)

    return op


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def dense_stack_onednn(a: jax.Array, params: StackParams, residual: bool) -> jax.Array:
    """The float32 stack's output (the last block's), computed by `onednn_dense.cc`; the MLP calls it where
    `resnet_jax.ops.kernels.select("dense", ...)` picks oneDNN."""
    return _op("DenseStackForward", residual)(a, *params)[1][-1]


def _forward(a: jax.Array, params: StackParams, residual: bool):
    h, out = _op("DenseStackForward", residual)(a, *params)
    return out[-1], (a, h, out, params.w1, params.w2)


def _backward(residual: bool, saved, g: jax.Array) -> tuple[jax.Array, StackParams]:
    a, h, out, w1, w2 = saved
    da, dw1, db1, dw2, db2, _, _ = _op("DenseStackBackward", residual)(g, a, h, out, w1, w2)
    return da, StackParams(dw1, db1, dw2, db2)


dense_stack_onednn.defvjp(_forward, _backward)
