"""The one place where kernels are chosen: which convolution and which MLP block stack a run computes with.

Models pass the configured name (`model.conv_impl`, `model.dense_impl`) through to `conv2d` and the MLP
asks `select` before running its blocks; nothing else decides. `auto` means what is fast on the backend:
oneDNN custom calls on CPU where the package's build compiled the library (`resnet_jax.ops.onednn`), XLA's
own ops on GPU/TPU. The oneDNN
kernels compute float32 only, and the fused block stack cannot show per-block pre-activations (probes) or
rematerialise: those calls take each op's fallback.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from resnet_jax.errors import ConfigError
from resnet_jax.ops import onednn


@dataclass(frozen=True)
class KernelChoice:
    key: str  # the config key that names it
    choices: tuple[str, ...]
    auto_on_cpu: str  # what `auto` picks on CPU where oneDNN is built; XLA elsewhere
    without_onednn: str  # what runs instead of oneDNN where it cannot (not built, bfloat16, probes, remat)
    # what `auto` picks for a population (`jax.vmap` over members) on GPU/TPU, where XLA's own op is not the
    # fastest under vmap: measured on an H200 (README "Populations"), 8 ResNet-20 members at 0.92x one run's
    # images/s with the shifted conv against 0.83x with XLA's (which turns a vmapped conv into a grouped one)
    auto_in_population_elsewhere: str


TABLE = {
    "conv": KernelChoice(
        "model.conv_impl", ("auto", "xla", "shifted", "onednn"), "onednn", "shifted", "shifted"
    ),
    "dense": KernelChoice("model.dense_impl", ("auto", "xla", "onednn"), "onednn", "xla", "xla"),
}


def select(op: str, requested: str, *, dtype: jnp.dtype = jnp.float32, needs_scan: bool = False) -> str:
    """The implementation that runs `op` for a call in `dtype`; `needs_scan`: the caller must see every
    block (probes) or rematerialise, which only the MLP's scanned blocks can."""
    entry = TABLE[op]
    impl = requested
    if impl == "auto":
        impl = entry.auto_on_cpu if jax.default_backend() == "cpu" else "xla"
    if impl == "onednn" and (jnp.dtype(dtype) != jnp.float32 or needs_scan or not onednn.available()):
        impl = entry.without_onednn
    return impl


def for_population(op: str, requested: str) -> str:
    """The name a population's members side by side (`vmap`; members in turn take a single run's) compute
    `op` with: `auto` resolved for vmapped members on GPU/TPU (on CPU, `auto` already is the fastest under
    vmap: the oneDNN dense stack takes all members in one call, and oneDNN's convolution, members in turn,
    beats the alternatives: README "Populations")."""
    if requested != "auto" or jax.default_backend() == "cpu":
        return requested
    return TABLE[op].auto_in_population_elsewhere


def check(op: str, requested: str) -> None:
    """A configured name that cannot run here is a one-line error: unknown, or oneDNN asked for explicitly
    where it is not built or the backend is not a CPU."""
    entry = TABLE[op]
    if requested not in entry.choices:
        raise ConfigError(
            f"{entry.key}={requested!r} is not allowed; choose one of: {', '.join(entry.choices)}"
        )
    if requested != "onednn":
        return
    others = [c for c in entry.choices if c != "onednn"]
    instead = f"use {', '.join(others[:-1])} or {others[-1]}"
    if jax.default_backend() != "cpu":
        raise ConfigError(f"{entry.key}=onednn runs on CPU only, not {jax.default_backend()}; {instead}")
    reason = onednn.unavailable_reason()
    if reason is not None:
        raise ConfigError(f"{entry.key}=onednn cannot run here: {reason}; {instead}")
