"""The oneDNN dense stack (the MLP's CPU default): the numbers of the scanned blocks, forward and backward,
in and out of the training loop, under vmap and data parallelism, and clear behaviour where it cannot run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO
from test_cli import train
from test_onednn import SUPPORTED

from resnet_jax import models
from resnet_jax.config import ModelConfig
from resnet_jax.errors import ConfigError
from resnet_jax.models import dense
from resnet_jax.ops import onednn
from resnet_jax.ops.dense_stack import dense_stack_onednn

pytestmark = pytest.mark.skipif(not SUPPORTED, reason="the onednn-cpu-gomp wheels are Linux x86-64 only")


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
    return a, (kernels[0], biases[0], kernels[1], biases[1])


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


def _mlp(dense_impl: str, **kwargs):
    return models.build(
        ModelConfig(name="mlp", depth=10, width=16, dense_impl=dense_impl, **kwargs), (8, 8, 1), 10, 0
    )


def test_mlp_with_the_stack_computes_what_the_scanned_mlp_computes() -> None:
    x = jax.random.normal(jax.random.key(1), (12, 8, 8, 1))
    fused, scanned = _mlp("onednn"), _mlp("xla")
    assert fused.fused and not scanned.fused
    np.testing.assert_allclose(fused(x, True), scanned(x, True), rtol=1e-5, atol=1e-5)

    def grads(model):
        from flax import nnx

        return nnx.grad(lambda m: jnp.sum(jax.nn.log_softmax(m(x, True))[:, 0]))(model)

    for g1, g2 in zip(jax.tree.leaves(grads(fused)), jax.tree.leaves(grads(scanned)), strict=True):
        np.testing.assert_allclose(g1, g2, rtol=1e-4, atol=1e-5)


def test_auto_picks_the_stack_on_cpu_and_remat_or_bfloat16_take_the_scan(monkeypatch) -> None:
    assert dense.resolve_dense_impl("auto") == "onednn"
    assert _mlp("auto").fused
    assert not _mlp("auto", remat=True).fused  # asked for remat: the rematerialised scan
    model = _mlp("auto")
    x = jnp.ones((4, 8, 8, 1), jnp.bfloat16)
    assert model(x, True).dtype == jnp.bfloat16  # the stack is float32 only; bfloat16 runs the scan
    monkeypatch.setattr(onednn, "available", lambda: False)
    assert dense.resolve_dense_impl("auto") == "xla"


def test_explicit_onednn_that_cannot_run_is_a_config_error(monkeypatch) -> None:
    def missing() -> None:
        raise onednn.OneDnnUnavailable("no C++ compiler")

    monkeypatch.setattr(onednn, "register", missing)
    with pytest.raises(
        ConfigError, match="model.dense_impl=onednn cannot run here: no C\\+\\+ compiler; use"
    ):
        dense.resolve_dense_impl("onednn")


def test_cli_explicit_dense_onednn_without_a_build_is_one_line(tmp_path) -> None:
    run_dir = tmp_path / "run"
    env = {"RESNET_JAX_CACHE": str(tmp_path / "cache"), "CXX": "/nonexistent/c++"}
    out = train("model=mlp", "model.dense_impl=onednn", f"hydra.run.dir={run_dir}", cwd=REPO, env=env)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert lines[0].startswith("error: model.dense_impl=onednn cannot run here: no C++ compiler")
    assert not run_dir.exists()


def test_inconsistent_shapes_are_an_error_not_a_crash() -> None:
    a, (w1, b1, w2, b2) = random_stack(2, 4, 8)
    with pytest.raises(jax.errors.JaxRuntimeError, match="oneDNN dense stack: kernels must be"):
        jax.block_until_ready(dense_stack_onednn(a, (w1, b1, w2[:, :, :4], b2), True))


SHARDED_STEP = """
import json, re, jax, numpy as np, jax.numpy as jnp
from resnet_jax import models, optim
from resnet_jax.config import ModelConfig, OptimConfig
from resnet_jax.engine import Engine
rng = np.random.default_rng(0)
x, y = rng.normal(size=(64, 8, 8, 1)).astype(np.float32), rng.integers(0, 10, 64).astype(np.int32)
def engine(impl):
    model = models.build(ModelConfig(name="mlp", depth=12, width=24, dense_impl=impl), (8, 8, 1), 10, 0)
    tx, _ = optim.build(OptimConfig(lr=0.1), 10)
    return Engine(model, tx, x_train=x, y_train=y, l2=1e-4, augment=False, dtype=jnp.float32, seed=0)
fused, scanned = engine("onednn"), engine("xla")
steps = rng.integers(0, 64, size=(3, 16)).astype(np.int32)
hlo = fused.compiled_chunk.lower(fused.initial_state(), fused.place_indices(steps)).compile().as_text()
calls = [line for line in hlo.splitlines() if 'custom_call_target="resnet_jax_onednn_DenseStack' in line]
shapes = sorted({m for line in calls for m in re.findall(r"f32\\[([\\d,]+)\\]", line)})
(a, _), (b, _) = (e.train_chunk(e.initial_state(), steps) for e in (fused, scanned))
pairs = zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params))
diff = max(float(jnp.max(jnp.abs(u - v))) for u, v in pairs)
print(json.dumps({"calls": len(calls), "shapes": shapes, "all_gathers": hlo.count("all-gather("),
                  "devices": fused.devices, "max_param_diff": diff}))
"""


def test_on_eight_devices_each_device_runs_the_stack_on_its_shard() -> None:
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    out = subprocess.run(
        [sys.executable, "-c", SHARDED_STEP], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["calls"] == 2  # forward and backward
    # 5 blocks of width 24; each call sees its device's 2 of the 16 examples, parameters whole
    assert found["shapes"] == ["2,24", "5,2,24", "5,24", "5,24,24"]
    assert found["all_gathers"] == 0
    # three steps on 8 devices: the same parameters as the scanned blocks (gradients summed over the shards)
    assert found["devices"] == 8 and found["max_param_diff"] < 1e-5
