"""Probes against hand computations, and their way into metrics.jsonl and an offline W&B run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import tiny_config
from wandb_records import history, run_record
from wandb_records import summary as wandb_summary

from resnet_jax import models, probes
from resnet_jax.config import CifarModel, MlpModel
from resnet_jax.engine import cross_entropy_and_errors
from resnet_jax.runner import run


def measure(model: nnx.Module, x: jax.Array, y: jax.Array) -> dict[str, np.ndarray]:
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    measured = jax.jit(probes.measure, static_argnums=(0, 5))(graphdef, params, rest, x, y, jnp.float32)
    return {k: np.asarray(v) for k, v in measured.items()}  # compiled, as a run's probes are (members.py)


def batch(shape=(16, 8, 8, 1)) -> tuple[jax.Array, jax.Array]:
    return jax.random.normal(jax.random.key(0), shape), jnp.arange(shape[0]) % 10


def test_dense_probes_match_hand_computation() -> None:
    model = models.build(MlpModel(depth=6, width=8), (8, 8, 1), 10, 0)
    x, y = batch()
    with jax.default_matmul_precision("highest"):  # on GPUs XLA's default float32 matmul is TF32
        out = measure(model, x, y)
    flat = x.reshape(16, -1)
    w_in, b_in = np.asarray(model.input.kernel[...]), np.asarray(model.input.bias[...])
    w1, b1 = np.asarray(model.blocks.linear1.kernel[...]), np.asarray(model.blocks.linear1.bias[...])
    w2, b2 = np.asarray(model.blocks.linear2.kernel[...]), np.asarray(model.blocks.linear2.bias[...])
    z0 = flat @ w_in + b_in
    a, stds, ratios = np.maximum(z0, 0), [z0.std()], []
    for i in range(2):
        z1 = a @ w1[i] + b1[i]
        z2 = np.maximum(z1, 0) @ w2[i] + b2[i]
        stds += [z1.std(), z2.std()]
        ratios.append(np.linalg.norm(z2) / np.linalg.norm(a))
        a = np.maximum(z2 + a, 0)
    np.testing.assert_allclose(out["response_std"], stds, rtol=1e-4)
    np.testing.assert_allclose(out["branch_ratio"], ratios, rtol=1e-4)
    kernels = [w_in, w1[0], w2[0], w1[1], w2[1], np.asarray(model.head.kernel[...])]
    np.testing.assert_allclose(out["weight_norm"], [np.linalg.norm(k) for k in kernels], rtol=1e-5)

    def loss(m: nnx.Module) -> jax.Array:
        return cross_entropy_and_errors(m(x, train=True), y)[0].mean()

    grads = nnx.grad(loss)(model)
    expected = [
        grads.input.kernel[...],
        grads.blocks.linear1.kernel[...][0],
        grads.blocks.linear2.kernel[...][0],
        grads.blocks.linear1.kernel[...][1],
        grads.blocks.linear2.kernel[...][1],
        grads.head.kernel[...],
    ]
    np.testing.assert_allclose(out["grad_norm"], [np.linalg.norm(g) for g in expected], rtol=1e-4)


def test_head_gradient_norm_from_the_softmax_formula() -> None:
    """With a zero classifier the logits are 0: dL/dW_head = h^T (1/C - onehot(y)) / B."""
    model = models.build(MlpModel(depth=4, width=8), (8, 8, 1), 10, 0)
    model.head.kernel[...] = jnp.zeros_like(model.head.kernel[...])
    x, y = batch()
    a = np.maximum(np.asarray(x.reshape(16, -1) @ model.input.kernel[...] + model.input.bias[...]), 0)
    w1, b1 = np.asarray(model.blocks.linear1.kernel[...])[0], np.asarray(model.blocks.linear1.bias[...])[0]
    w2, b2 = np.asarray(model.blocks.linear2.kernel[...])[0], np.asarray(model.blocks.linear2.bias[...])[0]
    h = np.maximum(np.maximum(a @ w1 + b1, 0) @ w2 + b2 + a, 0)
    delta = np.full((16, 10), 0.1) - np.eye(10)[np.asarray(y)]
    expected = np.linalg.norm(h.T @ delta / 16)
    assert measure(model, x, y)["grad_norm"][-1] == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("name", ["mlp", "cifar"])
def test_zeroed_branches_give_ratio_zero(name: str) -> None:
    depth = 6 if name == "mlp" else 14
    model = models.build({"mlp": MlpModel, "cifar": CifarModel}[name](depth=depth), (8, 8, 1), 10, 0)
    if name == "mlp":
        model.blocks.linear2.kernel[...] = jnp.zeros_like(model.blocks.linear2.kernel[...])
        model.blocks.linear2.bias[...] = jnp.zeros_like(model.blocks.linear2.bias[...])
        expected_blocks = 2
    else:
        for stage in model.stages:
            for block in (stage.first, stage.blocks):
                if block is not None:
                    block.norm2.bn.scale[...] = jnp.zeros_like(block.norm2.bn.scale[...])
                    block.norm2.bn.bias[...] = jnp.zeros_like(block.norm2.bn.bias[...])
        expected_blocks = 6
    out = measure(model, *batch())
    assert out["branch_ratio"].shape == (expected_blocks,)
    np.testing.assert_array_equal(out["branch_ratio"], 0.0)


def test_cifar_probe_shapes_follow_depth() -> None:
    out = measure(models.build(CifarModel(depth=14), (8, 8, 1), 10, 0), *batch())
    assert out["grad_norm"].shape == (14,) and out["weight_norm"].shape == (14,)  # every weighted layer
    assert out["response_std"].shape == (13,)  # every 3x3 conv
    assert out["branch_ratio"].shape == (6,)
    # post-activation responses are BN outputs in train mode: std ~ 1 (BN scale 1 at init)
    np.testing.assert_allclose(out["response_std"], 1.0, atol=0.02)


def panels(rows: list[dict]) -> set[str]:
    """The keys a W&B workspace makes a panel of: each logged key, a table's fields counted once."""
    return {re.sub(r"(_table)/.*", r"\1", key) for row in rows for key in row if not key.startswith("_")}


