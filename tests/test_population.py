"""Populations (`launcher=population`): a sweep's runs that differ only in traced scalars train as one
compiled program, and every member's run directory is the one the single run with its overrides writes."""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import jax
import numpy as np
import pytest
from helpers import (
    SHORT_RUN,
    assert_same_record,
    final_arrays,
    metric_rows,
    report,
    snapshot,
    tiny_config,
    train,
    write_lock,
)
from wandb_records import history, run_record

from resnet_jax import footprint, models, population, population_launcher
from resnet_jax.composition import compose
from resnet_jax.lifecycle import train_population
from resnet_jax.lock import process_start_time
from resnet_jax.population import MemberJob, form_groups
from resnet_jax.runner import run

# Why a tolerance (side by side, `vmap`): the vmapped convolutions and reductions may sum in another order
# than a single run's; float32 rounding then differs in the last bits (1e-7) and training amplifies it.
# Measured over 20 steps: the MLP and the unclipped CIFAR nets stay within 3e-7 (relative) on CPU and 1.1e-5
# on an H200 (float32 at "highest" precision, not TF32). One member of the BatchNorm ResNet with the family's
# clipping drifted from step 7 on, to 7e-4 in the loss and 2e-3 in a BatchNorm mean after 20 steps (the MLP,
# clipped alike, does not: the clipping is the same maths, this trajectory is just more chaotic). One example
# more or less changes a test error by 100/360 %. Members in turn (`in_turn`) compute what the single run
# computes, bit for bit on CPU.
ERROR_ATOL = 0.7  # percentage points: two examples of a 320-example chunk, or of the 360 test images

MEMBERS = [
    ("seed=0", "optim.l2=1e-4", "optim.lr=0.05"),
    ("seed=1", "optim.l2=0", "optim.lr=0.02"),
    ("seed=2", "optim.l2=1e-3", "optim.lr=0.05"),
]


def assert_close_rows(ours: list[dict], theirs: list[dict], loss_rtol: float) -> None:
    assert [r.keys() for r in ours] == [r.keys() for r in theirs]
    for a, b in zip(ours, theirs, strict=True):
        assert a["step"] == b["step"]
        for key, value in b.items():
            if key.endswith("/error"):
                assert abs(a[key] - value) <= ERROR_ATOL, (key, a, b)
            elif isinstance(value, float):
                np.testing.assert_allclose(a[key], value, rtol=loss_rtol, err_msg=key)


# (the net, the tolerance of the losses, that of the final parameters: ||a - b|| / ||b|| per array)
NETS = [
    (("model=mlp",), 1e-4, 1e-4),  # clipped (its recipe) and unnormalised
    (("model=mlp", "optim.momentum=0", "optim.clip_norm=0"), 1e-4, 1e-4),  # plain SGD: no momentum state
    (("model.depth=8", "optim.clip_norm=0"), 1e-4, 1e-4),
    # the plain net, augmented: on an AVX2-only CPU its test loss drifts by 1.6e-4, a BatchNorm mean by 1.6e-3
    (("model.depth=8", "model.residual=false", "data.augment=true"), 1e-3, 1e-2),
    (("model.depth=8",), 3e-3, 0.1),  # the CIFAR default: member 0's chaotic drift (see above)
]


