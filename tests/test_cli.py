"""The command line as users run it: Hydra single runs, multirun sweeps, and errors as one line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from helpers import REPO, snapshot, train

FAST = (
    "model=mlp",
    "model.width=16",
    "trainer.steps=4",
    "trainer.log_every=2",
    "trainer.eval_every=2",
    "trainer.batch_size=16",
)


def test_sequential_multirun_gives_one_run_dir_and_one_offline_wandb_run_per_job(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    out = train("-m", *FAST, "model.depth=4,6", f"hydra.sweep.dir={sweep}", cwd=REPO, wandb_mode="offline")
    assert out.returncode == 0, out.stderr[-3000:]
    runs = sorted(p.parent for p in sweep.glob("*/summary.json"))
    assert [p.name.split(",")[0] for p in runs] == ["model.depth=4", "model.depth=6"]
    for run_dir in runs:
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["step"] == 4
        assert (run_dir / "overrides.yaml").is_file() and (run_dir / "train.log").is_file()
        depth = int(run_dir.name.split(",")[0].removeprefix("model.depth="))
        assert yaml.safe_load((run_dir / "config.yaml").read_text())["model"]["depth"] == depth
    offline = sorted((sweep / "wandb").glob("offline-run-*"))
    assert len(offline) == 2, offline  # one W&B run per job, side by side for `wandb leet`
    ids = {p.name.rsplit("-", 1)[-1] for p in offline}
    assert len(ids) == 2
    assert all(list(p.glob("*.wandb")) for p in offline)


def test_bad_depth_exits_non_zero_with_one_clear_line(tmp_path: Path) -> None:
    out = train("model.depth=21", f"hydra.run.dir={tmp_path / 'run'}", cwd=REPO)
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert lines == [
        "error: model.depth=21 is not valid for model=cifar: depth must be 6n+2 with n >= 1 "
        "(8, 14, 20, 32, 44, 56, 110, 1202, ...); nearest valid: 20 or 26"
    ]
    assert "Traceback" not in out.stdout + out.stderr


def test_a_failing_job_does_not_stop_the_sweep_and_is_marked_failed(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    # the CIFAR-10 archive is damaged after the sweep was checked (as on a cluster's scratch disk); it lies at
    # cifar10's default data.root under HOME, since digits has no data.root to sweep along
    archive = tmp_path / ".cache" / "resnet_jax" / "cifar-10-python.tar.gz"
    archive.parent.mkdir(parents=True)
    archive.write_bytes(b"truncated")
    env = {"HOME": str(tmp_path)}
    out = train("-m", *FAST, "data=cifar10,digits", f"hydra.sweep.dir={sweep}", cwd=REPO, env=env)
    assert out.returncode == 2, out.stderr[-2000:]
    summaries = {p.parent.name.split(",")[0]: json.loads(p.read_text()) for p in sweep.glob("*/summary.json")}
    assert summaries["data=digits"]["status"] == "completed"
    failed = summaries["data=cifar10"]
    assert failed["status"] == "failed" and "does not match data.md5" in failed["error"]


def test_submitit_local_sweep_runs_each_job_in_its_own_process(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    out = train(
        "-m", "launcher=submitit_local", *FAST, "model.depth=4,6", f"hydra.sweep.dir={sweep}", cwd=REPO
    )
    assert out.returncode == 0, out.stderr[-3000:]
    summaries = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/summary.json"))]
    assert [s["status"] for s in summaries] == ["completed", "completed"]
    block = 2 * (16 * 16 + 16)
    assert [s["params"] for s in summaries] == [64 * 16 + 16 + block + 170, 64 * 16 + 16 + 2 * block + 170]
    job_logs = list((sweep / ".submitit").glob("*/*_log.out"))
    assert len(job_logs) == 2  # two submitit jobs, each with its own log


FAILS_BEFORE_HYDRA = [
    ("model.depth=21", r"^error: model\.depth=21 is not valid for model=cifar: depth must be 6n\+2"),
    ("model.depth=2", r"^error: model\.depth=2 is not valid .*nearest valid: 8$"),
    ("model=resnet", r"^error: model=resnet is not allowed; choose one of: cifar, mlp$"),
    (
        "data=imagenet",
        r"^error: data=imagenet is not allowed; choose one of: "
        r"cifar10, digits, fashion_mnist, mnist, synthetic$",
    ),
    ("optim=lamb", r"^error: optim=lamb is not allowed; choose one of: adamw, sgd$"),
    (
        "optim.schedule=step",
        r"^error: optim\.schedule='step' is not allowed; choose one of: piecewise, cosine",
    ),
    ("optim.lr=nan", r"^error: optim\.lr=nan is not allowed; it must be a finite number > 0$"),
    ("optim.lr=-0.1", r"^error: optim\.lr=-0\.1 is not allowed"),
    ("optim.l2=nan", r"^error: optim\.l2=nan is not allowed; it must be a finite number >= 0$"),
    ("optim.l2=-1e-4", r"^error: optim\.l2=-0\.0001 is not allowed"),
    ("trainer.batch_size=0", r"^error: trainer\.batch_size=0 is not allowed"),
    ("trainer.batch_size=2000", r"^error: trainer\.batch_size=2000 is larger than the digits training split"),
    ("trainer.steps=-5", r"^error: trainer\.steps=-5 is not allowed"),
    ("model.depth=twenty", r"^error: Error merging override model\.depth=twenty: Value 'twenty'.*Integer$"),
    (
        "+model.dept=20",
        r"^error: model\.dept is not a key of model=cifar; its keys are: name, depth, residual",
    ),
    ("model.width=32", r"^error: model\.width is not a key of model=cifar; its keys are: .*conv_impl$"),
    (
        "data=cifar10 data.root=/nonexistent",
        r"^error: CIFAR-10 archive not found at /nonexistent/cifar-10-python\.tar\.gz",
    ),
    ("seed=-1", r"^error: seed=-1 is not allowed; it must be an integer in \[0, 2147483646\]$"),
    ("seed=99999999999", r"^error: seed=99999999999 is not allowed; it must be an integer in \[0, "),
    ("data.split_seed=-3", r"^error: data\.split_seed=-3 is not allowed; it must be an integer in \[0, "),
    ("optim.momentum=1.5", r"^error: optim\.momentum=1\.5 is not allowed; it must lie in \[0, 1\)$"),
    (
        "optim.boundaries=[300,100]",
        r"^error: optim\.boundaries=\[300, 100\] is not allowed; the steps must strictly",
    ),
    ("name=../escape", r"^error: name='\.\./escape' is not allowed; it names a folder: .* no '/' or '\.\.'$"),
    ("name=a/b", r"^error: name='a/b' is not allowed; it names a folder"),
    (
        "data=cifar10 data.md5=../../x",
        r"^error: data\.md5='\.\./\.\./x' is not allowed; it must be an MD5 digest",
    ),
    (
        "logger.project=team/proj",
        r"^error: logger\.project='team/proj' is not allowed; it must be a W&B project",
    ),
    ("trainer.probe=1", r"^error: trainer\.probe is not a key of trainer; its keys are: steps, batch_size"),
    (
        "hydra.job.config.override_dirname.exclude_keys=[] data=cifar10 data.download=true data.root=/tmp",
        r"^error: the run directory's name '.*data.root=/tmp.*' \(from the overrides\) must be one folder",
    ),
]


@pytest.mark.parametrize(("override", "message"), FAILS_BEFORE_HYDRA)
def test_bad_input_is_one_line_nonzero_exit_and_changes_nothing(
    override: str, message: str, completed_run: Path
) -> None:
    before = snapshot(completed_run)
    out = train(*override.split(), f"hydra.run.dir={completed_run}", cwd=REPO)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert re.search(message, lines[0]), lines[0]
    assert "Traceback" not in out.stdout + out.stderr
    assert snapshot(completed_run) == before


MLP_KEYS = "name, depth, residual, remat, unroll, width, init, dense_impl"
ADAMW_KEYS = (
    "name, lr, l2, l2_scope, schedule, boundaries, decay, clip_norm, warmup_steps, warmup_lr, warmup, "
    "weight_decay"
)
FOREIGN_KEYS = [
    (
        ("model=mlp", "model.shortcut=B"),
        f"model.shortcut is not a key of model=mlp; its keys are: {MLP_KEYS}",
    ),
    (("model=mlp", "model.preact=true"), f"model.preact is not a key of model=mlp; its keys are: {MLP_KEYS}"),
    (
        ("data=digits", "data.image_size=32"),
        "data.image_size is not a key of data=digits; its keys are: "
        "name, normalize, augment, validation, test_fraction, split_seed",
    ),
    (
        ("optim=adamw", "optim.momentum=0.5"),
        f"optim.momentum is not a key of optim=adamw; its keys are: {ADAMW_KEYS}",
    ),
    (("logger=none", "logger.mode=online"), "logger.mode is not a key of logger=none; its keys are: name"),
]


@pytest.mark.parametrize(("args", "message"), FOREIGN_KEYS)
def test_a_key_of_another_family_is_one_line_naming_the_family_and_its_keys(
    args: tuple[str, ...], message: str, completed_run: Path
) -> None:
    before = snapshot(completed_run)
    out = train(*args, f"hydra.run.dir={completed_run}")
    assert out.returncode == 2 and out.stderr.strip() == f"error: {message}", out.stderr
    assert snapshot(completed_run) == before


def test_unwritable_output_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    out = train(f"hydra.run.dir={blocker / 'run'}", cwd=REPO)
    assert out.returncode == 2
    assert out.stderr.strip() == (
        f"error: cannot create the output directory {blocker / 'run'}: {blocker} is not a writable "
        "directory; choose another with hydra.run.dir=... (or hydra.sweep.dir=... with -m)"
    )


def test_rerunning_a_completed_run_reports_it_and_changes_nothing(completed_run: Path) -> None:
    before = snapshot(completed_run, skip=("train.log",))  # every file but the log of this attempt
    out = train(*FAST, "model.depth=4", f"hydra.run.dir={completed_run}", cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert "run already completed at step 4" in out.stderr and "status         completed" in out.stdout
    assert snapshot(completed_run, skip=("train.log",)) == before


def test_wandb_online_without_network_warns_once_and_trains(tmp_path: Path) -> None:
    env = {"WANDB_API_KEY": "0" * 40, "WANDB_BASE_URL": "http://127.0.0.1:9"}
    out = train(
        *FAST,
        "model.depth=4",
        "logger.init_timeout=3",
        f"hydra.run.dir={tmp_path}",
        cwd=REPO,
        wandb_mode="online",
        env=env,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    warnings = [line for line in out.stderr.splitlines() if "W&B could not start" in line]
    assert len(warnings) == 1 and "continuing with metrics.jsonl only" in warnings[0]
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "completed"


@pytest.fixture(scope="module")
def completed_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("completed") / "run"
    out = train(*FAST, "model.depth=4", f"hydra.run.dir={run_dir}", cwd=REPO)
    assert out.returncode == 0, out.stderr
    return run_dir


@pytest.mark.slow
def test_resnet_1202_builds_compiles_and_trains_two_steps(tmp_path: Path) -> None:
    """The foundation's depth check (about 2.5 min on 2 CPU cores; `make test-all`)."""
    out = train(
        "model.depth=1202",
        "data=synthetic",
        "trainer.steps=2",
        "probe.every=0",
        f"hydra.run.dir={tmp_path}",
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["step"] == 2 and summary["params"] == 19_421_274


def test_joblib_sweep_runs_jobs_in_parallel_processes(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    out = train("-m", "launcher=joblib", *FAST, "model.depth=4,6", f"hydra.sweep.dir={sweep}", cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    names = sorted(p.parent.name.split(",")[0] for p in sweep.glob("*/summary.json"))
    assert names == ["model.depth=4", "model.depth=6"]  # the launcher does not change run directories
    assert all(json.loads(p.read_text())["status"] == "completed" for p in sweep.glob("*/summary.json"))
