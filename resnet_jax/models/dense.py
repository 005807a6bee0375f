"""The dense net of the notes: `a[l+2] = relu(W2 relu(W1 a[l] + b1) + b2 + a[l])` (plain: without `+ a[l]`).

Depth counts weighted layers: input projection + 2 per block + classifier. No normalisation, so the
vanishing-gradient behaviour of deep plain nets shows undisturbed. The blocks run as an `nnx.scan`, or
where `resnet_jax.ops.kernels` selects it (CPU) as one oneDNN call each way (`resnet_jax.ops.dense_stack`,
~1.6x as fast at width 64).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from resnet_jax.models.depth import mlp_blocks
from resnet_jax.models.layers import Dense, Probes, branch_ratio, response_std
from resnet_jax.models.stack import apply_stacked, create_stacked
from resnet_jax.ops import kernels
from resnet_jax.ops.dense_stack import StackParams, dense_stack_onednn


class DenseBlock(nnx.Module):
    """`relu(z2 + a)` with `z2 = W2 relu(W1 a + b1) + b2`; plain twin `relu(z2)`."""

    def __init__(self, width: int, residual: bool, *, init: str = "he", rngs: nnx.Rngs):
        self.residual = residual
        self.linear1 = Dense(width, width, init=init, rngs=rngs)
        self.linear2 = Dense(width, width, init=init, rngs=rngs)

    def __call__(self, a: jax.Array, probe: bool = False) -> tuple[jax.Array, Probes]:
        """The block's output, and with `probe` the std of z1 and z2 and the ratio ||z2|| / ||a||."""
        z1 = self.linear1(a)
        z2 = self.linear2(jax.nn.relu(z1))
        out = jax.nn.relu(z2 + a if self.residual else z2)
        if not probe:
            return out, {}
        return out, {
            "response_std": jnp.stack([response_std(z1), response_std(z2)]),
            "branch_ratio": branch_ratio(z2, a),
        }


class MLP(nnx.Module):
    """Flattened input -> relu(input projection) -> N dense blocks (scanned) -> classifier."""

    def __init__(
        self,
        depth: int,
        width: int,
        residual: bool,
        *,
        in_features: int,
        num_classes: int,
        remat: bool = False,
        unroll: bool = False,
        dense_impl: str = "auto",
        init: str,
        rngs: nnx.Rngs,
    ):
        blocks = mlp_blocks(depth)
        self.remat, self.unroll, self.residual, self.dense_impl = remat, unroll, residual, dense_impl
        self.input = Dense(in_features, width, init=init, rngs=rngs)
        self.blocks = create_stacked(blocks, lambda r: DenseBlock(width, residual, init=init, rngs=r), rngs)
        self.head = Dense(width, num_classes, init=init, rngs=rngs)

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        return self.forward(x, train, probe=False)[0]

    def forward(self, x: jax.Array, train: bool, probe: bool) -> tuple[jax.Array, Probes]:
        """Logits and, with `probe`, `response_std` per hidden layer and `branch_ratio` per block.

        `train` is accepted for a uniform interface: without BatchNorm or dropout both modes agree.
        Probed passes, bfloat16 compute and remat take the scan (`resnet_jax.ops.kernels` decides).
        """
        z0 = self.input(x.reshape(x.shape[0], -1))
        # the fused stack cannot show every block's pre-activations (probes) nor rematerialise
        if self.runs_fused(z0.dtype, probe=probe):
            first, second = self.blocks.linear1, self.blocks.linear2
            params = StackParams(
                w1=first.kernel[...], b1=first.bias[...], w2=second.kernel[...], b2=second.bias[...]
            )
            return self.head(dense_stack_onednn(jax.nn.relu(z0), params, self.residual)), {}
        h, blocks = apply_stacked(
            self.blocks, jax.nn.relu(z0), remat=self.remat, unroll=self.unroll, probe=probe
        )
        logits = self.head(h)
        if not probe:
            return logits, {}
        return logits, {
            "response_std": jnp.concatenate([response_std(z0)[None], blocks["response_std"].reshape(-1)]),
            "branch_ratio": blocks["branch_ratio"],
        }

    def runs_fused(self, dtype: jnp.dtype = jnp.float32, *, probe: bool = False) -> bool:
        """Whether a pass in `dtype` runs the blocks as the oneDNN stack (else as the scan)."""
        return (
            kernels.select("dense", self.dense_impl, dtype=dtype, needs_scan=probe or self.remat) == "onednn"
        )

    def layer_kernels(self) -> list[jax.Array]:
        """Every weighted layer's kernel in depth order (stacked blocks unstacked): input ... head."""
        pairs = zip(self.blocks.linear1.kernel[...], self.blocks.linear2.kernel[...], strict=True)
        return [self.input.kernel[...], *(k for pair in pairs for k in pair), self.head.kernel[...]]
