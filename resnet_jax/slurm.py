"""The sweep's SLURM launcher (`launcher=submitit_slurm`): Hydra's submitit launcher, safe to leave alone.

- **Resources that fit.** Unset CPUs and memory come from what `sinfo` reports for the partition (the smallest
  node's CPUs, up to 8 per task, and 80 % of its memory, up to 32 GB); GPUs are requested only when asked for.
  The `setup` lines activate the environment that submitted the sweep, by its absolute path.
- **No silent wait.** While the jobs are queued, a watcher reads `squeue`: a job pending for a reason that
  waiting cannot clear (the request does not fit the partition, a node that is not available, a limit) is
  reported in one line with the reason and the overrides to change, and the sweep's jobs are cancelled.
- **The run directories decide.** A job that SLURM reports without a result (cancelled, or requeued after a
  time limit while accounting still shows the first attempt as FAILED) is waited for until the sweep's jobs
  have left the queue; then the sweep's outcome is read from the run directories.
- **A safe start.** The job's Python starts with USR2 ignored until submitit's handler is installed
  (`submitit_python`): an early time-limit signal to a requeued job cannot end it before it has begun.
- **Completion is final.** Once a job's run is complete, a late preemption or time-limit signal is ignored, so
  SLURM cannot record a finished job as failed or requeue it.
"""

from __future__ import annotations

import logging
import re
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import submitit
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as SubmititSlurmLauncher
from omegaconf import OmegaConf

from resnet_jax import faults

log = logging.getLogger(__name__)

# Reasons a pending job keeps until someone changes the request or the cluster: squeue's REASON codes
NEVER_CLEARS = (
    "PartitionConfig",
    "ReqNodeNotAvail",
    "PartitionNodeLimit",
    "PartitionTimeLimit",
    "PartitionDown",
    "PartitionInactive",
    "BadConstraints",
    "InvalidAccount",
    "InvalidQOS",
    "NodeDown",
    "AssocMaxCpuPerJobLimit",
    "AssocMaxMemPerJobLimit",
    "AssocMaxNodePerJobLimit",
    "AssocMaxWallDurationPerJobLimit",
    "QOSMaxCpuPerJobLimit",
    "QOSMaxMemoryPerJob",
    "QOSMaxGRESPerJob",
    "QOSMaxNodePerJobLimit",
    "QOSMaxWallDurationPerJobLimit",
    "MaxCpuPerAccount",
    "MaxMemPerLimit",
)
CPUS_PER_TASK_MAX = 8
MEM_GB_MAX = 32
WATCH_EVERY_S = 5.0
T = TypeVar("T")


def partition_nodes(partition: str | None) -> tuple[int, int] | None:
    """(CPUs, memory in MB) of the partition's smallest node, as `sinfo` reports; None without an answer."""
    command = ["sinfo", "-h", "-N", "-o", "%c %m", *(["-p", partition] if partition else [])]
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    nodes = [tuple(int(v) for v in re.findall(r"\d+", line)[:2]) for line in out.splitlines() if line.strip()]
    nodes = [n for n in nodes if len(n) == 2]
    return (min(c for c, _ in nodes), min(m for _, m in nodes)) if nodes else None


