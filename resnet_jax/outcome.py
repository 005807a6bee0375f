"""One policy for how a run ends: the status word its `summary.json` says and the exit code it gives, used by
the run, every launcher, the sweep's outcome and the report's reading of a run directory."""

from __future__ import annotations

from typing import Any

from resnet_jax.errors import UserError
from resnet_jax.interrupts import INTERRUPTS
from resnet_jax.loop import Diverged

# a status a run directory may say, and its exit code; `running` read back means the run never finished
EXIT_CODES = {"completed": 0, "diverged": 3, "failed": 1, "interrupted": 1, "running": 1}


def of_exception(exc: BaseException) -> tuple[str, int]:
    """The status and exit code of a run that `exc` ended early."""
    if isinstance(exc, Diverged):
        return "diverged", EXIT_CODES["diverged"]
    interrupted = isinstance(exc, (KeyboardInterrupt, SystemExit)) or INTERRUPTS.received is not None
    if interrupted:  # preempted, timed out or stopped (or an interrupt a library wrapped): resumable
        return "interrupted", EXIT_CODES["interrupted"]
    return "failed", exc.exit_code if isinstance(exc, UserError) else EXIT_CODES["failed"]


def exit_code(summary: dict[str, Any]) -> int:
    """A summary's exit code: 0 when completed, else the code it recorded (a user error's 2), else its
    status's."""
    status = summary.get("status", "unknown")
    if status == "completed":
        return 0
    return summary.get("exit_code", EXIT_CODES.get(status, 1))
