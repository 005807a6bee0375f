"""oneDNN convolutions as XLA custom calls on CPU, built from `onednn_conv.cc` on first use.

Why: XLA's CPU convolution runs ResNet-20 at a third of PyTorch's speed (PyTorch calls oneDNN), and
20-40x slower inside loops (jax-ml/jax#12868). The same oneDNN kernels, called through the XLA FFI,
close that gap in and out of `lax.scan`. oneDNN comes from the `onednn-cpu-gomp` wheels (libraries
and headers under `sys.prefix`); the shared library is compiled once per source, jaxlib version and
environment, and cached under `$RESNET_JAX_CACHE` (default `~/.cache/resnet_jax`).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

SOURCE = Path(__file__).with_name("onednn_conv.cc")
TARGETS = ("ConvForward", "ConvInputGrad", "ConvKernelGrad")
PREFIX = "resnet_jax_onednn_"
log = logging.getLogger(__name__)


class OneDnnUnavailable(RuntimeError):
    """oneDNN, a C++ compiler or the built library is missing on this machine."""


def _cache_dir() -> Path:
    return Path(os.environ.get("RESNET_JAX_CACHE", Path.home() / ".cache" / "resnet_jax"))


def library_path() -> Path:
    """Where the library for this source, jaxlib and environment lives (any of them new: a new file; the
    environment because the library finds oneDNN through a path into it)."""
    key = SOURCE.read_bytes() + f"{jaxlib.__version__} {sys.prefix}".encode()
    digest = hashlib.sha256(key).hexdigest()[:16]
    return _cache_dir() / f"onednn_conv-{digest}.so"


def build() -> Path:
    """Compile `onednn_conv.cc` unless an up-to-date build is cached; atomic, so parallel jobs may race."""
    target = library_path()
    if target.exists():
        return target
    prefix = Path(sys.prefix)
    if (
        not (prefix / "include" / "oneapi" / "dnnl" / "dnnl.hpp").exists()
        or not (prefix / "lib" / "libdnnl.so").exists()
    ):
        raise OneDnnUnavailable(
            f"oneDNN is not installed under {prefix}: pip install onednn-cpu-gomp onednn-devel-cpu-gomp"
        )
    compiler = shutil.which(os.environ.get("CXX", "c++"))
    if compiler is None:
        raise OneDnnUnavailable("no C++ compiler (set CXX or install g++) to build the oneDNN convolution")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / target.name
        cmd = [compiler, "-O2", "-std=c++17", "-shared", "-fPIC", "-w", str(SOURCE), "-o", str(out),
               f"-I{prefix / 'include'}", f"-I{jax.ffi.include_dir()}", f"-L{prefix / 'lib'}", "-ldnnl",
               f"-Wl,-rpath,{prefix / 'lib'}"]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise OneDnnUnavailable(f"building {SOURCE.name} failed: {done.stderr.strip()[-2000:]}")
        os.replace(out, target)
    return target


@functools.cache
def register() -> None:
    """Load the library and register its three handlers with XLA (once per process)."""
    library = ctypes.cdll.LoadLibrary(str(build()))
    for name in TARGETS:
        jax.ffi.register_ffi_target(PREFIX + name, jax.ffi.pycapsule(getattr(library, name)), platform="cpu")


@functools.cache
def available() -> bool:
    """Whether the oneDNN convolution can run here (the CPU backend's default when it can)."""
    try:
        register()
    except (OneDnnUnavailable, OSError) as err:
        log.warning("oneDNN convolution unavailable (%s); CPU runs use the slower shifted conv", err)
        return False
    return True


def _call(name: str, shape: tuple[int, ...], *args: jax.Array, stride: int) -> jax.Array:
    register()
    out = jax.ShapeDtypeStruct(shape, jnp.float32)
    return jax.ffi.ffi_call(PREFIX + name, out, vmap_method="sequential")(*args, stride=np.int64(stride))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_onednn(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
    """float32 NHWC x HWIO convolution with symmetric `k // 2` zero padding, computed by oneDNN."""
    n, h, w, _ = x.shape
    return _call(
        "ConvForward", (n, -(-h // stride), -(-w // stride), kernel.shape[-1]), x, kernel, stride=stride
    )


def _forward(x: jax.Array, kernel: jax.Array, stride: int) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    return conv_onednn(x, kernel, stride), (x, kernel)


def _backward(stride: int, saved: tuple[jax.Array, jax.Array], dy: jax.Array) -> tuple[jax.Array, jax.Array]:
    x, kernel = saved
    dx = _call("ConvInputGrad", x.shape, dy, kernel, stride=stride)
    # one after the other: XLA would run the two independent calls at once, each with all cores (~8 % slower)
    dx, x, dy = jax.lax.optimization_barrier((dx, x, dy))
    dkernel = _call("ConvKernelGrad", kernel.shape, x, dy, stride=stride)
    return dx, dkernel


conv_onednn.defvjp(_forward, _backward)


def main() -> None:
    """`python -m resnet_jax.ops.onednn`: build now (`make install` does) and say which conv CPU runs get."""
    try:
        print(f"oneDNN convolution: {build()}")
    except OneDnnUnavailable as err:
        print(f"oneDNN convolution unavailable ({err}); CPU runs use model.conv_impl=shifted")


if __name__ == "__main__":
    main()
