"""The dense net of the notes: `a[l+2] = relu(W2 relu(W1 a[l] + b1) + b2 + a[l])` (plain: without `+ a[l]`).

Depth counts weighted layers: input projection + 2 per block + classifier. No normalisation, so the
vanishing-gradient behaviour of deep plain nets shows undisturbed.
"""

from __future__ import annotations

import jax
from flax import nnx

from resnet_jax.models.depth import mlp_blocks
from resnet_jax.models.layers import Dense
from resnet_jax.models.stack import apply_stacked, create_stacked


class DenseBlock(nnx.Module):
    """`relu(z2 + a)` with `z2 = W2 relu(W1 a + b1) + b2`; plain twin `relu(z2)`."""

    def __init__(self, width: int, residual: bool, *, rngs: nnx.Rngs):
        self.residual = residual
        self.linear1 = Dense(width, width, rngs=rngs)
        self.linear2 = Dense(width, width, rngs=rngs)

    def __call__(self, a: jax.Array) -> jax.Array:
        z2 = self.linear2(jax.nn.relu(self.linear1(a)))
        return jax.nn.relu(z2 + a if self.residual else z2)


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
        rngs: nnx.Rngs,
    ):
        blocks = mlp_blocks(depth)
        self.remat, self.unroll = remat, unroll
        self.input = Dense(in_features, width, rngs=rngs)
        self.blocks = create_stacked(blocks, lambda r: DenseBlock(width, residual, rngs=r), rngs)
        self.head = Dense(width, num_classes, rngs=rngs)

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        del train  # no BatchNorm or dropout: train and eval compute the same function
        h = jax.nn.relu(self.input(x.reshape(x.shape[0], -1)))
        h = apply_stacked(self.blocks, h, remat=self.remat, unroll=self.unroll)
        return self.head(h)
