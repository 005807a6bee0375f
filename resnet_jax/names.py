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


# a float a search sampled (`optim.lr=0.012345678901234567`) is named by its first digits: the run's config
# keeps the exact value, and two values that share a name are refused as different configurations
FLOAT_VALUE = re.compile(r"(?<==)-?(?:\d+\.\d*|\.\d+)(?:[eE][-+]?\d+)?(?=[,)]|$)")
FLOAT_DIGITS_KEPT = 6
FLOAT_DIGITS_NAMED = 8  # values with more significant digits than this are shortened


def _readable_float(match: re.Match) -> str:
    text = match.group(0)
    mantissa = re.split(r"[eE]", text)[0]
    significant = mantissa.replace("-", "").replace(".", "").lstrip("0")
    return f"{float(text):.{FLOAT_DIGITS_KEPT}g}" if len(significant) > FLOAT_DIGITS_NAMED else text


def run_name(value: str) -> str:
    """A directory name for `value` (a run's overrides, or the sweep's name): `default` when empty, list
    brackets as parentheses (`GLOB_SAFE`), long floats by their first digits, and a stable shortening when
    it passes `NAME_BYTES`: the same value always gets the same name."""
    if not value:
        return "default"
    value = FLOAT_VALUE.sub(_readable_float, value.translate(GLOB_SAFE))
    encoded = value.encode()
    if len(encoded) <= NAME_BYTES:
        return value
    digest = hashlib.sha256(encoded).hexdigest()[:NAME_HASH_CHARS]
    head = encoded[: NAME_BYTES - NAME_HASH_CHARS - 1].decode(errors="ignore")
    return f"{head.rstrip(',=')}-{digest}"
