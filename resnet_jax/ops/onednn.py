"""oneDNN kernels as XLA custom calls on CPU, built from `onednn_conv.cc` and `onednn_dense.cc` on request.

Why: XLA's CPU convolution runs ResNet-20 at a third of PyTorch's speed (PyTorch calls oneDNN), and
20-40x slower inside loops (jax-ml/jax#12868). The same oneDNN kernels, called through the XLA FFI,
close that gap in and out of `lax.scan`. The dense net's stack of blocks gets one call each way
(`resnet_jax.ops.dense_stack`). oneDNN comes from the `onednn-cpu-gomp` wheels (libraries and headers
under `sys.prefix`); the shared library is compiled by `python -m resnet_jax.ops.onednn` (`make install`)
once per source, jaxlib, oneDNN, compiler and environment, cached under `$RESNET_JAX_CACHE` (default
`~/.cache/resnet_jax`) with its SHA-256, and loaded only when its bytes match.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding, PartitionSpec

SOURCES = tuple(Path(__file__).with_name(name) for name in ("onednn_conv.cc", "onednn_dense.cc"))
HEADER = Path(__file__).with_name("onednn_ffi.h")
TARGETS = ("ConvForward", "ConvInputGrad", "ConvKernelGrad", "DenseStackForward", "DenseStackBackward")
PREFIX = "resnet_jax_onednn_"
BUILD_COMMAND = "python -m resnet_jax.ops.onednn"
log = logging.getLogger(__name__)


class OneDnnUnavailable(RuntimeError):
    """oneDNN, a C++ compiler or a sound built library is missing on this machine."""


def _cache_dir() -> Path:
    return Path(os.environ.get("RESNET_JAX_CACHE", Path.home() / ".cache" / "resnet_jax"))


def _compiler() -> str | None:
    return shutil.which(os.environ.get("CXX", "c++"))


@functools.cache
def _compiler_identity(compiler: str | None) -> str:
    """The compiler's path and version line: a library built by another compiler is another library."""
    if compiler is None:
        return "none"
    try:
        done = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return f"{compiler} (no version)"
    return f"{compiler} {done.stdout.splitlines()[0] if done.stdout else ''}"


def _onednn_version() -> str:
    """DNNL_VERSION_* from the installed headers (the version the kernels compile against)."""
    header = Path(sys.prefix) / "include" / "oneapi" / "dnnl" / "dnnl_version.h"
    try:
        text = header.read_text()
    except OSError:
        return "none"
    parts = [
        re.search(rf"#define DNNL_VERSION_{p}\s+(\S+)", text) for p in ("MAJOR", "MINOR", "PATCH", "HASH")
    ]
    return ".".join(m.group(1) for m in parts if m)


def library_path() -> Path:
    """`onednn-<environment>-<sources>.so` in the cache. The environment: jaxlib, `sys.prefix` (the library
    finds oneDNN through a path into it), the oneDNN version and the compiler; the sources: their bytes."""
    key = f"{jaxlib.__version__} {sys.prefix} {_onednn_version()} {_compiler_identity(_compiler())}"
    env = hashlib.sha256(key.encode()).hexdigest()[:8]
    code = hashlib.sha256(b"".join(path.read_bytes() for path in (*SOURCES, HEADER))).hexdigest()[:12]
    return _cache_dir() / f"onednn-{env}-{code}.so"


def _digest_path(library: Path) -> Path:
    return library.with_suffix(".sha256")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _verified(library: Path) -> bool:
    """The library exists and its bytes are the ones recorded when it was built (a damaged or foreign file
    in the cache would otherwise be mapped into the process and could kill it with a bus error)."""
    try:
        return _digest_path(library).read_text().strip() == _sha256(library)
    except OSError:
        return False


def _remove_older_builds(target: Path) -> None:
    """Builds of older sources for the same environment: `target` replaces them (a process that still has one
    loaded keeps its mapping). Other environments' builds stay."""
    env = target.name.split("-")[1]
    for old in target.parent.glob(f"onednn-{env}-*"):
        if old not in (target, _digest_path(target)):
            old.unlink(missing_ok=True)


def _compile_command(compiler: str, prefix: Path, out: Path) -> list[str]:
    """The kernels' build. -fopenmp: libgomp (oneDNN's runtime), whose thread count sizes the dense stack's
    pool; the libraries' headers are system headers (their warnings are theirs), ours are held to -Wall
    -Wextra."""
    include, lib = str(prefix / "include"), prefix / "lib"
    flags = ["-O3", "-std=c++17", "-fopenmp", "-shared", "-fPIC", "-Wall", "-Wextra"]
    headers = ["-isystem", include, "-isystem", jax.ffi.include_dir()]
    return [
        compiler,
        *flags,
        *map(str, SOURCES),
        "-o",
        str(out),
        *headers,
        f"-L{lib}",
        "-ldnnl",
        f"-Wl,-rpath,{lib}",
    ]


def build() -> Path:
    """Compile the sources unless a verified build is cached (a damaged one is rebuilt). Atomic, so parallel
    builds may race; a new build removes this environment's older ones, so the cache does not grow."""
    target = library_path()
    if _verified(target):
        return target
    prefix = Path(sys.prefix)
    if (
        not (prefix / "include" / "oneapi" / "dnnl" / "dnnl.hpp").exists()
        or not (prefix / "lib" / "libdnnl.so").exists()
    ):
        raise OneDnnUnavailable(
            f"oneDNN is not installed under {prefix}: pip install onednn-cpu-gomp onednn-devel-cpu-gomp"
        )
    compiler = _compiler()
    if compiler is None:
        raise OneDnnUnavailable("no C++ compiler (set CXX or install g++) to build the oneDNN kernels")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / target.name
        done = subprocess.run(_compile_command(compiler, prefix, out), capture_output=True, text=True)
        if done.returncode != 0:
            raise OneDnnUnavailable(f"building the oneDNN kernels failed: {done.stderr.strip()[-2000:]}")
        if done.stderr.strip():
            log.warning("the oneDNN kernels built with compiler warnings:\n%s", done.stderr.strip())
        digest = Path(tmp) / _digest_path(target).name
        digest.write_text(_sha256(out) + "\n")
        os.replace(digest, _digest_path(target))
        os.replace(out, target)
    _remove_older_builds(target)
    return target


def unavailable_reason() -> str | None:
    """Why the oneDNN kernels cannot run in this process, or None when they can."""
    try:
        register()
    except OneDnnUnavailable as err:
        return str(err)
    return None


@functools.cache
def register() -> None:
    """Load the verified library and register its handlers with XLA (once per process). Never builds."""
    library = library_path()
    if not library.exists():
        raise OneDnnUnavailable(
            f"the oneDNN kernels are not built (run `{BUILD_COMMAND}`; make install does)"
        )
    if not _verified(library):
        raise OneDnnUnavailable(
            f"the cached oneDNN kernels {library} are damaged or not this build's (checksum mismatch); "
            f"rebuild them with `{BUILD_COMMAND}`"
        )
    try:
        loaded = ctypes.cdll.LoadLibrary(str(library))
    except OSError as err:
        raise OneDnnUnavailable(f"cannot load {library}: {err}; rebuild it with `{BUILD_COMMAND}`") from None
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
    """`python -m resnet_jax.ops.onednn`: build now (`make install` does); say which kernels CPU runs get."""
    try:
        print(f"oneDNN kernels: {build()}")
    except OneDnnUnavailable as err:
        print(f"oneDNN kernels unavailable ({err}); CPU runs use conv_impl=shifted and dense_impl=xla")


if __name__ == "__main__":
    main()
