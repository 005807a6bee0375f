"""He et al. 2015's CIFAR ResNet (depth 6n+2) and its plain twin, post- or pre-activation.

`residual` is the only difference between the two: same layers, same parameters, same init. With
shortcut option A (subsample + zero-pad channels) the shortcut has no parameters at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

from resnet_jax.models.depth import cifar_blocks_per_stage
from resnet_jax.models.layers import Conv, Dense, Norm, Probes, branch_ratio, response_std
from resnet_jax.models.stack import apply_stacked, create_stacked

STAGE_WIDTHS = (16, 32, 64)


@dataclass(frozen=True)
class BlockSpec:
    """What every block of one network shares."""

    residual: bool
    norm: bool
    shortcut: str  # "A": subsample + zero-pad; "B": 1x1 projection where the shape changes
    preact: bool
    conv_impl: str


def shortcut_a(x: jax.Array, stride: int, cout: int) -> jax.Array:
    """Option A: take every `stride`-th pixel and zero-pad the new channels on both sides."""
    if stride > 1:
        x = x[:, ::stride, ::stride, :]
    extra = cout - x.shape[-1]
    if extra:
        x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))
    return x


class BasicBlock(nnx.Module):
    """Two 3x3 convs; `act(F(x) + shortcut(x))` if residual, else `act(F(x))`."""

    def __init__(self, cin: int, cout: int, stride: int, spec: BlockSpec, *, rngs: nnx.Rngs):
        self.spec, self.stride, self.cout = spec, stride, cout
        self.conv1 = Conv(cin, cout, 3, stride, spec.conv_impl, rngs=rngs)
        self.norm1 = Norm(cin if spec.preact else cout, spec.norm, rngs=rngs)
        self.conv2 = Conv(cout, cout, 3, 1, spec.conv_impl, rngs=rngs)
        self.norm2 = Norm(cout, spec.norm, rngs=rngs)
        projects = spec.residual and spec.shortcut == "B" and (stride != 1 or cin != cout)
        self.projection = Conv(cin, cout, 1, stride, spec.conv_impl, rngs=rngs) if projects else None
        self.projection_norm = Norm(cout, spec.norm and not spec.preact, rngs=rngs) if projects else None

    def shortcut(self, x: jax.Array, train: bool) -> jax.Array:
        if self.projection is not None:
            return self.projection_norm(self.projection(x), train)
        return shortcut_a(x, self.stride, self.cout)

    def __call__(self, x: jax.Array, train: bool, probe: bool = False) -> tuple[jax.Array, Probes]:
        """The block's output, and with `probe` its layers' response std and its branch ratio."""
        if self.spec.preact:  # He et al. 2016: BN-ReLU-conv twice, nothing after the addition
            first = self.conv1(jax.nn.relu(self.norm1(x, train)))
            branch = self.conv2(jax.nn.relu(self.norm2(first, train)))
        else:  # responses after BN, before the nonlinearity or the addition
            first = self.norm1(self.conv1(x), train)
            branch = self.norm2(self.conv2(jax.nn.relu(first)), train)
        identity = self.shortcut(x, train)
        out = branch + identity if self.spec.residual else branch
        if not self.spec.preact:
            out = jax.nn.relu(out)
        if not probe:
            return out, {}
        stats = {
            "response_std": jnp.stack([response_std(first), response_std(branch)]),
            "branch_ratio": branch_ratio(branch, identity),
        }
        return out, stats


class Stage(nnx.Module):
    """n blocks of one width: an optional downsampling block, then identical blocks scanned."""

    def __init__(self, cin: int, cout: int, stride: int, n: int, spec: BlockSpec, *, rngs: nnx.Rngs):
        changes_shape = stride != 1 or cin != cout
        self.first = BasicBlock(cin, cout, stride, spec, rngs=rngs) if changes_shape else None
        repeats = n - 1 if changes_shape else n
        self.blocks = (
            create_stacked(repeats, lambda r: BasicBlock(cout, cout, 1, spec, rngs=r), rngs)
            if repeats
            else None
        )

    def __call__(
        self, x: jax.Array, train: bool, *, probe: bool, remat: bool, unroll: bool
    ) -> tuple[jax.Array, list[Probes]]:
        """The stage's output and each of its block's probes (a leading block axis each)."""
        stats = []
        if self.first is not None:
            x, first = self.first(x, train, probe)
            stats.append(jax.tree.map(lambda v: v[None], first))
        if self.blocks is not None:
            x, stacked = apply_stacked(self.blocks, x, remat=remat, unroll=unroll, train=train, probe=probe)
            stats.append(stacked)
        return x, stats


class CifarResNet(nnx.Module):
    """3x3 conv (16) -> 3 stages of 2n 3x3 convs (16/32/64, stride 2 at stages 2, 3) -> GAP -> linear."""

    def __init__(
        self,
        depth: int,
        spec: BlockSpec,
        *,
        in_channels: int,
        num_classes: int,
        remat: bool = False,
        unroll: bool = False,
        rngs: nnx.Rngs,
    ):
        n = cifar_blocks_per_stage(depth)
        self.spec, self.remat, self.unroll = spec, remat, unroll
        self.stem = Conv(in_channels, STAGE_WIDTHS[0], 3, 1, spec.conv_impl, rngs=rngs)
        # Post-activation: BN-ReLU right after the stem. Pre-activation: BN-ReLU before pooling.
        self.stem_norm = Norm(STAGE_WIDTHS[0], spec.norm and not spec.preact, rngs=rngs)
        self.stages = nnx.List(
            Stage(cin, cout, 1 if i == 0 else 2, n, spec, rngs=rngs)
            for i, (cin, cout) in enumerate(
                zip((STAGE_WIDTHS[0], *STAGE_WIDTHS[:-1]), STAGE_WIDTHS, strict=True)
            )
        )
        self.final_norm = Norm(STAGE_WIDTHS[-1], spec.norm and spec.preact, rngs=rngs)
        self.head = Dense(STAGE_WIDTHS[-1], num_classes, rngs=rngs)

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        return self.forward(x, train, probe=False)[0]

    def forward(self, x: jax.Array, train: bool, probe: bool) -> tuple[jax.Array, Probes]:
        """Logits; with `probe`, also `response_std` per 3x3 layer (stem first), `branch_ratio` per block."""
        stem = self.stem_norm(self.stem(x), train)
        h = stem if self.spec.preact else jax.nn.relu(stem)
        per_block = []
        for stage in self.stages:
            h, stats = stage(h, train, probe=probe, remat=self.remat, unroll=self.unroll)
            per_block.extend(stats)
        if self.spec.preact:
            h = jax.nn.relu(self.final_norm(h, train))
        logits = self.head(h.mean(axis=(1, 2)))
        if not probe:
            return logits, {}
        blocks = jax.tree.map(lambda *parts: jnp.concatenate(parts), *per_block)
        return logits, {
            "response_std": jnp.concatenate([response_std(stem)[None], blocks["response_std"].reshape(-1)]),
            "branch_ratio": blocks["branch_ratio"],
        }

    def layer_kernels(self) -> list[jax.Array]:
        """Every weighted layer's kernel in depth order (stacked blocks unstacked): stem ... head."""
        kernels = [self.stem.kernel[...]]
        for stage in self.stages:
            if stage.first is not None:
                kernels += [stage.first.conv1.kernel[...], stage.first.conv2.kernel[...]]
            if stage.blocks is not None:
                pairs = zip(stage.blocks.conv1.kernel[...], stage.blocks.conv2.kernel[...], strict=True)
                kernels += [k for pair in pairs for k in pair]
        return [*kernels, self.head.kernel[...]]
