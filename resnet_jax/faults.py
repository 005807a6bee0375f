"""Named points in a run's life where a test makes a fault happen, deterministically (no race with a timer).

`RESNET_JAX_FAULT=<point>[@<step>][:<action>]` makes the process act when it reaches that point (at that
step): `kill` (the default) SIGKILLs itself, as a preemption, an OOM kill or a node failure does there;
`pause` waits there (up to 10 minutes) so that a test can deliver a scheduler's signal at a known moment;
`usr2` sends itself SIGUSR2, as SLURM does at a time limit; `sigint`, `sigint2` (Ctrl-C pressed twice) and
`sigterm` send itself those signals; an errno's name in lower case (`enospc`, `efbig`, `erofs`, `eacces`, ...)
fails there as a write the OS refuses that way does (OSError with that code). With
`RESNET_JAX_FAULT_ONCE=<file>` the fault happens only where that file does not exist yet, and creates it:
a requeued job, or a population's next member, passes the point again unharmed.
Unset, every point is a no-op. The points, in a run's order:
  after_log                the step's metrics row is written, its checkpoint (if one is due) not yet
  during_checkpoint_save   a checkpoint's files are written, its final rename (the commit) has not happened
  after_final_checkpoint   the final checkpoint is committed, summary.json not yet rewritten as completed
  after_checkpoint         a checkpoint is committed and summary.json rewritten
  job_completed            a SLURM/submitit job's run is complete, the job not yet ended
and, where the run directory is written (`resnet_jax.rundir`), just before each write:
  write_lock, write_log (taking the directory), write_config, write_metrics (at a row's step), write_summary
  (at its step), write_checkpoint (at its step)
and where a run starts: startup (the command line read, nothing checked yet), tracing (the training step
being traced for compilation, before the first step).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import time
from collections.abc import Iterator

ENV = "RESNET_JAX_FAULT"
ONCE_ENV = "RESNET_JAX_FAULT_ONCE"
PAUSE_S = 600
SIGNALS = {"usr2": signal.SIGUSR2, "sigint": signal.SIGINT, "sigterm": signal.SIGTERM}


def _armed(name: str, step: int | None) -> str | None:
    """The action armed for this point (at this step), or None."""
    wanted, _, action = os.environ.get(ENV, "").partition(":")
    point, _, at = wanted.partition("@")
    if point != name or (at and (step is None or int(at) != step)):
        return None
    once = os.environ.get(ONCE_ENV)
    if once:
        try:
            with open(once, "x"):
                pass
        except FileExistsError:  # it happened before
            return None
    return action or "kill"


def _act(action: str) -> None:
    logging.getLogger(__name__).warning("fault point reached: %s", os.environ.get(ENV))
    if action == "pause":
        time.sleep(PAUSE_S)
    elif action in SIGNALS:
        os.kill(os.getpid(), SIGNALS[action])
    elif action == "sigint2":  # the second press arrives while the first one's interrupt unwinds the run
        try:
            os.kill(os.getpid(), signal.SIGINT)
        finally:
            os.kill(os.getpid(), signal.SIGINT)
    elif action.upper() in errno.__dict__:
        code = getattr(errno, action.upper())
        raise OSError(code, os.strerror(code))
    else:
        logging.shutdown()  # what a killed process had logged stays in train.log
        os.kill(os.getpid(), signal.SIGKILL)


def point(name: str, step: int | None = None) -> None:
    """Do what the test armed at this point (for this step), if anything."""
    action = _armed(name, step)
    if action is not None:
        _act(action)


@contextlib.contextmanager
def during_save(step: int) -> Iterator[None]:
    """Around a checkpoint save: if armed, act after Orbax has written the step's files into its temporary
    folder and before the rename that commits them."""
    action = _armed("during_checkpoint_save", step)
    if action is None:
        yield
        return
    # Orbax's private module, imported only when a test armed this point: no run depends on its layout
    from orbax.checkpoint._src.path import async_path

    original = async_path.rename

    async def rename(src, dst):
        _act(action)
        return await original(src, dst)

    async_path.rename = rename
    try:
        yield
    finally:
        async_path.rename = original
