"""oneDNN kernels as XLA custom calls on CPU, built with the package from `onednn_conv.cc` and `_dense.cc`.

Why: XLA's CPU convolution runs ResNet-20 at a third of PyTorch's speed (PyTorch calls oneDNN), and
20-40x slower inside loops (jax-ml/jax#12868). The same oneDNN kernels, called through the XLA FFI,
close that gap in and out of `lax.scan`. The dense net's stack of blocks gets one call each way
(`resnet_jax.ops.dense_stack`). The package's build (scikit-build-core running `CMakeLists.txt`, so every
`pip install`, editable or not, and every wheel) compiles them into `libresnet_jax_onednn.so` beside this
module, with the SHA-256 of the library and of its sources beside it; the library is loaded only when both
match (a damaged file, or sources edited since the build, would otherwise run silently).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding, PartitionSpec

from resnet_jax.ops import onednn_paths

# in the order CMakeLists.txt digests them
SOURCES = tuple(Path(__file__).with_name(n) for n in ("onednn_conv.cc", "onednn_dense.cc", "onednn_ffi.h"))
LIBRARY = "libresnet_jax_onednn.so"
TARGETS = ("ConvForward", "ConvInputGrad", "ConvKernelGrad", "DenseStackForward", "DenseStackBackward")
PREFIX = "resnet_jax_onednn_"
REBUILD = "reinstall the package to build them: make install, or pip install -e ."
log = logging.getLogger(__name__)


class OneDnnUnavailable(RuntimeError):
    """oneDNN, a C++ compiler or a sound built library is missing on this machine."""


def library_path() -> Path:
    """The built library: `$RESNET_JAX_ONEDNN_LIBRARY` (a build of one's own), else the one the installed
    package records (in site-packages also for an editable install, whose Python files stay in the tree)."""
    if os.environ.get("RESNET_JAX_ONEDNN_LIBRARY"):
        return Path(os.environ["RESNET_JAX_ONEDNN_LIBRARY"])
    for distribution in metadata.distributions(name="resnet_jax"):  # an old egg-info may come first
        for file in distribution.files or []:
            if str(file).endswith(f"resnet_jax/ops/{LIBRARY}"):
                return Path(file.locate())
    return Path(__file__).with_name(LIBRARY)


def _digests(library: Path) -> dict[str, str]:
    """What the build recorded beside the library: `library <sha256>` and `sources <sha256>` lines."""
    lines = library.with_suffix(".sha256").read_text().splitlines()
    return dict(line.split(" ", 1) for line in lines if " " in line)


def sources_digest() -> str:
    """The SHA-256 of the sources' SHA-256s, as `CMakeLists.txt` computes it at build time."""
    digests = "".join(hashlib.sha256(path.read_bytes()).hexdigest() for path in SOURCES)
    return hashlib.sha256(digests.encode()).hexdigest()


def _check(library: Path) -> None:
    """Raise unless `library` is there, is the bytes its build recorded, and was built from these sources."""
    if not library.exists():
        raise OneDnnUnavailable(f"the oneDNN kernels are not built ({REBUILD})")
    try:
        recorded = _digests(library)
    except OSError:
        recorded = {}
    if recorded.get("library") != hashlib.sha256(library.read_bytes()).hexdigest():
        raise OneDnnUnavailable(
            f"the oneDNN kernels {library} are damaged or not this build's (checksum mismatch); {REBUILD}"
        )
    if recorded.get("sources") != sources_digest():
        raise OneDnnUnavailable(f"the oneDNN kernels {library} were built from other sources; {REBUILD}")


def unavailable_reason() -> str | None:
    """Why the oneDNN kernels cannot run in this process, or None when they can."""
    try:
        register()
    except OneDnnUnavailable as err:
        return str(err)
    return None


@functools.cache
def register() -> None:
    """Load the checked library and register its handlers with XLA (once per process). oneDNN's library is
    mapped first, from the environment's oneDNN wheel, so the kernels find it wherever the venv lives."""
    library = library_path()
    _check(library)
    try:
        ctypes.CDLL(str(onednn_paths.dnnl_library()), mode=ctypes.RTLD_GLOBAL)
        loaded = ctypes.cdll.LoadLibrary(str(library))
    except (OSError, onednn_paths.NotFound) as err:
        raise OneDnnUnavailable(f"cannot load {library}: {err}; {REBUILD}") from None
    for name in TARGETS:
        jax.ffi.register_ffi_target(PREFIX + name, jax.ffi.pycapsule(getattr(loaded, name)), platform="cpu")


@functools.cache
def available() -> bool:
    """Whether the oneDNN kernels can run here; where not, says why once (CPU runs then use the fallbacks)."""
    reason = unavailable_reason()
    if reason is not None:
        log.warning(
            "oneDNN kernels unavailable (%s); CPU runs use the slower shifted conv and XLA's dense", reason
        )
    return reason is None


def _call(name: str, shape: tuple[int, ...], *args: jax.Array, stride: int) -> jax.Array:
    register()
    out = jax.ShapeDtypeStruct(shape, jnp.float32)
    return jax.ffi.ffi_call(PREFIX + name, out, vmap_method="sequential")(*args, stride=np.int64(stride))


def batch_partitioned(local: Callable[..., Any], rule: str, factor: str = "b") -> Callable[..., Any]:
    """`local`, one device's call, as an op that XLA's partitioner splits along the batch.

    `rule` names the operands' and results' axes in Shardy's notation, `factor` (`b`, the batch, or `m`, a
    population's members) the one factor split across devices; everything else is whole on every device. A
    result without it is a sum over it (a parameter gradient): each device computes its shard's share and
    the shares are all-reduced. Why: left alone, XLA's partitioner gathers the whole batch onto every device
    before a custom call, so each device would compute every example.
    """
    operands, results = ([term.split() for term in side.split(",")] for side in rule.split("->"))
    operand_axes = [axes.index(factor) if factor in axes else None for axes in operands]
    result_axes = [axes.index(factor) if factor in axes else None for axes in results]
    single = len(results) == 1  # `local` returns an array, else a tuple

    def partition(mesh, arg_shapes, result_shape):
        first = next(i for i, axis in enumerate(operand_axes) if axis is not None)
        spec = arg_shapes[first].sharding.spec
        split = spec[operand_axes[first]] if len(spec) > operand_axes[first] else None  # a mesh axis, or None

        def sharding(axis: int | None) -> NamedSharding:
            placement = PartitionSpec() if axis is None else PartitionSpec(*[None] * axis, split)
            return NamedSharding(mesh, placement)

        def lower(*args: jax.Array):
            out = local(*args)
            if split is None:
                return out
            outs = [
                jax.lax.psum(x, split) if axis is None else x
                for x, axis in zip([out] if single else out, result_axes, strict=True)
            ]
            return outs[0] if single else tuple(outs)

        shardings = tuple(sharding(axis) for axis in result_axes)
        return mesh, lower, shardings[0] if single else shardings, tuple(sharding(a) for a in operand_axes)

    partitioned = custom_partitioning(local)
    # every factor but the split one, in the order of first appearance (Shardy wants them so)
    others = dict.fromkeys(f for axes in operands + results for f in axes if f != factor)
    partitioned.def_partition(
        partition,
        sharding_rule=rule,
        reduction_factors=() if any(factor in axes for axes in results) else (factor,),
        need_replication_factors=tuple(others),
    )
    return partitioned


# The handlers' operands and results in Shardy's notation: activations NHWC (b h w c in, b p q o out),
# kernel HWIO (i j c o).
RULES = {
    "ConvForward": "b h w c, i j c o -> b p q o",
    "ConvInputGrad": "b p q o, i j c o -> b h w c",
    "ConvKernelGrad": "b h w c, b p q o -> i j c o",
}


@functools.cache
def _op(name: str, stride: int, dims: tuple[int, ...]) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """Handler `name` for one geometry, split along the batch across devices (`batch_partitioned`) and
    folded into the batch under `vmap` (`custom_partitioning` has no batching rule of its own). The result
    has shape `(batch, *dims)`, or `dims` for the kernel gradient, summed over the batch shards."""
    sums_batch = name == "ConvKernelGrad"

    def local(a: jax.Array, b: jax.Array) -> jax.Array:
        return _call(name, dims if sums_batch else (a.shape[0], *dims), a, b, stride=stride)

    op = jax.custom_batching.custom_vmap(batch_partitioned(local, RULES[name]))

    @op.def_vmap
    def fold_into_batch(axis_size: int, batched: list[bool], a: jax.Array, b: jax.Array):
        if batched[1] or sums_batch:  # a batched kernel (or a per-member kernel gradient): one call each
            a = a if batched[0] else jnp.broadcast_to(a, (axis_size, *a.shape))
            b = b if batched[1] else jnp.broadcast_to(b, (axis_size, *b.shape))
            return jax.lax.map(lambda ab: op(*ab), (a, b)), True
        merged = op(a.reshape(-1, *a.shape[2:]), b)  # vmap over activations: more batch, one call
        return merged.reshape(axis_size, -1, *merged.shape[1:]), True

    return op


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_onednn(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """float32 NHWC x HWIO convolution with symmetric `k // 2` zero padding, computed by oneDNN."""
    _, h, w, _ = x.shape
    return _op("ConvForward", stride, (-(-h // stride), -(-w // stride), kernel.shape[-1]))(x, kernel)


def _forward(x: jax.Array, kernel: jax.Array, stride: int) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    return conv_onednn(x, kernel, stride), (x, kernel)


def _backward(stride: int, saved: tuple[jax.Array, jax.Array], dy: jax.Array) -> tuple[jax.Array, jax.Array]:
    x, kernel = saved
    dx = _op("ConvInputGrad", stride, tuple(x.shape[1:]))(dy, kernel)
    # one after the other: XLA would run the two independent calls at once, each with all cores (~8 % slower)
    dx, x, dy = jax.lax.optimization_barrier((dx, x, dy))
    dkernel = _op("ConvKernelGrad", stride, tuple(kernel.shape))(x, dy)
    return dx, dkernel


conv_onednn.defvjp(_forward, _backward)


def main() -> None:
    """`python -m resnet_jax.ops.onednn`: say which kernels CPU runs get, and why."""
    reason = unavailable_reason()
    if reason is None:
        print(f"oneDNN kernels: {library_path()}")
    else:
        print(f"oneDNN kernels unavailable ({reason}); CPU runs use conv_impl=shifted and dense_impl=xla")


if __name__ == "__main__":
    main()
