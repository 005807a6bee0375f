"""Where the oneDNN kernels' build inputs are: the XLA FFI headers and oneDNN's headers and library.

Why a module of its own: CMake (`CMakeLists.txt`, at package build time) runs it as a script in the build
environment, and the loader (`resnet_jax.ops.onednn`, at run time) asks it for the library to map; it imports
neither jax's nor this package's code at module level, so it runs before either is importable. oneDNN comes
from the `onednn-cpu-gomp` and `onednn-devel-cpu-gomp` wheels, which put their files beside, not inside,
site-packages: found through their distributions' file lists, not `sys.prefix` (pip's isolated build
environment is not one).
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path


class NotFound(RuntimeError):
    """A build input is not installed in this environment."""


def _installed_file(distribution: str, relative_suffix: str) -> Path:
    """The file of `distribution` whose recorded path ends with `relative_suffix`."""
    try:
        files = metadata.distribution(distribution).files or []
    except metadata.PackageNotFoundError:
        raise NotFound(f"{distribution} is not installed (pip install {distribution})") from None
    for file in files:
        if str(file).endswith(relative_suffix):
            return Path(file.locate()).resolve()
    raise NotFound(f"{distribution} has no {relative_suffix}")


def dnnl_library() -> Path:
    """oneDNN's shared library (`libdnnl.so`, the soname's file)."""
    return _installed_file("onednn-cpu-gomp", "libdnnl.so")


def dnnl_include() -> Path:
    """The folder holding `oneapi/dnnl/dnnl.hpp`."""
    return _installed_file("onednn-devel-cpu-gomp", "oneapi/dnnl/dnnl.hpp").parents[2]


def ffi_include() -> Path:
    """jaxlib's XLA FFI headers."""
    import jax.ffi  # here: the module runs without jax until asked for this

    return Path(jax.ffi.include_dir())


def main() -> None:
    """Print the three paths as one CMake list; say what is missing on stderr with exit status 1."""
    try:
        print(";".join(str(p) for p in (ffi_include(), dnnl_include(), dnnl_library())))
    except (NotFound, ImportError) as err:
        print(err, file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
