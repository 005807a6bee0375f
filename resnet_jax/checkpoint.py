"""Orbax checkpoints in `<run_dir>/checkpoints/`: the whole training state plus what the summary needs.

The state is stored as a flat {path: array} dict, so a checkpoint from another model configuration is
recognised by its keys and shapes and reported as one clear line instead of a shape traceback. Orbax
writes each step into a temporary directory and renames it when complete, so a kill mid-save leaves the
previous checkpoint intact. Data order and augmentation derive from (seed, step), so the step is the
whole data position: a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from resnet_jax.distributed import host_copy
from resnet_jax.errors import CheckpointError

CHECKPOINT_DIR = "checkpoints"


def _key(path: tuple) -> str:
    return "/".join(str(getattr(p, "key", getattr(p, "name", getattr(p, "idx", p)))) for p in path)


def flatten(tree: Any) -> dict[str, Any]:
    """{"params/stages/0/blocks/conv1/kernel/value": array, ...}"""
    return {_key(path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


class Checkpoints:
    """Save/restore one run's training state every N steps, keeping the newest `keep`."""

    def __init__(self, run_dir: Path, keep: int):
        self.directory = (run_dir / CHECKPOINT_DIR).resolve()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=False, create=True, cleanup_tmp_directories=True
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
        arrays = {k: host_copy(v) for k, v in flatten(state).items()}
        self.manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(arrays), meta=ocp.args.JsonSave(meta)),
            force=True,
        )

    def restore(self, step: int, like: Any, identity: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """The state at `step`, shaped like `like`; refuses a checkpoint of a different configuration."""
        meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        saved = meta.get("identity", {})
        if saved != identity:
            diff = ", ".join(
                f"{k}: checkpoint {saved.get(k)!r} vs this run {identity.get(k)!r}"
                for k in sorted(set(saved) | set(identity))
                if saved.get(k) != identity.get(k)
            )
            raise CheckpointError(
                f"{self.directory} holds a checkpoint of a different configuration ({diff}); "
                "use another run directory or delete that one"
            )
        template = flatten(like)
        abstract = {k: jax.ShapeDtypeStruct(np.shape(v), np.asarray(v).dtype) for k, v in template.items()}
        try:
            arrays = self.manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
            )
        except (ValueError, KeyError) as exc:
            raise CheckpointError(f"{self.directory} step {step} does not fit this model: {exc}") from None
        leaves = [arrays["state"][k] for k in template]
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(like), leaves), meta

    def close(self) -> None:
        self.manager.close()