def layer_table(run_dir: Path, kind: str) -> dict:
    """The newest per-layer chart's table of a probe kind, as the offline run stored it."""
    (wandb_dir,) = (run_dir / "wandb").glob("offline-run-*")
    tables = sorted((wandb_dir / "files/media/table/probe" / kind).glob("by_layer_table_*.table.json"))
    return json.loads(max(tables, key=lambda p: int(p.name.split("_")[3])).read_text())


def test_offline_wandb_run_holds_config_group_and_probes(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_TAGS", "mine,ours")
    cfg = tiny_config("model=mlp", "model.depth=6", "logger=wandb")
    run(cfg, tmp_path / "run", group="my-sweep", name="model.depth=6")
    (log_file,) = (tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb")
    rows = history(log_file)
    probe_rows = [r for r in rows if "probe/grad_norm/mean" in r]
    assert [r["_step"] for r in probe_rows] == [0, 10, 20]
    assert {"probe/branch_ratio/by_layer_table/path", "probe/response_std/max", "test/error"} <= set(
        probe_rows[-1]
    )
    assert not any("/L0" in key for key in panels(rows))  # the layer is an axis, not a series per layer
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    table = layer_table(tmp_path / "run", "grad_norm")
    assert table["columns"] == ["layer", "grad_norm"] and [row[0] for row in table["data"]] == list(range(6))
    np.testing.assert_allclose([row[1] for row in table["data"]], metrics[-1]["probe/grad_norm"], rtol=1e-5)
    record = run_record(log_file)
    assert record.run_group == "my-sweep" and record.display_name == "model.depth=6"
    assert record.project == "resnet_jax"
    config = {item.key: json.loads(item.value_json) for item in record.config.update}
    assert config["model"]["depth"] == 6 and config["optim"]["l2"] == 1e-4
    assert {"mlp", "residual", "depth=6", "data=digits", "l2=0.0001", "mine", "ours"} <= set(record.tags)
    summary = wandb_summary(log_file)
    assert summary["optimized_metric"] == "test/error" and summary["objective"] == metrics[-1]["test/error"]


def test_a_resnet_110_run_shows_at_most_30_wandb_panels(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_PROJECT", "from_the_environment")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "elsewhere"))
    cfg = tiny_config("model.depth=110", "model.unroll=false", "logger=wandb", "trainer.steps=10")
    run(cfg, tmp_path / "run")
    (log_file,) = (tmp_path / "elsewhere").glob("wandb/offline-run-*/run-*.wandb")
    shown = panels(history(log_file))
    assert len(shown) <= 30, sorted(shown)
    assert len(layer_table(log_file.parents[1].parent, "grad_norm")["data"]) == 110
    assert run_record(log_file).project == "from_the_environment"


def test_a_vanishing_gradients_norm_is_measured_not_rounded_to_zero() -> None:
    # entries of 1e-25 (a plain LeCun net 50 layers deep): their squares underflow float32
    tiny = jnp.full((64, 64), 1e-25, jnp.float32)
    norms = probes.kernel_norms([tiny, jnp.zeros((3, 3)), jnp.ones((2, 2))])
    np.testing.assert_allclose(norms, [64e-25, 0.0, 2.0], rtol=1e-6)


def test_a_vanishing_gradient_is_recorded_to_six_significant_digits(tmp_path: Path) -> None:
    # a plain LeCun MLP 50 layers deep: its input layer's gradient at init is far below 1e-6
    cfg = tiny_config(
        "model=mlp",
        "model.depth=50",
        "model.residual=false",
        "model.init=lecun",
        "trainer.steps=10",
        "probe.every=10",
    )
    run(cfg, tmp_path / "run")
    first = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    norms = first["probe/grad_norm"]
    assert first["step"] == 0 and 0 < norms[0] < 1e-6, norms[:3]
    assert all(v > 0 for v in norms)
