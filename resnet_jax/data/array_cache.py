"""A local cache of arrays derived deterministically from data a library ships (the digits' split).

Why: building the digits split imports scikit-learn, which takes a second, more than a tiny run's training;
every command would pay it. The cache is only ever a shortcut: an entry that cannot be read whole (a torn or
damaged file fails the zip format's CRC-32), or that fails its caller's check, is rebuilt from the source,
and an entry is written to a temporary file and renamed into place, so concurrent runs never read half of
one. Where the cache cannot be written (read-only home, full disk), runs go on without it.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

Arrays = dict[str, np.ndarray]


def folder() -> Path:
    """`$XDG_CACHE_HOME/resnet_jax` (by default `~/.cache/resnet_jax`), where the project keeps its caches."""
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "resnet_jax"


def load(path: Path, valid: Callable[[Arrays], bool]) -> Arrays | None:
    """The arrays stored at `path`, or None when they are absent, unreadable or not `valid`."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None
    return arrays if valid(arrays) else None


def store(path: Path, arrays: Arrays) -> None:
    """Write `arrays` to `path` whole or not at all; a cache that cannot be written is skipped."""
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as file:
            temporary = Path(file.name)
            np.savez(file, **arrays)
        os.replace(temporary, path)
    except OSError:
        return  # not cached: the next run builds the arrays again
    finally:
        if temporary is not None:  # gone once renamed; left over when writing or renaming failed
            temporary.unlink(missing_ok=True)


def cached(path: Path, build: Callable[[], Arrays], valid: Callable[[Arrays], bool]) -> Arrays:
    """The arrays at `path` when they are there and `valid`, else `build()`'s, stored for the next time."""
    arrays = load(path, valid)
    if arrays is None:
        arrays = build()
        store(path, arrays)
    return arrays
