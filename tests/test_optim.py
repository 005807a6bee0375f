"""Schedules, the L2 term and its scope."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import final_arrays, tiny_config

from resnet_jax import models, optim
from resnet_jax.config import AdamwOptim, CifarModel, MlpModel
from resnet_jax.config import SgdOptim as _SgdOptim
from resnet_jax.optim import l2_penalty
from resnet_jax.runner import run


def SgdOptim(**kwargs) -> _SgdOptim:  # noqa: N802 - SGD without the family recipe's clipping (no model here)
    return _SgdOptim(**{"clip_norm": 0.0, **kwargs})


def test_piecewise_divides_by_ten_at_half_and_three_quarters_by_default() -> None:
    _, lr = optim.build(SgdOptim(lr=0.1), steps=100)
    assert [round(float(lr(s)), 6) for s in (0, 49, 50, 74, 75, 99)] == [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]


def test_paper_boundaries_and_resnet110_warmup() -> None:
    cfg = SgdOptim(lr=0.1, boundaries=[32000, 48000], warmup_steps=400, warmup_lr=0.01)
    _, lr = optim.build(cfg, steps=64000)
    values = [round(float(lr(s)), 6) for s in (0, 399, 400, 31999, 32000, 48000)]
    assert values == [0.01, 0.01, 0.1, 0.1, 0.01, 0.001]


def test_cosine_with_linear_warmup_and_constant() -> None:
    _, lr = optim.build(
        SgdOptim(lr=1.0, schedule="cosine", warmup_steps=10, warmup="linear", warmup_lr=0.0), 110
    )
    assert float(lr(0)) == pytest.approx(0.0) and float(lr(5)) == pytest.approx(0.5)
    assert float(lr(10)) == pytest.approx(1.0) and float(lr(60)) == pytest.approx(0.5, abs=1e-3)
    _, const = optim.build(SgdOptim(lr=0.3, schedule="constant"), 10)
    assert float(const(9)) == pytest.approx(0.3)


def test_l2_penalty_sums_squared_kernels_only() -> None:
    model = models.build(MlpModel(depth=4, width=8), (2, 2, 1), 3, 0)
    expected = sum(float(jnp.sum(m.kernel[...] ** 2)) for m in (model.input, model.head)) + float(
        jnp.sum(model.blocks.linear1.kernel[...] ** 2) + jnp.sum(model.blocks.linear2.kernel[...] ** 2)
    )
    model.input.bias[...] = jnp.ones_like(model.input.bias[...]) * 100  # biases do not count
    np.testing.assert_allclose(float(l2_penalty(nnx.state(model, nnx.Param))), expected, rtol=1e-5)


def test_adamw_decays_kernels_not_biases() -> None:
    tx, _ = optim.build(AdamwOptim(lr=0.1, weight_decay=0.5, schedule="constant", clip_norm=0.0), 10)
    params = {"layer": {"kernel": jnp.ones(2), "bias": jnp.ones(2)}}
    zero_grads = {"layer": {"kernel": jnp.zeros(2), "bias": jnp.zeros(2)}}
    updates, _ = tx.update(zero_grads, tx.init(params), params)
    assert float(updates["layer"]["kernel"][0]) == pytest.approx(-0.1 * 0.5)
    assert float(updates["layer"]["bias"][0]) == 0.0


def test_clip_norm_bounds_the_update() -> None:
    tx, _ = optim.build(SgdOptim(lr=1.0, momentum=0.0, schedule="constant", clip_norm=0.5), 10)
    params = {"kernel": jnp.zeros(4)}
    updates, _ = tx.update({"kernel": jnp.full(4, 10.0)}, tx.init(params), params)
    assert float(jnp.linalg.norm(updates["kernel"])) == pytest.approx(0.5, rel=1e-5)


def test_l2_scope_all_regularises_every_parameter_kernels_only_the_kernels() -> None:
    model = models.build(CifarModel(depth=8), (8, 8, 1), 10, 0)
    params = nnx.state(model, nnx.Param)
    every = sum(float(jnp.sum(leaf**2)) for leaf in jax.tree.leaves(params))
    kernels = sum(float(jnp.sum(m.kernel[...] ** 2)) for m in (model.stem, model.head)) + sum(
        float(jnp.sum(k**2)) for stage in model.stages for k in stage.kernels()
    )
    np.testing.assert_allclose(float(l2_penalty(params, "all")), every, rtol=1e-5)
    np.testing.assert_allclose(float(l2_penalty(params, "kernels")), kernels, rtol=1e-5)
    assert every > kernels + 30  # BatchNorm's scales (ones) and the biases count under `all`


def test_adamw_weight_decay_follows_l2_scope() -> None:
    params = {"layer": {"kernel": jnp.ones(2), "bias": jnp.ones(2)}}
    zero_grads = {"layer": {"kernel": jnp.zeros(2), "bias": jnp.zeros(2)}}
    for scope, bias_update in (("kernels", 0.0), ("all", -0.05)):
        cfg = AdamwOptim(lr=0.1, weight_decay=0.5, schedule="constant", clip_norm=0.0, l2_scope=scope)
        tx, _ = optim.build(cfg, 10)
        updates, _ = tx.update(zero_grads, tx.init(params), params)
        assert float(updates["layer"]["bias"][0]) == pytest.approx(bias_update)


def test_a_run_with_l2_on_everything_shrinks_batchnorm_scales(tmp_path) -> None:
    base = ("model.depth=8", "optim.l2=0.05", "trainer.steps=40")
    scales = {}
    for scope in ("kernels", "all"):
        run(tiny_config(*base, f"optim.l2_scope={scope}"), tmp_path / scope)
        arrays = final_arrays(tmp_path / scope)
        scales[scope] = np.mean(
            [np.abs(v).mean() for k, v in arrays.items() if k.startswith("params/") and "scale" in k]
        )
    assert scales["all"] < scales["kernels"] - 0.05  # weight decay on BatchNorm's scale pulls it towards 0
