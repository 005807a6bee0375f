"""Model families chosen by name; every model is called as `model(images, train) -> logits`.

A family is a `Family` registered with its config schema (`register`): its rules, how it is built, and whether
it takes the per-layer probes. The CIFAR ResNet and the dense net of the notes are the built-in ones; another
is one module that calls `register` (and, if wanted, a `conf/` preset)."""

from __future__ import annotations

import math
from typing import Protocol

import jax
from flax import nnx

from resnet_jax import rules
from resnet_jax.config import CifarModel, MlpModel, ModelConfig, add_option
from resnet_jax.errors import ConfigError
from resnet_jax.models.cifar import BlockSpec, CifarResNet
from resnet_jax.models.dense import MLP
from resnet_jax.models.depth import BLOCK_LAYERS, cifar_blocks_per_stage, mlp_blocks
from resnet_jax.models.layers import KERNEL_INIT_SCALES
from resnet_jax.ops import kernels

AUTO_DEPTH = 110  # unset remat/unroll: remat above this depth, unroll up to it (CIFAR nets)


def use_remat(cfg: ModelConfig) -> bool:
    """`model.remat`, or when unset, on for CIFAR nets deeper than ResNet-110. MLP blocks store two
    [batch, width] activations each, too little to trade compute for."""
    if cfg.remat is not None:
        return cfg.remat
    return isinstance(cfg, CifarModel) and cfg.depth > AUTO_DEPTH


def use_unroll(cfg: ModelConfig) -> bool:
    """`model.unroll`, or when unset, on for CIFAR ResNets up to ResNet-110: their unrolled blocks train ~15 %
    faster (no stacking of saved activations); deeper nets stay a loop so that compile time does not grow
    with depth, and MLPs, whose tiny blocks run faster as a loop on CPU, too."""
    if cfg.unroll is not None:
        return cfg.unroll
    return isinstance(cfg, CifarModel) and cfg.depth <= AUTO_DEPTH


class Family(Protocol):
    """A model family: the rules of its config's keys, how its network is built for images of `input_shape`
    (H, W, C), and whether the network takes the probes (`forward(x, train, probe=True)` returning logits and
    per-layer statistics, and `layer_kernels()`: `resnet_jax.probes`)."""

    probes: bool

    def check(self, cfg: ModelConfig) -> None: ...

    def build(
        self, cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int, rngs: nnx.Rngs
    ) -> nnx.Module: ...


class CifarFamily:
    """He et al. 2015's CIFAR ResNet and its plain twin (`CifarModel`)."""

    probes = True

    def check(self, cfg: CifarModel) -> None:
        rules.one_of("model.block", cfg.block, tuple(BLOCK_LAYERS))
        cifar_blocks_per_stage(cfg.depth, cfg.block)
        rules.one_of("model.norm", cfg.norm, ("batchnorm", "none"))
        rules.one_of("model.shortcut", cfg.shortcut, ("A", "B"))
        if cfg.zero_init_residual and not cfg.residual:
            raise ConfigError(
                "model.zero_init_residual=true applies to residual nets only: "
                "model.residual=false has no residual branch to start at zero"
            )
        if cfg.zero_init_residual and cfg.norm != "batchnorm":
            raise ConfigError(
                "model.zero_init_residual=true zeroes each branch's last BatchNorm scale: it "
                "needs model.norm=batchnorm"
            )
        kernels.check("conv", cfg.conv_impl)

    def build(self, cfg: CifarModel, input_shape: tuple[int, ...], num_classes: int, rngs: nnx.Rngs):
        spec = BlockSpec(
            residual=cfg.residual,
            norm=cfg.norm == "batchnorm",
            shortcut=cfg.shortcut,
            preact=cfg.preact,
            conv_impl=cfg.conv_impl,
            block=cfg.block,
            zero_init_residual=cfg.zero_init_residual,
        )
        return CifarResNet(
            cfg.depth,
            spec,
            in_channels=input_shape[-1],
            num_classes=num_classes,
            remat=use_remat(cfg),
            unroll=use_unroll(cfg),
            rngs=rngs,
        )


class MlpFamily:
    """The dense net of the notes on flattened images (`MlpModel`)."""

    probes = True

    def check(self, cfg: MlpModel) -> None:
        mlp_blocks(cfg.depth)
        rules.positive("model.width", cfg.width)
        rules.one_of("model.init", cfg.init, tuple(KERNEL_INIT_SCALES))
        kernels.check("dense", cfg.dense_impl)

    def build(self, cfg: MlpModel, input_shape: tuple[int, ...], num_classes: int, rngs: nnx.Rngs):
        return MLP(
            cfg.depth,
            cfg.width,
            cfg.residual,
            in_features=math.prod(input_shape),
            num_classes=num_classes,
            remat=use_remat(cfg),
            unroll=use_unroll(cfg),
            dense_impl=cfg.dense_impl,
            init=cfg.init,
            rngs=rngs,
        )


# each family by its config schema (the schemas of the built-in ones are in resnet_jax.config)
FAMILIES: dict[type, Family] = {CifarModel: CifarFamily(), MlpModel: MlpFamily()}


def register(name: str, schema: type[ModelConfig], family: Family, recipe: dict[str, float]) -> None:
    """Add a model family: `model=<name>` composes `schema` (its keys and defaults), trains `family`'s
    network, and defaults the optimiser keys that defer to the family to `recipe` (`sgd_lr`, `clip_norm`)."""
    add_option("model", name, schema, recipe)
    FAMILIES[schema] = family


def check(cfg: ModelConfig) -> None:
    """The model's rules: its family's (depth, choices, a kernel that can run here)."""
    FAMILIES[type(cfg)].check(cfg)


def takes_probes(cfg: ModelConfig) -> bool:
    return FAMILIES[type(cfg)].probes


def build(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int, seed: int) -> nnx.Module:
    """Build the model `cfg` describes for images of `input_shape` (H, W, C)."""
    return FAMILIES[type(cfg)].build(cfg, input_shape, num_classes, nnx.Rngs(params=seed))


def count_params(model: nnx.Module) -> int:
    """Trainable parameters (BatchNorm running statistics are not parameters)."""
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
