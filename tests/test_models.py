"""Model shapes, the paper's parameter counts, and the exact sense in which plain and residual differ."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import forward

from resnet_jax import models
from resnet_jax.config import CifarModel, MlpModel, ModelConfig
from resnet_jax.errors import ConfigError
from resnet_jax.models.cifar import Block, BlockSpec
from resnet_jax.models.dense import DenseBlock

CIFAR = (32, 32, 3)
FAMILIES = {"cifar": CifarModel, "mlp": MlpModel}


def abstract_params(cfg: ModelConfig, shape=CIFAR) -> int:
    model = nnx.eval_shape(lambda: models.build(cfg, shape, 10, 0))
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


@pytest.mark.parametrize(
    ("depth", "millions"),
    [(20, 0.27), (32, 0.46), (44, 0.66), (56, 0.85), (110, 1.7), (1202, 19.4)],
)
def test_cifar_parameter_counts_match_the_paper(depth: int, millions: float) -> None:
    count = abstract_params(CifarModel(depth=depth))
    assert round(count / 1e6, 2 if millions < 1 else 1) == millions


def test_resnet20_exact_parameter_count_and_logits_shape() -> None:
    model = models.build(CifarModel(depth=20), CIFAR, 10, 0)
    # 19 convs (432 + 6*2304 + 4608 + 5*9216 + 18432 + 5*36864) + 19 BN (2C each) + linear 64*10+10
    assert models.count_params(model) == 269_722
    logits = forward(model, jnp.zeros((2, *CIFAR)), train=False)
    assert logits.shape == (2, 10)


def test_mlp_depth_counts_weighted_layers_and_shapes() -> None:
    model = models.build(MlpModel(depth=10, width=64), (8, 8, 1), 10, 0)
    # input 64*64+64, 4 blocks of 2*(64*64+64), head 64*10+10
    assert models.count_params(model) == 64 * 64 + 64 + 4 * 2 * (64 * 64 + 64) + 64 * 10 + 10
    assert model(jnp.zeros((3, 8, 8, 1)), train=True).shape == (3, 10)


@pytest.mark.parametrize("name", ["cifar", "mlp"])
@pytest.mark.parametrize("extra", [{}, {"preact": True}, {"norm": "none"}])
def test_plain_and_residual_twins_share_parameter_tree_and_init(name: str, extra: dict) -> None:
    depth = 14 if name == "cifar" else 6
    extra = extra if name == "cifar" else {}
    res = models.build(FAMILIES[name](depth=depth, residual=True, **extra), (8, 8, 1), 10, 0)
    plain = models.build(FAMILIES[name](depth=depth, residual=False, **extra), (8, 8, 1), 10, 0)
    res_state, plain_state = nnx.state(res, nnx.Param), nnx.state(plain, nnx.Param)
    assert jax.tree.structure(res_state) == jax.tree.structure(plain_state)
    for a, b in zip(jax.tree.leaves(res_state), jax.tree.leaves(plain_state), strict=True):
        np.testing.assert_array_equal(a, b)
    x = jax.random.normal(jax.random.key(1), (4, 8, 8, 1))
    assert not np.allclose(forward(res, x, train=False), forward(plain, x, train=False))


def test_shortcut_b_projects_only_where_the_shape_changes() -> None:
    a = models.build(CifarModel(depth=20, shortcut="A"), CIFAR, 10, 0)
    b = models.build(CifarModel(depth=20, shortcut="B"), CIFAR, 10, 0)
    # two projections (stages 2 and 3): 1x1 convs 16->32 and 32->64 plus their BatchNorms
    assert models.count_params(b) - models.count_params(a) == 16 * 32 + 32 * 64 + 2 * 32 + 2 * 64


def test_dense_block_with_zero_last_layer_is_the_identity_on_nonnegative_input() -> None:
    block = DenseBlock(16, residual=True, rngs=nnx.Rngs(0))
    block.linear2.kernel[...] = jnp.zeros_like(block.linear2.kernel[...])
    block.linear2.bias[...] = jnp.zeros_like(block.linear2.bias[...])
    a = jnp.abs(jax.random.normal(jax.random.key(0), (5, 16)))
    np.testing.assert_array_equal(block(a)[0], a)


def test_conv_block_with_zero_last_bn_is_the_identity_on_nonnegative_input() -> None:
    spec = BlockSpec(residual=True, norm=True, shortcut="A", preact=False, conv_impl="shifted")
    block = Block(8, 8, 1, spec, rngs=nnx.Rngs(0))
    bn = block.norm2.bn
    bn.scale[...] = jnp.zeros_like(bn.scale[...])
    bn.bias[...] = jnp.zeros_like(bn.bias[...])
    x = jnp.abs(jax.random.normal(jax.random.key(0), (2, 6, 6, 8)))
    np.testing.assert_array_equal(block(x, train=True)[0], x)


def test_option_a_shortcut_subsamples_and_zero_pads_channels() -> None:
    from resnet_jax.models.cifar import shortcut_a

    x = jnp.arange(2 * 4 * 4 * 16, dtype=jnp.float32).reshape(2, 4, 4, 16)
    y = shortcut_a(x, 2, 32)
    assert y.shape == (2, 2, 2, 32)
    np.testing.assert_array_equal(y[..., 8:24], x[:, ::2, ::2, :])
    assert float(jnp.abs(y[..., :8]).sum() + jnp.abs(y[..., 24:]).sum()) == 0.0


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [(3, 3), (1, 1)])
def test_shifted_conv_equals_xla_conv(stride: int, size: tuple[int, int]) -> None:
    from resnet_jax.ops.conv import conv_shifted, conv_xla

    x = jax.random.normal(jax.random.key(0), (2, 9, 8, 5))
    w = jax.random.normal(jax.random.key(1), (*size, 5, 7))
    with jax.default_matmul_precision("highest"):  # on GPUs XLA's default float32 conv is TF32 (~3 digits)
        shifted, xla = conv_shifted(x, w, stride), conv_xla(x, w, stride)
    np.testing.assert_allclose(shifted, xla, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("train", [False, True])
def test_scanned_model_equals_unrolled_reference(train: bool) -> None:
    """The stacked/scanned stage computes what a plain Python loop over its blocks computes."""
    model = models.build(CifarModel(depth=14), (8, 8, 1), 10, 0)
    x = jax.random.normal(jax.random.key(2), (4, 8, 8, 1))
    stage = model.stages[0]
    graphdef, state = nnx.split(stage.blocks)
    h = jax.random.normal(jax.random.key(3), (4, 8, 8, 16))
    reference = h
    for i in range(2):
        block = nnx.merge(graphdef, jax.tree.map(lambda leaf, i=i: leaf[i], state))
        reference, _ = block(reference, train=train)
    np.testing.assert_allclose(
        stage(h, train, probe=False, remat=False, unroll=False)[0], reference, rtol=1e-5, atol=1e-5
    )
    # the whole network also matches its XLA-unrolled and rematerialised forms
    unrolled = models.build(CifarModel(depth=14, unroll=True, remat=True), (8, 8, 1), 10, 0)
    scanned = models.build(CifarModel(depth=14), (8, 8, 1), 10, 0)
    np.testing.assert_allclose(forward(scanned, x, train), forward(unrolled, x, train), rtol=1e-5, atol=1e-5)


def test_scanned_blocks_update_batchnorm_statistics_per_block() -> None:
    model = models.build(CifarModel(depth=20), (8, 8, 1), 10, 0)
    stats = model.stages[0].blocks.norm1.bn.mean
    assert float(jnp.abs(stats[...]).sum()) == 0.0
    model(jax.random.normal(jax.random.key(0), (8, 8, 8, 1)), train=True)
    means = np.asarray(stats[...])
    assert means.shape == (3, 16)
    assert np.all(np.abs(means).sum(axis=1) > 0) and not np.allclose(means[0], means[1])


@pytest.mark.parametrize(("depth", "nearest"), [(21, "20 or 26"), (7, "8"), (1201, "1196 or 1202")])
def test_invalid_cifar_depth_names_the_rule_and_nearest_depths(depth: int, nearest: str) -> None:
    with pytest.raises(ConfigError, match=r"6n\+2") as info:
        models.build(CifarModel(depth=depth), CIFAR, 10, 0)
    assert f"nearest valid: {nearest}" in str(info.value)


def test_invalid_mlp_depth_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"2 \+ 2N.*nearest valid: 6 or 8"):
        models.build(MlpModel(depth=7), (8, 8, 1), 10, 0)


def kernel_params(cfg: ModelConfig, shape=CIFAR) -> int:
    """Conv and dense weights only (the count He et al. 2016 report: BatchNorm and biases left out)."""
    model = nnx.eval_shape(lambda: models.build(cfg, shape, 10, 0))
    leaves = jax.tree_util.tree_leaves_with_path(nnx.state(model, nnx.Param))
    return sum(int(np.prod(x.shape)) for path, x in leaves if getattr(path[-2], "key", None) == "kernel")


@pytest.mark.parametrize("preact", [False, True])
@pytest.mark.parametrize(("depth", "millions"), [(164, 1.7), (1001, 10.2)])
def test_bottleneck_resnets_have_the_papers_depth_rule_and_parameter_counts(
    depth: int, millions: float, preact: bool
) -> None:
    """He et al. 2016, Table 2: ResNet-164 1.7 M, ResNet-1001 10.2 M (bottleneck, projection shortcuts)."""
    cfg = CifarModel(depth=depth, block="bottleneck", shortcut="B", preact=preact)
    assert round(kernel_params(cfg) / 1e6, 1) == millions
    assert 0 < abs_params(cfg) - kernel_params(cfg) < 0.02 * abs_params(cfg)  # BatchNorm scales and shifts


def abs_params(cfg: ModelConfig) -> int:
    return abstract_params(cfg)


def test_a_bottleneck_net_computes_and_scans_like_its_unrolled_form() -> None:
    cfg = dict(depth=29, block="bottleneck", shortcut="B")
    scanned = models.build(CifarModel(**cfg, unroll=False), (8, 8, 1), 10, 0)
    unrolled = models.build(CifarModel(**cfg, unroll=True, remat=True), (8, 8, 1), 10, 0)
    x = jax.random.normal(jax.random.key(0), (4, 8, 8, 1))
    assert forward(scanned, x, True).shape == (4, 10)
    np.testing.assert_allclose(forward(scanned, x, True), forward(unrolled, x, True), rtol=1e-5, atol=1e-5)
    assert len(scanned.layer_kernels()) == 29  # depth counts weighted layers: 9n + 2


@pytest.mark.parametrize(("depth", "nearest"), [(30, "29 or 38"), (164, None), (10, "11")])
def test_bottleneck_depth_must_be_9n_plus_2(depth: int, nearest: str | None) -> None:
    cfg = CifarModel(depth=depth, block="bottleneck")
    if nearest is None:
        models.check(cfg)
        return
    with pytest.raises(ConfigError, match=r"model.block=bottleneck: depth must be 9n\+2") as info:
        models.check(cfg)
    assert info.value.args[0].endswith(f"nearest valid: {nearest}")


@pytest.mark.parametrize("block", ["basic", "bottleneck"])
@pytest.mark.parametrize("preact", [False, True])
def test_zero_init_residual_makes_every_block_start_as_the_identity(block: str, preact: bool) -> None:
    depth = 20 if block == "basic" else 29
    cfg = CifarModel(depth=depth, block=block, preact=preact, zero_init_residual=True, shortcut="B")
    model = models.build(cfg, (8, 8, 1), 10, 0)
    _, stats = model.forward(jax.random.normal(jax.random.key(0), (4, 8, 8, 1)), True, probe=True)
    np.testing.assert_array_equal(stats["branch_ratio"], 0.0)  # F(x) = 0 in every block at initialisation
    default = models.build(
        CifarModel(depth=depth, block=block, preact=preact, shortcut="B"), (8, 8, 1), 10, 0
    )
    _, stats = default.forward(jax.random.normal(jax.random.key(0), (4, 8, 8, 1)), True, probe=True)
    assert np.all(np.asarray(stats["branch_ratio"]) > 0)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"residual": False}, r"applies to residual nets only: model.residual=false has no residual branch"),
        ({"norm": "none"}, r"zeroes each branch's last BatchNorm scale: it needs model.norm=batchnorm"),
    ],
)
def test_zero_init_residual_is_a_one_line_error_where_it_cannot_apply(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=f"^model.zero_init_residual=true {message}"):
        models.check(CifarModel(zero_init_residual=True, **changes))