@pytest.mark.bits
@pytest.mark.parametrize(("net", "loss_rtol", "array_rtol"), NETS)
def test_each_member_equals_the_single_run_with_its_overrides(
    net: tuple[str, ...], loss_rtol: float, array_rtol: float, tmp_path: Path
) -> None:
    """Both layouts against the same single runs."""
    configs = [tiny_config(*net, *member) for member in MEMBERS]
    with jax.default_matmul_precision("highest"):  # on GPUs XLA's default float32 is TF32 (~3 digits)
        singles = [run(cfg, tmp_path / f"single{k}") for k, cfg in enumerate(configs)]
        for layout in ("in_turn", "vmap"):
            jobs = [MemberJob(c, tmp_path / layout / f"member{k}") for k, c in enumerate(configs)]
            summaries = train_population(jobs, group="g", layout=layout)
            assert [s["status"] for s in summaries] == ["completed"] * 3
            # members in turn run the single run's program op for op: on CPU (deterministic), its very bits
            exact = layout == "in_turn" and jax.default_backend() == "cpu"
            for k, single in enumerate(singles):
                member = tmp_path / layout / f"member{k}"
                if exact:
                    assert_same_record(tmp_path / f"single{k}", member)
                    continue
                assert_close_rows(metric_rows(member), metric_rows(tmp_path / f"single{k}"), loss_rtol)
                assert summaries[k]["params"] == single["params"]
                assert summaries[k]["step"] == single["step"] == 20
                ours, theirs = final_arrays(member), final_arrays(tmp_path / f"single{k}")
                assert ours.keys() == theirs.keys()
                for key in (k for k in theirs if not k.startswith("opt_state")):  # parameters, BN statistics
                    difference = np.linalg.norm(ours[key] - theirs[key]) / max(
                        np.linalg.norm(theirs[key]), 1e-6
                    )
                    assert difference <= array_rtol, (layout, key, difference)


