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

import jax
import jax.numpy as jnp
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding, PartitionSpec

from resnet_jax.ops import onednn

Params = tuple[jax.Array, jax.Array, jax.Array, jax.Array]  # W1 [L, W, W], b1 [L, W], W2, b2

# Operands and results in Shardy's notation: `b` the batch (split across devices), `l` the blocks,
# `i j k` the widths before, inside and after a block.
FORWARD_RULE = "b i, l i j, l j, l j k, l k -> l b j, l b k"
BACKWARD_RULE = "b k, b i, l b j, l b k, l i j, l j k -> b i, l i j, l j, l j k, l k, l b j, l b k"
SUMMED_GRADS = (1, 2, 3, 4)  # backward results summed over the batch: the parameters' gradients


def _local(name: str, residual: bool) -> Callable[..., tuple[jax.Array, ...]]:
    """The handler on one device's operands (its share of the batch)."""

    def call(*args: jax.Array) -> tuple[jax.Array, ...]:
        onednn.register()
        a0, w1 = (args[0], args[1]) if name == "DenseStackForward" else (args[1], args[4])
        (batch, width), blocks = a0.shape, w1.shape[0]
        act = jax.ShapeDtypeStruct((blocks, batch, width), jnp.float32)
        if name == "DenseStackForward":
            results = (act, act)
        else:
            vec = jax.ShapeDtypeStruct((blocks, width), jnp.float32)
            ker = jax.ShapeDtypeStruct(w1.shape, jnp.float32)
            results = (jax.ShapeDtypeStruct(a0.shape, jnp.float32), ker, vec, ker, vec, act, act)
        handler = jax.ffi.ffi_call(onednn.PREFIX + name, results, vmap_method="sequential")
        return tuple(handler(*args, residual=residual))

    return call


@functools.cache
def _op(name: str, residual: bool) -> Callable[..., tuple[jax.Array, ...]]:
    """Handler `name` as an op XLA's partitioner splits along the batch (each device runs its shard; the
    parameter gradients are summed over the shards) and `vmap` maps member by member."""
    local = _local(name, residual)
    forward = name == "DenseStackForward"

    def partition(mesh, arg_shapes, result_shapes):
        spec = arg_shapes[0].sharding.spec
        batch = spec[0] if len(spec) else None  # the mesh axis the batch is split over, if any
        split, whole = NamedSharding(mesh, PartitionSpec(batch)), NamedSharding(mesh, PartitionSpec())
        stacked = NamedSharding(mesh, PartitionSpec(None, batch))  # [L, B, W] activations
        if forward:
            args, results = (split, whole, whole, whole, whole), (stacked, stacked)
        else:
            args = (split, split, stacked, stacked, whole, whole)
            results = (split, whole, whole, whole, whole, stacked, stacked)

        def lower(*operands: jax.Array) -> tuple[jax.Array, ...]:
            out = local(*operands)
            if forward or batch is None:
                return out
            return tuple(jax.lax.psum(x, batch) if i in SUMMED_GRADS else x for i, x in enumerate(out))

        return mesh, lower, results, args

    partitioned = custom_partitioning(local)
    rule = FORWARD_RULE if forward else BACKWARD_RULE
    # every factor but the batch, in the order of first appearance (Shardy wants them so)
    others = dict.fromkeys(f for f in rule.replace(",", " ").replace("->", " ").split() if f != "b")
    partitioned.def_partition(partition, sharding_rule=rule, need_replication_factors=tuple(others))
    op = jax.custom_batching.custom_vmap(partitioned)

    @op.def_vmap
    def one_member_at_a_time(axis_size: int, batched: list[bool], *args: jax.Array):
        members = [
            x if b else jnp.broadcast_to(x, (axis_size, *x.shape)) for x, b in zip(args, batched, strict=True)
        ]
        outs = jax.lax.map(lambda member: op(*member), tuple(members))
        return outs, (True,) * len(outs)

    return op


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def dense_stack_onednn(a: jax.Array, params: Params, residual: bool) -> jax.Array:
    """The float32 stack's output (the last block's), computed by `onednn_dense.cc`."""
    return _op("DenseStackForward", residual)(a, *params)[1][-1]


def _forward(a: jax.Array, params: Params, residual: bool):
    h, out = _op("DenseStackForward", residual)(a, *params)
    return out[-1], (a, h, out, params[0], params[2])


def _backward(residual: bool, saved, g: jax.Array) -> tuple[jax.Array, Params]:
    a, h, out, w1, w2 = saved
    da, dw1, db1, dw2, db2, _, _ = _op("DenseStackBackward", residual)(g, a, h, out, w1, w2)
    return da, (dw1, db1, dw2, db2)


dense_stack_onednn.defvjp(_forward, _backward)
