"""Named points in a run's life where a test can kill the process, deterministically (no race with a timer).

`RESNET_JAX_FAULT=<point>` (or `<point>@<step>`) makes the process SIGKILL itself when it reaches that point
(at that step): exactly what a preemption, an OOM kill or a node failure does there. Unset, every point is a
no-op. The points, in a run's order at one step:
  after_log                the step's metrics row is written, its checkpoint (if one is due) not yet
  during_checkpoint_save   a checkpoint's files are written, its final rename (the commit) has not happened
  after_final_checkpoint   the final checkpoint is committed, summary.json not yet rewritten as completed
  after_checkpoint         a checkpoint is committed and summary.json rewritten
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Iterator

ENV = "RESNET_JAX_FAULT"
POINTS = ("after_log", "during_checkpoint_save", "after_final_checkpoint", "after_checkpoint")


def _armed(name: str, step: int | None) -> bool:
    wanted = os.environ.get(ENV, "")
    point, _, at = wanted.partition("@")
    return point == name and (not at or (step is not None and int(at) == step))


def _die() -> None:
    logging.shutdown()  # what a killed process had logged stays in train.log
    os.kill(os.getpid(), signal.SIGKILL)


def point(name: str, step: int | None = None) -> None:
    """Die here if the test armed this point (for this step)."""
    if _armed(name, step):
        _die()


@contextlib.contextmanager
def during_save(step: int) -> Iterator[None]:
    """Around a checkpoint save: if armed, die after Orbax has written the step's files into its temporary
    folder and before the rename that commits them."""
    if not _armed("during_checkpoint_save", step):
        yield
        return
    # Orbax's private module, imported only when a test armed this point: no run depends on its layout
    from orbax.checkpoint._src.path import async_path

    async def rename(src, dst):  # noqa: ARG001 - the commit never happens
        _die()

    original, async_path.rename = async_path.rename, rename
    try:
        yield
    finally:
        async_path.rename = original
