"""He et al.'s CIFAR ResNets and their plain twins: basic blocks (2015, depth 6n+2) or bottleneck blocks
(2016, depth 9n+2: ResNet-164, ResNet-1001), post- or pre-activation.

`residual` is the only difference between a ResNet and its twin: same layers, same parameters, same init.
With shortcut option A (subsample + zero-pad channels) the shortcut has no parameters at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

from resnet_jax.models.depth import cifar_blocks_per_stage
from resnet_jax.models.layers import Conv, Dense, Norm, Probes, branch_ratio, response_std
from resnet_jax.models.stack import apply_stacked, create_stacked

STEM_WIDTH = 16
# each stage's output width; a bottleneck block works at a quarter of it (16, 32, 64) and expands 4x
STAGE_WIDTHS = {"basic": (16, 32, 64), "bottleneck": (64, 128, 256)}
BOTTLENECK_EXPANSION = 4


@dataclass(frozen=True)
class BlockSpec:
    """What every block of one network shares."""

    residual: bool
    norm: bool
    shortcut: str  # "A": subsample + zero-pad; "B": 1x1 projection where the shape changes
    preact: bool
    conv_impl: str
    block: str = "basic"  # basic: two 3x3 convs | bottleneck: 1x1 down, 3x3, 1x1 up (He et al. 2016)
    zero_init_residual: bool = (
        False  # the branch's last BatchNorm scale starts at 0: the block starts as identity
    )


def branch_layers(spec: BlockSpec, cin: int, cout: int, stride: int) -> list[tuple[int, int, int, int]]:
    """(kernel size, in, out, stride) of each conv of a block's branch, in order."""
    if spec.block == "basic":
        return [(3, cin, cout, stride), (3, cout, cout, 1)]
    inner = cout // BOTTLENECK_EXPANSION
    return [(1, cin, inner, 1), (3, inner, inner, stride), (1, inner, cout, 1)]


def shortcut_a(x: jax.Array, stride: int, cout: int) -> jax.Array:
    """Option A: take every `stride`-th pixel and zero-pad the new channels on both sides."""
    if stride > 1:
        x = x[:, ::stride, ::stride, :]
    extra = cout - x.shape[-1]
    if extra:
        x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))
    return x


class Block(nnx.Module):
    """A branch of convs `conv1..convK` with BatchNorms `norm1..normK`; `act(F(x) + shortcut(x))` if residual,
    else `act(F(x))`."""

    def __init__(self, cin: int, cout: int, stride: int, spec: BlockSpec, *, rngs: nnx.Rngs):
        self.spec, self.stride, self.cout = spec, stride, cout
        layers = branch_layers(spec, cin, cout, stride)
        self.depth = len(layers)
        for i, (size, c_in, c_out, s) in enumerate(layers, start=1):
            setattr(self, f"conv{i}", Conv(c_in, c_out, size, s, spec.conv_impl, rngs=rngs))
            last = i == len(layers)
            zero = spec.zero_init_residual and last  # the branch's last scale, before or after its last conv
            setattr(
                self, f"norm{i}", Norm(c_in if spec.preact else c_out, spec.norm, zero_scale=zero, rngs=rngs)
            )
        projects = spec.residual and spec.shortcut == "B" and (stride != 1 or cin != cout)
        self.projection = Conv(cin, cout, 1, stride, spec.conv_impl, rngs=rngs) if projects else None
        self.projection_norm = Norm(cout, spec.norm and not spec.preact, rngs=rngs) if projects else None

    def convs(self) -> list[Conv]:
        return [getattr(self, f"conv{i}") for i in range(1, self.depth + 1)]

    def shortcut(self, x: jax.Array, train: bool) -> jax.Array:
        if self.projection is not None:
            return self.projection_norm(self.projection(x), train)
        return shortcut_a(x, self.stride, self.cout)

    def __call__(self, x: jax.Array, train: bool, probe: bool = False) -> tuple[jax.Array, Probes]:
        """The block's output, and with `probe` its layers' response std and its branch ratio."""
        h, responses = x, []
        for i, conv in enumerate(self.convs(), start=1):
            norm = getattr(self, f"norm{i}")
            if self.spec.preact:  # He et al. 2016: BN-ReLU-conv, nothing after the addition
                h = conv(jax.nn.relu(norm(h, train)))
                responses.append(h)
            else:  # conv-BN, ReLU between the layers; responses after BN, before the ReLU or the addition
                h = norm(conv(h), train)
                responses.append(h)
                if i < self.depth:
                    h = jax.nn.relu(h)
        branch, identity = h, self.shortcut(x, train)
        out = branch + identity if self.spec.residual else branch
        if not self.spec.preact:
            out = jax.nn.relu(out)
        if not probe:
            return out, {}
        stats = {
            "response_std": jnp.stack([response_std(r) for r in responses]),
            "branch_ratio": branch_ratio(branch, identity),
        }
        return out, stats


class Stage(nnx.Module):
    """n blocks of one width: an optional downsampling block, then identical blocks scanned."""

    def __init__(self, cin: int, cout: int, stride: int, n: int, spec: BlockSpec, *, rngs: nnx.Rngs):
        changes_shape = stride != 1 or cin != cout
        self.first = Block(cin, cout, stride, spec, rngs=rngs) if changes_shape else None
        repeats = n - 1 if changes_shape else n
        self.blocks = (
            create_stacked(repeats, lambda r: Block(cout, cout, 1, spec, rngs=r), rngs) if repeats else None
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

    def kernels(self) -> list[jax.Array]:
        """The stage's weighted layers in depth order (stacked blocks unstacked), projections left out."""
        kernels = [conv.kernel[...] for conv in self.first.convs()] if self.first is not None else []
        if self.blocks is not None:
            per_layer = [conv.kernel[...] for conv in self.blocks.convs()]
            kernels += [layer[b] for b in range(per_layer[0].shape[0]) for layer in per_layer]
        return kernels


class CifarResNet(nnx.Module):
    """3x3 conv (16) -> 3 stages of n blocks (stride 2 at stages 2, 3) -> GAP -> linear."""

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
        n = cifar_blocks_per_stage(depth, spec.block)
        widths = STAGE_WIDTHS[spec.block]
        self.spec, self.remat, self.unroll = spec, remat, unroll
        self.stem = Conv(in_channels, STEM_WIDTH, 3, 1, spec.conv_impl, rngs=rngs)
        # Post-activation: BN-ReLU right after the stem. Pre-activation: BN-ReLU before pooling.
        self.stem_norm = Norm(STEM_WIDTH, spec.norm and not spec.preact, rngs=rngs)
        self.stages = nnx.List(
            Stage(cin, cout, 1 if i == 0 else 2, n, spec, rngs=rngs)
            for i, (cin, cout) in enumerate(zip((STEM_WIDTH, *widths[:-1]), widths, strict=True))
        )
        self.final_norm = Norm(widths[-1], spec.norm and spec.preact, rngs=rngs)
        self.head = Dense(widths[-1], num_classes, rngs=rngs)

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        return self.forward(x, train, probe=False)[0]

    def forward(self, x: jax.Array, train: bool, probe: bool) -> tuple[jax.Array, Probes]:
        """Logits; with `probe`, also `response_std` per conv layer (stem first), `branch_ratio` per block."""
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
            kernels += stage.kernels()
        return [*kernels, self.head.kernel[...]]
