"""The oneDNN dense stack (the MLP's CPU default): the numbers of the scanned blocks, forward and backward,
in and out of the training loop, under vmap and data parallelism, and clear behaviour where it cannot run."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import LINUX_X86_64

from resnet_jax import models
from resnet_jax.config import MlpModel
from resnet_jax.ops.dense_stack import StackParams, dense_stack_onednn

pytestmark = pytest.mark.skipif(not LINUX_X86_64, reason="the onednn-cpu-gomp wheels are Linux x86-64 only")


def scanned_blocks(a, params, residual: bool):
    """The reference: the blocks as a plain scan, `relu(W2 relu(W1 a + b1) + b2 (+ a))`."""

    def block(a, p):
        w1, b1, w2, b2 = p
        z2 = jax.nn.relu(a @ w1 + b1) @ w2 + b2
        return jax.nn.relu(z2 + a if residual else z2), None

    return jax.lax.scan(block, a, params)[0]


def random_stack(blocks: int, batch: int, width: int, seed: int = 0):
    keys = jax.random.split(jax.random.key(seed), 5)
    a = jax.random.normal(keys[0], (batch, width))
    kernels = [jax.random.normal(k, (blocks, width, width)) * np.sqrt(2 / width) for k in keys[1:3]]
    biases = [jax.random.normal(k, (blocks, width)) * 0.1 for k in keys[3:5]]
    return a, StackParams(kernels[0], biases[0], kernels[1], biases[1])


def _loss(stack, residual):
    return lambda a, params: jnp.sum(jnp.sin(stack(a, params, residual)))


@pytest.mark.parametrize("residual", [True, False])
@pytest.mark.parametrize(("blocks", "batch", "width"), [(3, 16, 8), (5, 7, 12), (1, 1, 4), (4, 128, 64)])
def test_stack_and_its_gradients_equal_the_scanned_blocks(residual, blocks, batch, width) -> None:
    """Odd batches too: the rows are split over the threads, the last share smaller (or empty)."""
    a, params = random_stack(blocks, batch, width)
    ours, ref = dense_stack_onednn(a, params, residual), scanned_blocks(a, params, residual)
    assert ours.shape == (batch, width)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
    g_ours = jax.grad(_loss(dense_stack_onednn, residual), argnums=(0, 1))(a, params)
    g_ref = jax.grad(_loss(scanned_blocks, residual), argnums=(0, 1))(a, params)
    for x, y in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_ref), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-4)


def test_stack_inside_a_loop_of_training_steps() -> None:
    """As the engine runs it: K steps under `lax.scan`, each step the stack forward and backward."""
    a, params = random_stack(4, 32, 16)

    def train(stack):
        def step(p, _):
            grads = jax.grad(lambda p: jnp.mean(jnp.sin(stack(a, p, True))))(p)
            return jax.tree.map(lambda w, g: w - 0.5 * g, p, grads), None

        return jax.jit(lambda p: jax.lax.scan(step, p, length=5)[0])(params)

    for x, y in zip(train(dense_stack_onednn), train(scanned_blocks), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-4)  # five steps of float32 rounding drift


def test_stack_under_vmap_per_example_gradients() -> None:
    a, params = random_stack(2, 6, 8)

    def per_example(stack):
        grad = jax.grad(lambda p, row: _loss(stack, True)(row[None], p))
        return jax.vmap(grad, in_axes=(None, 0))(params, a)

    for x, y in zip(per_example(dense_stack_onednn), per_example(scanned_blocks), strict=True):
        assert x.shape[0] == 6
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-4)


def test_a_population_of_stacks_is_one_call_with_each_members_own_bits() -> None:
    """Under vmap over members (each its own input and parameters, as in a population), the members go
    through one call: every member's value and gradients are bit-identical to its call alone, and a vmap of
    members (members of members) folds into the same call."""
    stacks = [random_stack(3, 70, 16, seed) for seed in range(4)]
    a = jnp.stack([s[0] for s in stacks])
    params = jax.tree.map(lambda *leaves: jnp.stack(leaves), *[s[1] for s in stacks])
    grad = jax.grad(_loss(dense_stack_onednn, True), argnums=(0, 1))

    def value_and_grad(a, params):  # the stack's output itself: XLA may sum a batched loss in another order
        return dense_stack_onednn(a, params, True), grad(a, params)

    together = jax.jit(jax.vmap(value_and_grad))(a, params)
    for k, (a_k, params_k) in enumerate(stacks):
        alone = jax.jit(value_and_grad)(a_k, params_k)
        for x, y in zip(jax.tree.leaves(together), jax.tree.leaves(alone), strict=True):
            np.testing.assert_array_equal(x[k], y)
    lowered = jax.jit(jax.vmap(value_and_grad)).lower(a, params).as_text()
    assert "while" not in lowered  # no loop over the members around the kernel
    nested = jax.vmap(jax.vmap(value_and_grad))(
        a.reshape(2, 2, 70, 16), jax.tree.map(lambda x: x.reshape(2, 2, *x.shape[1:]), params)
    )
    for x, y in zip(jax.tree.leaves(nested), jax.tree.leaves(together), strict=True):
        np.testing.assert_array_equal(x.reshape(y.shape), y)


def _mlp(dense_impl: str, **kwargs):
    return models.build(MlpModel(depth=10, width=16, dense_impl=dense_impl, **kwargs), (8, 8, 1), 10, 0)


def test_mlp_with_the_stack_computes_what_the_scanned_mlp_computes() -> None:
    x = jax.random.normal(jax.random.key(1), (12, 8, 8, 1))
    fused, scanned = _mlp("onednn"), _mlp("xla")
    assert fused.runs_fused() and not scanned.runs_fused()
    np.testing.assert_allclose(fused(x, True), scanned(x, True), rtol=1e-5, atol=1e-5)

    def grads(model):
        from flax import nnx

        return nnx.grad(lambda m: jnp.sum(jax.nn.log_softmax(m(x, True))[:, 0]))(model)

    for g1, g2 in zip(jax.tree.leaves(grads(fused)), jax.tree.leaves(grads(scanned)), strict=True):
        np.testing.assert_allclose(g1, g2, rtol=1e-4, atol=1e-5)


def test_inconsistent_shapes_are_an_error_not_a_crash() -> None:
    a, (w1, b1, w2, b2) = random_stack(2, 4, 8)
    with pytest.raises(jax.errors.JaxRuntimeError, match="oneDNN dense stack: kernels must be"):
        jax.block_until_ready(dense_stack_onednn(a, StackParams(w1, b1, w2[:, :, :4], b2), True))


STACK_BITS = """
import hashlib, jax, numpy as np
from resnet_jax.ops.dense_stack import StackParams, dense_stack_onednn
keys = jax.random.split(jax.random.key(0), 5)
a = jax.random.normal(keys[0], (100, 24))
params = StackParams(*(jax.random.normal(k, s) * 0.3 for k, s in
                       zip(keys[1:], [(3, 24, 24), (3, 24), (3, 24, 24), (3, 24)])))
loss = lambda a, p: (dense_stack_onednn(a, p, True) ** 2).sum()
out, grads = jax.value_and_grad(loss, argnums=(0, 1))(a, params)
print(hashlib.sha256(b"".join(np.asarray(x).tobytes() for x in jax.tree.leaves((out, grads)))).hexdigest())
"""


def test_the_stacks_numbers_do_not_depend_on_how_many_threads_share_the_batch() -> None:
    """Rows go through in fixed chunks, whatever the pool size: a run on 1 or 2 threads (or devices sharing
    one pool, or processes) gives the same bits."""
    digests = set()
    for threads in ("1", "2", "3"):
        env = {**os.environ, "OMP_NUM_THREADS": threads}
        out = subprocess.run([sys.executable, "-c", STACK_BITS], capture_output=True, text=True, env=env)
        assert out.returncode == 0, out.stderr[-2000:]
        digests.add(out.stdout.strip().splitlines()[-1])
    assert len(digests) == 1
