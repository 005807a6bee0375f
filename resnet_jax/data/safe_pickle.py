"""Unpickling restricted to numpy arrays and plain builtins: a pickle that names anything else
(`os.system`, `subprocess.Popen`, ...) is refused before any of it runs."""

from __future__ import annotations

import codecs
import io
import pickle
from typing import Any

import numpy as np

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct, scalar
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct, scalar

# (module, name) pairs that CIFAR-10's batches (pickled numpy arrays, lists and dicts) need.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.multiarray", "scalar"): scalar,
    ("numpy._core.multiarray", "scalar"): scalar,
    # Python 3 writes bytes in protocol-2 pickles as _codecs.encode(str, "latin1"): a pure function.
    ("_codecs", "encode"): codecs.encode,
}


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asked for a global outside the allow-list."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(f"refused to load global {module}.{name}") from None


def safe_loads(data: bytes) -> Any:
    """`pickle.loads` for Python 2 era CIFAR batches (bytes keys), allowing only numpy and builtins."""
    return _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