def fitting_defaults(params: dict[str, Any]) -> dict[str, Any]:
    """`params` with the unset CPUs, memory and setup filled in to fit the partition the jobs go to."""
    filled = dict(params)
    node = partition_nodes(params.get("partition"))
    tasks = int(params.get("tasks_per_node") or 1)
    if node is not None:
        cpus, mem_mb = node
        if filled.get("cpus_per_task") is None:
            filled["cpus_per_task"] = max(1, min(CPUS_PER_TASK_MAX, cpus // tasks))
        if filled.get("mem_gb") is None:
            filled["mem_gb"] = max(1, min(MEM_GB_MAX, int(0.8 * mem_mb / 1024)))
    if filled.get("setup") is None:
        activate = Path(sys.prefix) / "bin" / "activate"
        filled["setup"] = [f"source {activate}"] if activate.is_file() else []
    return filled


class PendingWatch(threading.Thread):
    """Polls `squeue` for the sweep's jobs (found by their submitit folders) until stopped; on a pending
    reason that never clears, says so in one line and cancels them."""

    def __init__(self, folder: Path, request: str):
        super().__init__(daemon=True, name="pending-watch")
        self.folder, self.request = folder, request
        self.stuck: str | None = None
        self._stop_event = threading.Event()

    def job_ids(self) -> list[str]:
        names = {p.name.split("_")[0] for p in self.folder.glob("*") if p.is_dir() and p.name[:1].isdigit()}
        return sorted(names)

    def run(self) -> None:
        while not self._stop_event.wait(WATCH_EVERY_S):
            ids = self.job_ids()
            if not ids:
                continue
            try:
                out = subprocess.run(
                    ["squeue", "-h", "-o", "%i|%T|%r", "-j", ",".join(ids)],
                    capture_output=True,
                    text=True,
                    timeout=30,
                ).stdout
            except (OSError, subprocess.SubprocessError):
                continue
            for line in out.splitlines():
                job, state, reason = (line.split("|") + ["", ""])[:3]
                if state == "PENDING" and reason.split(",")[0] in NEVER_CLEARS:
                    self.stuck = (
                        f"SLURM job {job} pends with reason {reason}, which waiting does not clear; the jobs "
                        f"asked for {self.request}: change hydra.launcher.partition, cpus_per_task, mem_gb, "
                        "gpus_per_node or timeout_min (or the cluster's limits); the sweep's jobs were "
                        "cancelled"
                    )
                    print(f"error: {self.stuck}", file=sys.stderr, flush=True)
                    subprocess.run(["scancel", *ids], capture_output=True, timeout=30)
                    return

    def stop(self) -> None:
        self._stop_event.set()

    def wait_until_gone(self) -> None:
        """Until none of the sweep's jobs is queued or running (so that their directories are final)."""
        while self.job_ids():
            out = subprocess.run(
                ["squeue", "-h", "-o", "%i", "-j", ",".join(self.job_ids())],
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout
            if not out.strip():
                return
            self._stop_event.wait(WATCH_EVERY_S)


def request(params: dict[str, Any]) -> str:
    """What the jobs ask for, in one phrase (for the lines that say why they cannot run)."""
    node = partition_nodes(params.get("partition"))
    there = f" (its nodes: {node[0]} CPUs, {node[1]} MB)" if node else ""
    return (
        f"partition {params.get('partition') or '(default)'}{there}: {params.get('tasks_per_node', 1)} "
        f"task(s) of {params.get('cpus_per_task')} CPUs, {params.get('mem_gb')} GB, "
        f"{params.get('gpus_per_node') or 0} GPUs per node, {params.get('timeout_min')} min"
    )


def watched(params: dict[str, Any], submit_and_wait: Callable[[], list[T]]) -> list[T]:
    """`submit_and_wait()` (submit the jobs, wait for their results) with the pending watch: a refused
    submission or a request that never fits is one line and exit 2; a job that ends without a result is
    waited for until the sweep's jobs have left the queue, and the run directories decide (`[]`)."""
    watch = PendingWatch(Path(str(params["submitit_folder"])).parent, request(params))
    watch.start()
    try:
        return submit_and_wait()
    except submitit.core.utils.FailedJobError as exc:  # sbatch refused the submission
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(
            f"error: SLURM refused the sweep's jobs ({first}); they asked for {request(params)}",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
    except submitit.core.utils.UncompletedJobError as exc:  # a job ended without a result (e.g. cancelled)
        if watch.stuck is not None:  # said and cancelled; the run directories tell the rest
            raise SystemExit(2) from None
        # not necessarily the end: after a time limit submitit requeues the job, and until the new
        # attempt starts, accounting may still show the first one as FAILED. The run directories decide,
        # once every job of the sweep has left the queue (train.main reads them, names what is unfinished)
        said = " ".join(str(exc).strip().splitlines()[:2])  # the job, its result's path, its state
        print(f"note: {said}; waiting for the sweep's jobs to leave the queue", file=sys.stderr)
        watch.wait_until_gone()
        return []
    finally:
        watch.stop()


def completed(result: T) -> T:
    """A job's result, after which a late preemption or time-limit signal is ignored: SLURM cannot record
    a finished job as failed or requeue it."""
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    faults.point("job_completed")
    return result


def submitit_python() -> str:
    """The command SLURM starts a job's Python with: this environment's, with USR2 ignored until submitit
    installs its handler. Why: SLURM 22.05 can send a requeued job the time-limit signal as it starts (seen
    0.8 s after the restart, before Python had imported submitit), and USR2's default action ends the
    process, so the job was lost; ignored that early, the signal is lost instead, and submitit's handler
    catches every later one."""
    return f'/bin/sh -c \'trap "" USR2; exec "$0" "$@"\' {shlex.quote(sys.executable)}'


def make_executor(backend: str, settings: dict[str, Any]) -> tuple[submitit.AutoExecutor, dict[str, Any]]:
    """The submitit executor of `backend` (`submitit_local`, `submitit_slurm`) with `settings`, and the
    settings it got (for SLURM, unset CPUs, memory and setup fitted to the partition). Keys map as Hydra's
    submitit launcher maps them: its common queue keys as they are, the others as SLURM's (which the local
    executor ignores)."""
    cluster = backend.removeprefix("submitit_")
    params = fitting_defaults(settings) if cluster == "slurm" else dict(settings)
    given = {key: value for key, value in params.items() if value is not None}
    init = {f"{cluster}_max_num_timeout": given.pop("max_num_timeout", 3)}
    if cluster == "slurm":
        init["slurm_python"] = submitit_python()
    executor = submitit.AutoExecutor(given.pop("submitit_folder"), cluster=cluster, **init)
    common = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in common else f"slurm_{k}": v for k, v in given.items()})
    return executor, params


class SlurmLauncher(SubmititSlurmLauncher):
    """Hydra's submitit SLURM launcher with resources that fit, a pending watch, a start safe from early
    signals, and final completion."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
        """Hydra's submitit launch (one array job, a task per job, each calling `__call__`), with
        `make_executor`'s executor and the pending watch."""
        executor, params = make_executor("submitit_slurm", self.params)  # fitted to the partition
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            sweep_dir.chmod(int(str(self.config.hydra.sweep.mode), 8))
        job_params = []
        for number, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info("\t#%d : %s", number, " ".join(filter_overrides(overrides)))
            job_params.append(
                (list(overrides), "hydra.sweep.dir", number, f"job_id_for_{number}", Singleton.get_state())
            )

        def submit_and_wait() -> list[JobReturn]:
            jobs = executor.map_array(self, *zip(*job_params, strict=True))
            return [job.results()[0] for job in jobs]

        return watched(params, submit_and_wait)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """One job, inside SLURM: its run, then `completed`."""
        return completed(super().__call__(*args, **kwargs))
