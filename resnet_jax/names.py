"""A run directory's name from its overrides: short enough for any file system, and safe for Orbax's globs."""

from __future__ import annotations

import hashlib
import re

# a directory name's budget in bytes: file systems allow 255 per name; a longer one keeps its first part and
# ends in a hash of the whole (the full overrides stay in the run's overrides.yaml)
NAME_BYTES = 200
NAME_HASH_CHARS = 16


# Orbax finds a checkpoint's files with glob patterns built from its path, so a `[...]` in a directory's name
# (a list override: optim.boundaries=[5,10]) is read as a character class and the checkpoint is never found
GLOB_SAFE = str.maketrans("[]", "()")
GLOB_CLASS = re.compile(r"[\[\]]")


def run_name(value: str) -> str:
    """A directory name for `value` (a run's overrides, or the sweep's name): `default` when empty, list
    brackets as parentheses (`GLOB_SAFE`), and a stable shortening when it passes `NAME_BYTES`: the same
    value always gets the same name."""
    if not value:
        return "default"
    value = value.translate(GLOB_SAFE)
    encoded = value.encode()
    if len(encoded) <= NAME_BYTES:
        return value
    digest = hashlib.sha256(encoded).hexdigest()[:NAME_HASH_CHARS]
    head = encoded[: NAME_BYTES - NAME_HASH_CHARS - 1].decode(errors="ignore")
    return f"{head.rstrip(',=')}-{digest}"
