"""Against a real SLURM (tests/cluster/slurm_up.sh; `make test-cluster`): sweeps, preemption and requeue,
multi-process JAX, and the faults the scheduler produces. Mid-run signals are sent while the job waits at a
named point (`RESNET_JAX_FAULT=<point>@<step>:pause`), not at a moment guessed with a timer."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from helpers import (
    SEARCH,
    SHORT_RUN,
    assert_same_record,
    command_env,
    search_best,
    search_trials,
    start_train,
    train,
    trained,
)
from test_conformance import SLURM_CASES, run_suites

pytestmark = pytest.mark.cluster

PARTITION = os.environ.get("SLURM_PARTITION", "cpu")
SLURM = ("-m", "launcher=submitit_slurm", f"hydra.launcher.partition={PARTITION}")
RUN = SHORT_RUN
ONE_CPU = ("hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=4")


def sacct(job: str) -> list[tuple[str, ...]]:
    """(job id, state) of each attempt of a job, requeued ones included (-D), as accounting recorded them."""
    out = subprocess.run(
        ["sacct", "-X", "-D", "-n", "-P", "-j", job, "-o", "JobID,State"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [tuple(line.split("|")) for line in out.splitlines() if line.strip()]


def final_states(job: str) -> list[str]:
    """The states of a job's attempts once its last one has ended (the result comes before the job ends)."""
    wait_for(
        lambda: sacct(job) and sacct(job)[-1][1] not in ("RUNNING", "PENDING", "COMPLETING"), 60, "the end"
    )
    return [state for _, state in sacct(job)]


def job_ids(sweep: Path) -> list[str]:
    """The sweep's jobs (`N` for a single job, `N_i` for an array's tasks): the folders with job logs."""
    return sorted({p.parent.name for p in (sweep / ".submitit").glob("*/*_log.out")})


def run_dirs(sweep: Path) -> list[Path]:
    return sorted(p.parent for p in sweep.glob("*/config.yaml"))


def wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"{what} did not happen within {seconds} s")


def summary_at(run_dir: Path, step: int) -> bool:
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return False
    return summary.get("step") == step and summary.get("status") == "running"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run, in this process's machine, outside SLURM."""
    return trained(tmp_path_factory.mktemp("reference") / "run", *RUN)