def test_each_member_has_its_own_wandb_run_named_as_its_single_run(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    configs = [tiny_config("model=mlp", "logger=wandb", f"seed={seed}") for seed in (0, 1)]
    jobs = [MemberJob(c, tmp_path / f"seed={k}", name=f"seed={k}") for k, c in enumerate(configs)]
    train_population(jobs, group="my-sweep", wandb_dir=tmp_path / "sweep")
    logs = sorted((tmp_path / "sweep" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(logs) == 2  # side by side for `wandb leet`, as a sweep's single runs are
    records = sorted(((run_record(log), log) for log in logs), key=lambda pair: pair[0].display_name)
    for k, (record, log) in enumerate(records):
        assert (record.run_group, record.display_name) == ("my-sweep", f"seed={k}")
        assert {"mlp", "residual", "depth=10", "l2=0.0001"} <= set(record.tags)
        logged = [r["train/loss"] for r in history(log) if "train/loss" in r]
        assert logged == pytest.approx(
            [r["train/loss"] for r in metric_rows(tmp_path / f"seed={k}") if "train/loss" in r]
        )


def test_members_differing_in_more_than_population_keys_form_other_programs() -> None:
    def job(*overrides: str) -> MemberJob:
        return MemberJob(compose("model=mlp", *overrides), Path("/x").joinpath(*overrides))

    jobs = [
        job("seed=0"),
        job("seed=1", "optim.lr=0.1", "optim.l2=0.01", "optim.warmup_lr=0.05"),
        job("model.depth=20"),
        job("model.residual=false"),
        job("trainer.batch_size=64"),
        job("optim.momentum=0.5"),
        job("optim.momentum=0"),
        job("seed=3", "model.depth=20"),
    ]
    groups = [[j.run_dir.name for j in g] for g in form_groups(jobs, max_members=10)]
    assert groups == [
        ["seed=0", "optim.warmup_lr=0.05", "optim.momentum=0.5"],
        ["model.depth=20", "model.depth=20"],
        ["model.residual=false"],
        ["trainer.batch_size=64"],
        ["optim.momentum=0"],
    ]
    assert [len(g) for g in form_groups(jobs[:2] * 3, max_members=4)] == [4, 2]


def test_a_population_larger_than_the_device_memory_is_trained_in_smaller_programs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The members that fit follow the free memory (XLA's memory analysis of the population's own compiled
    chunk, no other compilation); with room for one, the launcher trains three programs of one, and each
    member ends as in one program of three."""
    caplog.set_level(logging.INFO, logger=population.__name__)
    configs = [tiny_config("model=mlp", *member) for member in MEMBERS]
    jobs = [MemberJob(cfg, tmp_path / "one" / str(k), name=str(k)) for k, cfg in enumerate(configs)]
    summaries = train_population(jobs, group="g", fit_to_memory=True)  # room for all (CPU: the host's RAM)
    for layout in ("vmap", "in_turn"):
        engine = population.PopulationEngine(
            [models.build(c.model, (8, 8, 1), 10, c.seed) for c in configs],
            [c.optim for c in configs],
            20,
            seeds=[c.seed for c in configs],
            x_train=np.zeros((64, 8, 8, 1), np.float32),
            y_train=np.zeros(64, np.int32),
            augment=False,
            dtype=np.float32,
            layout=layout,
        )
        monkeypatch.setattr(footprint, "free_bytes", lambda: 10**12)
        many = engine.members_that_fit(5, 32)
        monkeypatch.setattr(footprint, "free_bytes", lambda: 10**12 // 100)
        fewer = engine.members_that_fit(5, 32)
        assert many > fewer > 1 and abs(many / fewer - 100) < 1, layout
    # said in sizes a person reads, never as a raw count of members that could fit
    said = [r.getMessage() for r in caplog.records if "fit in one program" in r.getMessage()]
    fits = r"population of 3: all fit in one program \(80 % of the [\d.]+ [KMGT]iB free\)"
    assert said and all(re.fullmatch(fits, line) for line in said), said
    # room for one member per program
    monkeypatch.setattr(population.PopulationEngine, "members_that_fit", lambda *_: 1)
    with pytest.raises(population.TooLarge) as raised:
        train_population(
            [replace(job, run_dir=tmp_path / "none" / job.name) for job in jobs],
            group="g",
            fit_to_memory=True,
        )
    assert raised.value.fit == 1 and not (tmp_path / "none").exists()  # sized before any directory is claimed
    split = [replace(job, run_dir=tmp_path / "split" / job.name) for job in jobs]
    codes = population_launcher._train(split, tmp_path, fit_to_memory=True, layout="auto")
    assert list(codes.values()) == [0] * len(jobs)
    for job, summary in zip(split, summaries, strict=True):
        ours = json.loads((job.run_dir / "summary.json").read_text())
        assert ours["status"] == "completed"
        np.testing.assert_allclose(ours["final"]["train/loss"], summary["final"]["train/loss"], rtol=1e-5)


ARGS = (
    "-m",
    *SHORT_RUN,
    "trainer.steps=20",
    "optim.l2=0,1e-3",
    "seed=0,1",
)
POPULATION = (*ARGS, "launcher=population")


def sweep(directory: Path, *args: str, env: dict | None = None):
    return train(*args, f"hydra.sweep.dir={directory}", env=env)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("population") / "sweep"
    out = sweep(directory, *POPULATION)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "population of 4:" in out.stderr
    return directory


def run_dirs(sweep_dir: Path) -> list[Path]:
    return sorted(p.parent for p in sweep_dir.glob("*/summary.json"))


@pytest.mark.bits
def test_a_population_sweep_writes_the_run_directories_of_the_basic_launcher(
    uninterrupted: Path, tmp_path: Path
) -> None:
    basic = tmp_path / "basic"
    out = sweep(basic, *ARGS)
    assert out.returncode == 0, out.stderr[-3000:]
    ours, theirs = run_dirs(uninterrupted), run_dirs(basic)
    assert [p.name for p in ours] == [p.name for p in theirs] and len(ours) == 4
    for a, b in zip(ours, theirs, strict=True):
        assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
        assert (a / "config.yaml").read_text() == (b / "config.yaml").read_text()
        assert sorted(p.name for p in (a / "checkpoints").iterdir()) == sorted(
            p.name for p in (b / "checkpoints").iterdir()
        )
        summary_a, summary_b = (json.loads((d / "summary.json").read_text()) for d in (a, b))
        assert summary_a.keys() == summary_b.keys() and summary_a["status"] == "completed"
        if jax.default_backend() == "cpu":  # members in turn (`auto` here): the single runs' very bits
            assert_same_record(b, a)
        else:
            assert_close_rows(metric_rows(a), metric_rows(b), loss_rtol=1e-5)
    for directory in (uninterrupted, basic):  # the report reads both alike
        assert report(str(directory)).returncode == 0
    csv_a, csv_b = ((d / "runs.csv").read_text().splitlines() for d in (uninterrupted, basic))
    assert [line.split(",")[:8] for line in csv_a] == [line.split(",")[:8] for line in csv_b]


@pytest.mark.parametrize(
    ("fault", "layout"),
    [
        ("after_checkpoint@10", "auto"),  # the first member's checkpoint at 10 saved, the others' not
        ("after_final_checkpoint@20", "auto"),  # the first member complete, the others at step 10
        ("after_checkpoint@10", "vmap"),  # members side by side (`auto` on GPU/TPU)
    ],
)
def test_a_killed_population_resumes_every_member_bit_identically(
    fault: str, layout: str, uninterrupted: Path, tmp_path: Path
) -> None:
    population_args = (*POPULATION, f"hydra.launcher.layout={layout}")
    if layout != "auto":  # the uninterrupted population of that layout
        uninterrupted = tmp_path / "uninterrupted"
        assert sweep(uninterrupted, *population_args).returncode == 0
    directory = tmp_path / "sweep"
    killed = sweep(directory, *population_args, env={"RESNET_JAX_FAULT": fault})
    assert killed.returncode != 0
    out = sweep(directory, *population_args)
    assert out.returncode == 0, out.stderr[-3000:]
    if fault.startswith("after_final_checkpoint"):
        assert out.stderr.count("run already completed at step 20") == 1  # reported, not retrained
    for reference, resumed in zip(run_dirs(uninterrupted), run_dirs(directory), strict=True):
        assert_same_record(reference, resumed)
        assert not (resumed / ".lock").exists()
    members = run_dirs(directory)
    for member in members:  # a member's train.log: its own lines, not the other members'
        log = (member / "train.log").read_text()
        said = [line for line in log.splitlines() if re.search(r"(resuming from|completed at) .* in /", line)]
        assert all(f"in {member}" in line for line in said), said  # never another member's
        assert said or not fault.startswith("after_final"), log[-2000:]  # each member resumed or completed


def test_a_member_whose_directory_holds_another_config_is_left_untouched(
    tmp_path: Path,
) -> None:
    """Through the Python API (the command line refuses such a sweep before it starts): the member whose
    directory holds another run says so in the single run's words, nothing in that directory changes, and the
    other members train."""
    configs = [tiny_config("model=mlp", *member) for member in MEMBERS]
    jobs = [MemberJob(cfg, tmp_path / str(k), name=str(k)) for k, cfg in enumerate(configs)]
    run(tiny_config("model=mlp", *MEMBERS[1], "trainer.steps=10"), jobs[1].run_dir)
    before = snapshot(jobs[1].run_dir)
    summaries = train_population(jobs, group="g")
    assert [s["status"] for s in summaries] == ["completed", "failed", "completed"]
    assert (
        summaries[1]["exit_code"] == 2
        and "holds a run of another configuration (trainer.steps: 10 -> 20" in (summaries[1]["error"])
    )
    assert snapshot(jobs[1].run_dir) == before


@pytest.mark.bits
@pytest.mark.parametrize("fault", ["no intact checkpoint", "held by another process"])
def test_a_member_whose_directory_cannot_take_it_fails_alone_and_the_others_train(
    fault: str, uninterrupted: Path, tmp_path: Path
) -> None:
    """As with the basic launcher, a member's own directory problem is that member's one-line error: its
    siblings resume and complete (their records those of the uninterrupted population), and the sweep exits
    non-zero naming it; a directory held by another process is left untouched."""
    directory = tmp_path / "sweep"
    assert sweep(directory, *POPULATION, env={"RESNET_JAX_FAULT": "after_log@15"}).returncode != 0
    member = run_dirs(directory)[1]
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        if fault == "no intact checkpoint":
            for path in (member / "checkpoints").rglob("*"):
                if path.is_file():
                    path.write_bytes(path.read_bytes()[:30])
            expected = f"error: no intact checkpoint in {member / 'checkpoints'}"
        else:
            write_lock(member, pid=holder.pid, start=process_start_time(holder.pid))
            expected = f"error: {member} is in use by PID {holder.pid}"
        before = snapshot(member)
        out = sweep(directory, *POPULATION)
    finally:
        holder.kill()
        holder.wait()
    assert out.returncode != 0, out.stderr[-3000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(expected), errors
    said = expected.removeprefix("error: ")  # said once while the sweep runs, once more in its outcome
    running = [line for line in out.stderr.splitlines() if said in line and not line.startswith("job ")]
    assert len(running) == 1, running
    jobs = [line for line in out.stderr.splitlines() if line.startswith("job ")]  # the sweep's outcome
    assert len(jobs) == 1 and jobs[0].endswith(f"({member})"), jobs
    for reference, resumed in zip(run_dirs(uninterrupted), run_dirs(directory), strict=True):
        if resumed != member:
            assert_same_record(reference, resumed)
    if fault == "held by another process":
        assert snapshot(member) == before
    else:
        assert json.loads((member / "summary.json").read_text())["status"] == "failed"


@pytest.mark.bits
def test_a_members_directory_resumes_alone_with_the_basic_launcher(
    uninterrupted: Path, tmp_path: Path
) -> None:
    directory = tmp_path / "sweep"
    assert sweep(directory, *POPULATION, env={"RESNET_JAX_FAULT": "after_log@15"}).returncode != 0
    member = run_dirs(directory)[1]
    own = [kv for kv in member.name.split(",") if kv.startswith(("optim.l2=", "seed="))]
    single = (*ARGS[1:-2], *own)
    out = train(*single, f"hydra.run.dir='{member}'")
    assert out.returncode == 0 and "resuming from the checkpoint at step 10" in out.stderr, out.stderr[-3000:]
    reference = run_dirs(uninterrupted)[1]
    if jax.default_backend() == "cpu":  # members in turn (`auto` here) compute a single run's bits
        assert_same_record(reference, member)
        return
    rows, expected = metric_rows(member), metric_rows(reference)
    assert [r for r in rows if r["step"] <= 10] == [r for r in expected if r["step"] <= 10]  # the same bits
    assert_close_rows(rows, expected, loss_rtol=1e-5)


@pytest.mark.bits
def test_max_members_splits_a_population_and_changes_no_result(uninterrupted: Path, tmp_path: Path) -> None:
    directory = tmp_path / "sweep"
    out = sweep(directory, *POPULATION, "hydra.launcher.max_members=3")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "population of 3:" in out.stderr and "population of 1:" in out.stderr
    for reference, split in zip(run_dirs(uninterrupted), run_dirs(directory), strict=True):
        if jax.default_backend() == "cpu":  # in turn, a member's bits do not depend on the others
            assert_same_record(reference, split)
        else:
            assert_close_rows(metric_rows(split), metric_rows(reference), loss_rtol=1e-5)


BAD_LAUNCHER_SETTINGS = {  # override: the one line it gives
    "hydra.launcher.max_members=0": "hydra.launcher.max_members=0 is not allowed; it must be a finite "
    "number > 0",
    "hydra.launcher.backend=slurm": "hydra.launcher.backend='slurm' is not allowed; choose one of: local, "
    "submitit_local, submitit_slurm",
    "hydra.launcher.layout=pmap": "hydra.launcher.layout='pmap' is not allowed; choose one of: auto, vmap, "
    "in_turn",
    "hydra.launcher.executor.tasks_per_node=2": "hydra.launcher.executor.tasks_per_node=2 needs "
    "hydra.launcher.backend=submitit_slurm (only SLURM starts a group's job as several JAX processes); "
    "set it to 1 or choose that backend",
    "hydra.launcher.executor.nodes=0": "hydra.launcher.executor.nodes=0 is not allowed; it must be a finite "
    "number > 0",
}


def test_bad_launcher_settings_are_one_line_and_write_nothing(tmp_path: Path) -> None:
    directory = tmp_path / "sweep"
    for override, message in BAD_LAUNCHER_SETTINGS.items():
        out = sweep(directory, *POPULATION, override)
        assert out.returncode == 2 and out.stderr.strip().splitlines() == [f"error: {message}"]
    assert not directory.exists()


def test_a_completed_population_is_reported_not_retrained(uninterrupted: Path, tmp_path: Path) -> None:
    """A completed population sweep run again is reported, not retrained, and changes nothing."""
    directory = tmp_path / "sweep"
    shutil.copytree(uninterrupted, directory)
    before = {p: p.stat().st_mtime_ns for p in directory.rglob("checkpoints/*/*") if p.is_file()}
    out = sweep(directory, *POPULATION)
    assert out.returncode == 0 and out.stderr.count("run already completed at step 20") == 4
    assert {p: p.stat().st_mtime_ns for p in directory.rglob("checkpoints/*/*") if p.is_file()} == before


@pytest.mark.bits
@pytest.mark.parametrize("layout", ["vmap", "in_turn"])
def test_members_split_over_devices_compute_what_one_device_computes(
    uninterrupted: Path, layout: str, tmp_path: Path
) -> None:
    """Four members on three (CPU host) devices: each device trains whole members, side by side or in turn,
    padded to six slots (a batch of 32 need not divide 3), with the numbers of one device; the padding is
    never reported."""
    directory = tmp_path / "sweep"
    out = sweep(
        directory,
        *POPULATION,
        f"hydra.launcher.layout={layout}",
        env={"XLA_FLAGS": "--xla_force_host_platform_device_count=3"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "4 members split over 3 devices (6 slots)" in out.stderr
    assert len(run_dirs(directory)) == 4
    for reference, split in zip(run_dirs(uninterrupted), run_dirs(directory), strict=True):
        assert json.loads((split / "summary.json").read_text())["devices"] == 3
        assert_close_rows(metric_rows(split), metric_rows(reference), loss_rtol=1e-5)
        ours, theirs = final_arrays(split), final_arrays(reference)
        for key in theirs:
            np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_a_preempted_population_job_is_requeued_and_resumes_bit_identically(
    uninterrupted: Path, tmp_path: Path
) -> None:
    """`backend=submitit_local`: the group is one submitit job; submitit's preemption signal (USR2, sent by
    the job itself after the first member's step-10 checkpoint) requeues it, and the requeued job resumes
    every member from its run directory: the records of the uninterrupted population, bit for bit."""
    directory, signalled = tmp_path / "sweep", tmp_path / "signalled"
    fault = {"RESNET_JAX_FAULT": "after_checkpoint@10:usr2", "RESNET_JAX_FAULT_ONCE": str(signalled)}
    out = sweep(directory, *POPULATION, "hydra.launcher.backend=submitit_local", env=fault)
    assert out.returncode == 0, out.stderr[-3000:]
    assert signalled.exists() and "population job of 4:" in out.stderr
    job_folders = [p for p in (directory / ".submitit").iterdir() if p.name[:1].isdigit()]
    assert len(job_folders) == 1  # one group, one job
    job_logs = "".join(p.read_text() for p in job_folders[0].glob("*_log.err"))
    assert "this job is preempted" in job_logs and "Requeued job" in job_logs, job_logs[-3000:]
    first = run_dirs(directory)[0]
    assert "resuming from the checkpoint at step 10" in (first / "train.log").read_text()
    for reference, resumed in zip(run_dirs(uninterrupted), run_dirs(directory), strict=True):
        assert_same_record(reference, resumed)
