"""Orbax checkpoints: the whole training state plus what rebuilds the run directory's record (the metrics rows
logged so far, the summary, the config), with a SHA-256 of the state's bytes.

The state is stored as a flat {path: array} dict, so a checkpoint of another model is recognised by its keys
and shapes instead of a shape traceback. Orbax writes each step into a temporary folder and renames it when
complete, so a kill mid-save leaves the previous checkpoints intact; the checksum catches what a rename cannot
(a disk that corrupted bytes later). Data order and augmentation derive from (seed, step), so the step is the
whole data position. Only `resnet_jax.rundir` uses this module: it owns the folder.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from resnet_jax import faults, storage
from resnet_jax.distributed import host_copy


class DamagedCheckpoint(Exception):
    """A checkpoint that cannot be read back whole and as it was written."""


def _key(path: tuple) -> str:
    return "/".join(str(getattr(p, "key", getattr(p, "name", getattr(p, "idx", p)))) for p in path)


def flatten(tree: Any) -> dict[str, Any]:
    """{"params/stages/0/blocks/conv1/kernel/value": array, ...}"""
    return {_key(path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def digest(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over every array's name, dtype, shape and bytes."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        value = np.ascontiguousarray(arrays[name])
        h.update(f"{name} {value.dtype} {value.shape}".encode())
        h.update(value.tobytes())
    return h.hexdigest()


class Checkpoints:
    """Save/restore one run's training state every N steps, keeping the newest `keep`."""

    def __init__(self, directory: Path, keep: int, *, create: bool = True):
        self.directory = directory.resolve()
        storage.QuietAftermath.install()  # a refused write: one line (resnet_jax.storage), not echoes
        if create:  # Orbax cannot create it for a manager of one process
            self.directory.mkdir(parents=True, exist_ok=True)
        # every process on its own: process 0 alone saves (the arrays are replicated host copies), any process
        # may read; Orbax's default would make each save wait at a barrier for processes that never save
        alone = ocp.options.MultiprocessingOptions(
            primary_host=jax.process_index(), active_processes={jax.process_index()}
        )
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            enable_async_checkpointing=False,
            create=False,
            cleanup_tmp_directories=create,
            multiprocessing_options=alone,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def steps(self) -> list[int]:
        """Committed steps, newest first."""
        self.manager.reload()
        return sorted(self.manager.all_steps(), reverse=True)

    def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
        arrays = {k: host_copy(v) for k, v in flatten(state).items()}
        meta = {**meta, "state_sha256": digest(arrays)}
        with faults.during_save(step):
            self.manager.save(
                step,
                args=ocp.args.Composite(state=ocp.args.StandardSave(arrays), meta=ocp.args.JsonSave(meta)),
                force=True,
            )

    def meta(self, step: int) -> dict[str, Any]:
        try:
            return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        except Exception as exc:  # Orbax raises many kinds for missing or garbled files
            raise DamagedCheckpoint(_one_line(exc)) from None

    def restore(self, step: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The arrays at `step` by path, and its meta; DamagedCheckpoint unless both read back as written."""
        meta = self.meta(step)
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
        except Exception as exc:
            raise DamagedCheckpoint(_one_line(exc)) from None
        arrays = {k: np.asarray(v) for k, v in restored["state"].items()}
        if digest(arrays) != meta.get("state_sha256"):
            raise DamagedCheckpoint("its arrays do not match the checksum recorded when it was saved")
        return arrays, meta

    def close(self) -> None:
        self.manager.close()


def as_tree(arrays: dict[str, np.ndarray], like: Any) -> Any:
    """`arrays` (by path) in the structure of `like`; DamagedCheckpoint if they are not its leaves."""
    template = flatten(like)
    if set(arrays) != set(template):
        raise DamagedCheckpoint("its arrays are not this model's")
    for key, leaf in template.items():
        ours, theirs = (np.shape(leaf), np.asarray(leaf).dtype), (np.shape(arrays[key]), arrays[key].dtype)
        if ours != theirs:
            raise DamagedCheckpoint(f"{key} is {theirs}, this model's is {ours}")
    leaves = [arrays[k] for k in template]
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(like), leaves)


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
