"""Per-layer evidence for why residual nets train: measured on a fixed probe batch every `probe.every` steps.

- `grad_norm`: ||dL/dW|| per weighted layer (vanishing or exploding gradients);
- `weight_norm`: ||W|| per weighted layer;
- `response_std`: std of each layer's response after BN, before the nonlinearity or the addition
  (He et al. 2015, Fig. 7; for the dense net, the pre-activations);
- `branch_ratio`: ||F(x)|| / ||x|| per block, how far each block is from the identity map.

Layers are in depth order, stem (or input layer) first; stacked blocks are unstacked.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from resnet_jax.engine import cross_entropy_and_errors


def kernel_norms(kernels: list[jax.Array]) -> jax.Array:
    """Frobenius norm of each kernel, each scaled by its largest entry first: the squares of a vanishing
    gradient (entries below ~1e-19) underflow float32 to 0, and its norm would read as exactly zero."""

    def norm(kernel: jax.Array) -> jax.Array:
        kernel = kernel.astype(jnp.float32)
        scale = jnp.max(jnp.abs(kernel))
        return scale * jnp.sqrt(jnp.sum(jnp.square(kernel / jnp.where(scale > 0, scale, 1.0))))

    return jnp.stack([norm(k) for k in kernels])


def measure(
    graphdef: nnx.GraphDef, params: nnx.State, model_state: nnx.State, x: jax.Array, y: jax.Array, dtype: Any
) -> dict[str, jax.Array]:
    """All probes for one batch; BatchNorm uses batch statistics, as in training (state is not updated)."""

    def data_loss(p: nnx.State) -> tuple[jax.Array, dict[str, jax.Array]]:
        model = nnx.merge(graphdef, p, model_state, copy=True)
        logits, stats = model.forward(x.astype(dtype), train=True, probe=True)
        return cross_entropy_and_errors(logits, y)[0].mean(), stats

    grads, stats = jax.grad(data_loss, has_aux=True)(params)
    weights = nnx.merge(graphdef, params, model_state, copy=True).layer_kernels()
    gradients = nnx.merge(graphdef, grads, model_state, copy=True).layer_kernels()
    return {"grad_norm": kernel_norms(gradients), "weight_norm": kernel_norms(weights), **stats}