def test_a_cpu_sweep_with_only_the_partition_named_runs_to_completion(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    out = train(*SLURM, *RUN, "model.depth=4,6", f"hydra.sweep.dir={sweep}", cwd=tmp_path)  # not the repo
    assert out.returncode == 0, out.stderr[-3000:]
    assert [d.name.split(",")[0] for d in run_dirs(sweep)] == ["model.depth=4", "model.depth=6"]
    for run_dir in run_dirs(sweep):
        assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
        assert {"config.yaml", "metrics.jsonl", "summary.json", "train.log", "checkpoints"} <= {
            p.name for p in run_dir.iterdir()
        }
    script = next((sweep / ".submitit").glob("*/*_submission.sh")).read_text()
    assert "--gpus" not in script and "--gres" not in script  # no GPU unless asked for
    cpus = int(re.search(r"--cpus-per-task=(\d+)", script).group(1))
    assert 1 <= cpus <= os.cpu_count()  # fits the node sinfo reports
    assert f"source {Path(sys.prefix) / 'bin' / 'activate'}" in script  # from any submission directory
    assert final_states(job_ids(sweep)[0].split("_")[0]) == ["COMPLETED", "COMPLETED"]


SIGNALS = {
    # SLURM requeues the job: SIGTERM (submitit ignores it), SIGKILL after KillWait, back after cred_expire
    "scontrol_requeue": lambda job: ["scontrol", "requeue", job],
    # a preemption notice: submitit checkpoints and requeues the job itself
    "usr2": lambda job: ["scancel", "--signal=USR2", job],
}


@pytest.mark.parametrize("how", [*SIGNALS, "timeout"])
def test_a_job_signalled_mid_run_comes_back_resumes_and_ends_bit_identical(
    how: str, reference: Path, tmp_path: Path
) -> None:
    sweep = tmp_path / "sweep"
    # the job waits after its step-20 checkpoint; with a 3-minute limit SLURM sends USR2 150 s before it, 30 s
    # into each attempt: the first is waiting by then, the requeued one has finished its last 20 steps
    limit = ("hydra.launcher.timeout_min=3", "hydra.launcher.signal_delay_s=150") if how == "timeout" else ()
    fault = {"RESNET_JAX_FAULT": "after_checkpoint@20:pause"}
    proc = start_train(*SLURM, *RUN, *ONE_CPU, *limit, f"hydra.sweep.dir={sweep}", env=fault)
    try:
        wait_for(
            lambda: run_dirs(sweep) and summary_at(run_dirs(sweep)[0], 20), 240, "the step-20 checkpoint"
        )
        (run_dir,) = run_dirs(sweep)
        (job,) = job_ids(sweep)
        signalled = time.time()
        if how in SIGNALS:
            subprocess.run(SIGNALS[how](job), check=True)
        _, stderr = proc.communicate(timeout=600)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    log = (run_dir / "train.log").read_text()
    resumed = re.search(r"^\[([\d-]+ [\d:]+),\d+\]\S* resuming from the checkpoint at step 20", log, re.M)
    assert resumed, log[-3000:]
    if how in SIGNALS:
        waited = datetime.strptime(resumed.group(1), "%Y-%m-%d %H:%M:%S").timestamp() - signalled
        print(f"{how}: resumed {waited:.0f} s after the signal")
    assert_same_record(reference, run_dir)
    states = final_states(job)
    assert states[-1] == "COMPLETED" and "REQUEUED" in states[:-1], states  # requeued, then completed


def test_a_job_cancelled_before_any_result_ends_the_sweep_within_a_minute_naming_it(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = start_train(
        *SLURM, *RUN, *ONE_CPU, f"hydra.sweep.dir={sweep}", env={"RESNET_JAX_FAULT": "after_log@5:pause"}
    )
    try:
        wait_for(lambda: run_dirs(sweep) and (run_dirs(sweep)[0] / "metrics.jsonl").is_file(), 240, "step 5")
        (job,) = job_ids(sweep)
        cancelled = time.time()
        subprocess.run(["scancel", job], check=True)
        _, stderr = proc.communicate(timeout=120)
        took = time.time() - cancelled
    finally:
        proc.kill()
    assert proc.returncode != 0 and took < 60, (took, stderr[-3000:])
    lines = [line for line in stderr.splitlines() if line.startswith("job ")]
    assert len(lines) == 1 and "never finished: running at step 0" in lines[0], stderr[-3000:]


def test_two_tasks_are_two_jax_processes_equal_to_one_process_with_two_devices(tmp_path: Path) -> None:
    one = tmp_path / "one"
    out = train(*RUN, f"hydra.run.dir={one}", env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    assert out.returncode == 0, out.stderr[-2000:]
    sweep = tmp_path / "sweep"
    out = train(*SLURM, *RUN, "hydra.launcher.tasks_per_node=2", *ONE_CPU, f"hydra.sweep.dir={sweep}")
    assert out.returncode == 0, out.stderr[-3000:]
    (run_dir,) = run_dirs(sweep)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["processes"], summary["devices"]) == (2, 2)
    assert_same_record(one, run_dir)
    log = (run_dir / "train.log").read_text()
    assert log.count("model=mlp depth=4") == 1  # each line once: only process 0 writes the directory
    assert {p.name for p in run_dir.iterdir()} == {p.name for p in one.iterdir()}
    job_logs = "".join(p.read_text() for p in (sweep / ".submitit").glob("*/*_log.err"))
    assert "jax.distributed: process 0 of 2" in job_logs and "jax.distributed: process 1 of 2" in job_logs


def test_a_sweep_with_a_diverging_job_exits_non_zero_naming_it(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    out = train(
        *SLURM,
        *RUN,
        *ONE_CPU,
        "optim.schedule=constant",
        "optim.clip_norm=0",
        "optim.lr=0.05,1e6",
        f"hydra.sweep.dir={sweep}",
    )
    assert out.returncode == 3, out.stderr[-3000:]
    lines = [line for line in out.stderr.splitlines() if line.startswith("job ")]
    assert len(lines) == 1 and lines[0].startswith("job optim.lr=1000000.0: diverged at step 5"), lines


def test_a_signal_after_completion_does_not_turn_the_job_into_a_failure(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    out = train(
        *SLURM, *RUN, *ONE_CPU, f"hydra.sweep.dir={sweep}", env={"RESNET_JAX_FAULT": "job_completed:usr2"}
    )
    assert out.returncode == 0, out.stderr[-3000:]
    (job,) = job_ids(sweep)
    assert final_states(job) == ["COMPLETED"]  # neither failed nor requeued


def test_a_request_that_cannot_fit_is_one_line_with_the_reason_not_a_silent_wait(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    cpus = os.cpu_count() * 4
    started = time.time()
    out = train(*SLURM, *RUN, f"hydra.launcher.cpus_per_task={cpus}", f"hydra.sweep.dir={sweep}")
    assert out.returncode == 2 and time.time() - started < 120, out.stderr[-3000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "pends with reason PartitionConfig, which waiting does not clear" in errors[0]
    assert f"{cpus} CPUs" in errors[0] and "change hydra.launcher.partition, cpus_per_task" in errors[0]
    assert not subprocess.run(["squeue", "-h"], capture_output=True, text=True).stdout.strip()  # cancelled


def test_a_multi_task_allocation_started_without_srun_says_so_and_trains_alone(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            "salloc",
            "-n",
            "2",
            "--cpus-per-task=1",
            "--mem=4G",
            sys.executable,
            "-m",
            "resnet_jax.train",
            *RUN,
            "trainer.progress=false",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=command_env(),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    said = [line for line in out.stderr.splitlines() if "not started by srun" in line]
    assert len(said) == 1 and "this SLURM allocation has 2 tasks" in said[0]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["processes"] == 1


def test_a_population_is_one_slurm_job_per_group_preempted_requeued_and_resumed(tmp_path: Path) -> None:
    """`launcher=population hydra.launcher.backend=submitit_slurm`: the two seeds of each depth are one job;
    the first job preempted after its first member's step-20 checkpoint (USR2, as SLURM sends it) is
    requeued and resumes every member: the records of the same population trained in this process."""
    args = (*RUN, "model.depth=4,6", "seed=0,1", "launcher=population")
    local = tmp_path / "local"
    out = train("-m", *args, f"hydra.sweep.dir={local}")
    assert out.returncode == 0, out.stderr[-3000:]
    sweep, signalled = tmp_path / "sweep", tmp_path / "signalled"
    executor = (
        f"hydra.launcher.executor.partition={PARTITION}",
        "hydra.launcher.executor.cpus_per_task=1",
        "hydra.launcher.executor.mem_gb=4",
    )
    fault = {"RESNET_JAX_FAULT": "after_checkpoint@20:usr2", "RESNET_JAX_FAULT_ONCE": str(signalled)}
    backend = "hydra.launcher.backend=submitit_slurm"
    out = train("-m", *args, backend, *executor, f"hydra.sweep.dir={sweep}", env=fault)
    assert out.returncode == 0 and signalled.exists(), out.stderr[-3000:]
    jobs = job_ids(sweep)
    assert len(jobs) == 2  # two groups (depth 4 and 6), two members each
    states = [final_states(job) for job in jobs]
    assert sorted(s[-1] for s in states) == ["COMPLETED", "COMPLETED"]
    assert sum("REQUEUED" in s for s in states) == 1, states
    assert len(run_dirs(sweep)) == 4
    for reference, resumed in zip(run_dirs(local), run_dirs(sweep), strict=True):
        assert_same_record(reference, resumed)


def test_a_population_job_of_two_tasks_splits_its_members_over_two_jax_processes(tmp_path: Path) -> None:
    """`hydra.launcher.executor.tasks_per_node=2`: the group's job is two JAX processes, each training its
    own member (members split over the global mesh); process 0 writes both directories, checkpoints gathered
    from both processes: the records of the same population trained in this process."""
    args = (*RUN, "seed=0,1", "launcher=population")
    local = tmp_path / "local"
    out = train("-m", *args, f"hydra.sweep.dir={local}")
    assert out.returncode == 0, out.stderr[-3000:]
    sweep = tmp_path / "sweep"
    executor = (
        f"hydra.launcher.executor.partition={PARTITION}",
        "hydra.launcher.executor.cpus_per_task=1",
        "hydra.launcher.executor.mem_gb=4",
        "hydra.launcher.executor.tasks_per_node=2",
    )
    out = train("-m", *args, "hydra.launcher.backend=submitit_slurm", *executor, f"hydra.sweep.dir={sweep}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert len(job_ids(sweep)) == 1 and len(run_dirs(sweep)) == 2
    for reference, run_dir in zip(run_dirs(local), run_dirs(sweep), strict=True):
        summary = json.loads((run_dir / "summary.json").read_text())
        assert (summary["processes"], summary["devices"]) == (2, 2)
        assert_same_record(reference, run_dir)
        log = (run_dir / "train.log").read_text()
        assert log.count("2 members split over 2 devices") == 1  # written by process 0 only
    job_logs = "".join(p.read_text() for p in (sweep / ".submitit").glob("*/*_log.err"))
    assert "jax.distributed: process 1 of 2" in job_logs


def test_an_optuna_search_on_slurm_returns_each_trials_objective(tmp_path: Path) -> None:
    """The SLURM launcher hands each trial's objective back to the sweeper, as every launcher does."""
    sweep = tmp_path / "search"
    out = train(*SLURM, *ONE_CPU, *SEARCH, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    found = search_trials(sweep)
    assert len(found) == 4 and {s["status"] for s in found.values()} == {"completed"}
    params, value = search_best(sweep)
    values = [s["final"]["val/error"] for s in found.values()]
    assert value == found[params]["final"]["val/error"] == min(values)


def test_the_slurm_launcher_passes_hydras_launcher_suites(tmp_path: Path) -> None:
    assert run_suites(tmp_path, "cluster") == {"passed": SLURM_CASES}
