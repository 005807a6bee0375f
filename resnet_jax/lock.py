"""One writer per run directory, on the shared filesystems clusters use.

`flock` is not enough on NFS or Lustre (it may be local to a client, or not honoured at all), so the lock is a
file created with O_CREAT | O_EXCL, which those filesystems make atomic, holding who took it: host, PID, the
process's start time and the SLURM job. A lock whose holder is provably gone is taken over with a warning:
on the same host, a process that no longer exists (or a PID reused by another process); anywhere, an earlier
attempt of the same SLURM job (SLURM runs one instance of a job at a time, so a requeued job's earlier
attempt is dead). A lock held elsewhere by a live or unknown process is refused, naming the holder.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any

from resnet_jax.errors import UserError

log = logging.getLogger(__name__)


class Locked(UserError):
    """Another process holds the run directory."""


def process_start_time(pid: int) -> str | None:
    """A process's start time in clock ticks since boot (field 22 of /proc/PID/stat), None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _slurm_job() -> str | None:
    job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{job}_{task}" if job and task else job


def me() -> dict[str, Any]:
    """Who this process is, as the lock file records it."""
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "start": process_start_time(os.getpid()),
        "slurm_job": _slurm_job(),
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        "token": uuid.uuid4().hex,
    }


def describe(holder: dict[str, Any]) -> str:
    job = f", SLURM job {holder['slurm_job']}" if holder.get("slurm_job") else ""
    return f"PID {holder.get('pid')} on {holder.get('host')}{job}, since {holder.get('since')}"


def _gone(holder: dict[str, Any]) -> str | None:
    """Why the holder is provably gone, or None when it may be alive."""
    ours = me()
    if holder.get("slurm_job") and holder.get("slurm_job") == ours["slurm_job"]:
        return "an earlier attempt of this SLURM job"
    if holder.get("host") != ours["host"]:
        return None
    pid = holder.get("pid")
    if not isinstance(pid, int):
        return "its record is unreadable"
    started = process_start_time(pid)
    if started is None:
        return "that process has exited"
    if holder.get("start") is not None and started != holder.get("start"):
        return "that PID now belongs to another process"
    return None


class RunLock:
    """`<run_dir>/.lock`: taken by `acquire`, given back by `release` (also when a run is interrupted)."""

    def __init__(self, path: Path):
        self.path = path
        self.record: dict[str, Any] | None = None

    def _read(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}  # being written, or damaged: judged below as unreadable

    def acquire(self) -> None:
        record = me()
        for _ in range(100):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._read()
                for _ in range(20):  # another process may be between creating and writing it
                    if holder:
                        break
                    time.sleep(0.1)
                    holder = self._read()
                reason = _gone(holder) if holder else "its record is unreadable"
                if reason is None:
                    raise Locked(
                        f"{self.path.parent} is in use by {describe(holder)}; wait for it to finish, or if "
                        f"that process is gone, delete {self.path}"
                    ) from None
                self._take_over(holder, reason)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(record))
            self.record = record
            return
        raise Locked(f"could not take {self.path}: other processes keep taking it over")

    def _take_over(self, holder: dict[str, Any], reason: str) -> None:
        """Move the stale lock aside atomically: of several processes taking it over, one rename wins."""
        aside = self.path.with_name(f"{self.path.name}.stale-{uuid.uuid4().hex}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return  # another process moved it first; try to create ours again
        aside.unlink(missing_ok=True)
        log.warning(
            "taking over the lock of %s from %s (%s)",
            self.path.parent,
            describe(holder) if holder else "an unknown holder",
            reason,
        )

    def release(self) -> None:
        """Remove the lock if it is still ours (never a successor's)."""
        if self.record is not None and self._read().get("token") == self.record["token"]:
            self.path.unlink(missing_ok=True)
        self.record = None
