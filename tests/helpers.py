"""Helpers the test modules share (fixtures live in conftest.py): the command line, tiny configs, reading
run directories back, and fake CIFAR-10 archives in the official format."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import platform
import socket
import subprocess
import sys
import tarfile
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import yaml
from flax import nnx
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from omegaconf import DictConfig

from resnet_jax import arguments, preflight
from resnet_jax.composition import compose, register
from resnet_jax.config import CONF_DIR, Config

REPO = Path(__file__).resolve().parents[1]
# the oneDNN wheels (and so the CPU kernels) exist for Linux x86-64 only
LINUX_X86_64 = sys.platform == "linux" and platform.machine() == "x86_64"

# A config that trains in seconds on digits, without W&B or a progress bar.
TINY = (
    "logger=none",
    "trainer.steps=20",
    "trainer.batch_size=32",
    "trainer.eval_every=10",
    "trainer.log_every=10",
    "trainer.progress=false",
    "probe.every=10",
    "probe.batch_size=16",
)


# a 40-step run of the notes' dense net, a checkpoint every 10 steps: the run the edge tests interrupt, damage
# and compare (tests/test_identity.py, test_torn_writes.py, test_limits.py, test_interrupts.py)
SHORT_RUN = (
    *TINY,
    "model=mlp",
    "model.depth=4",
    "model.width=16",
    "trainer.steps=40",
    "trainer.log_every=5",
    "trainer.checkpoint_every=10",
)


# a 4-trial search of the notes' dense net from the ResNet-20 preset (its validation split and objective)
SEARCH = (
    "hparams_search=resnet20_lr_l2",
    "model=mlp",
    "model.depth=4",
    "model.width=16",
    "logger=none",
    "trainer.steps=20",
    "trainer.batch_size=32",
    "trainer.log_every=10",
    "trainer.eval_every=20",
    "trainer.progress=false",
    "probe.every=0",
    "hydra.sweeper.n_trials=4",
    "hydra.sweeper.n_jobs=2",
)


def search_trials(sweep: Path) -> dict[tuple[float, float], dict]:
    """Each trial's summary by its searched (lr, l2), from its run directory."""
    found = {}
    for run_dir in sweep.iterdir():
        if (run_dir / "config.yaml").exists():
            optim = yaml.safe_load((run_dir / "config.yaml").read_text())["optim"]
            found[optim["lr"], optim["l2"]] = json.loads((run_dir / "summary.json").read_text())
    return found


def search_best(sweep: Path) -> tuple[tuple[float, float], float]:
    """The sweeper's answer: the best trial's (lr, l2) and value."""
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    return (result["best_params"]["optim.lr"], result["best_params"]["optim.l2"]), result["best_value"]


def tiny_config(*overrides: str) -> Config:
    """What `python -m resnet_jax.train TINY OVERRIDES` runs (composed through Hydra, as users get it)."""
    return compose(*TINY, *overrides)


def hydra_config(*overrides: str) -> DictConfig:
    """The `hydra` node of the config that `python -m resnet_jax.train OVERRIDES` composes."""
    register()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose("config", list(overrides), return_hydra_config=True).hydra


def planned_jobs(*overrides: str, multirun: bool = False) -> list[preflight.Job]:
    """The jobs `python -m resnet_jax.train [-m] OVERRIDES` runs, as its pre-flight composes them."""
    register()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        master = hydra_compose("config", arguments.without_sweeps(list(overrides)), return_hydra_config=True)
        if not multirun:
            return [preflight.job(master, list(overrides), None)]
        combos, _ = preflight.combinations([*preflight.sweeper_params(master), *overrides])
        return [preflight.job(master, combo, n) for n, combo in enumerate(combos)]


def forward(model: nnx.Module, x: jax.Array, train: bool) -> jax.Array:
    """`model(x, train)` compiled as one program, as the engine runs it (called eagerly, a deep net compiles
    op by op, many times slower)."""
    return nnx.jit(lambda m, x: m(x, train))(model, x)


def command_env(wandb_mode: str = "disabled", env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment the tests' commands run in: W&B quiet (disabled unless asked), one-line errors."""
    return {
        **os.environ,
        "WANDB_MODE": wandb_mode,
        "WANDB_SILENT": "true",
        "HYDRA_FULL_ERROR": "0",
        **(env or {}),
    }


def command(
    module: str, *args: str, cwd: Path = REPO, wandb_mode: str = "disabled", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """`python -m MODULE ARGS` in a subprocess, as a user runs it: the one way the tests run a command."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=command_env(wandb_mode, env),
        capture_output=True,
        text=True,
        timeout=600,
    )


def start_train(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`python -m resnet_jax.train ARGS` started in the background (for a test to signal or cancel)."""
    return subprocess.Popen(
        [sys.executable, "-m", "resnet_jax.train", *args, "trainer.progress=false"],
        cwd=REPO,
        env=command_env(env=env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def train(*args: str, **how) -> subprocess.CompletedProcess:
    """`python -m resnet_jax.train ARGS` (without a progress bar); `how`: `command`'s keywords."""
    return command("resnet_jax.train", *args, "trainer.progress=false", **how)


def report(*args: str, **how) -> subprocess.CompletedProcess:
    """`python -m resnet_jax.report ARGS`."""
    return command("resnet_jax.report", *args, **how)


def trained(run_dir: Path, *args: str) -> Path:
    """`run_dir` after `python -m resnet_jax.train ARGS` completed there: a reference record."""
    out = train(*args, f"hydra.run.dir={run_dir}")
    assert out.returncode == 0, out.stderr[-2000:]
    return run_dir


def final_arrays(run_dir: Path) -> dict[str, np.ndarray]:
    """The newest checkpoint's arrays by path."""
    with ocp.CheckpointManager(run_dir.resolve() / "checkpoints") as manager:
        step = manager.latest_step()
        restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    return {k: np.asarray(v) for k, v in restored["state"].items()}


def metric_rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def assert_same_record(reference: Path, run_dir: Path) -> None:
    """Two run directories hold the same completed run: metrics rows, final arrays (bits), final and best."""
    assert metric_rows(run_dir) == metric_rows(reference)
    a, b = final_arrays(reference), final_arrays(run_dir)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    ours, theirs = (json.loads((d / "summary.json").read_text()) for d in (run_dir, reference))
    assert ours["status"] == "completed" and (ours["final"], ours["best"]) == (
        theirs["final"],
        theirs["best"],
    )


def snapshot(root: Path, skip: tuple[str, ...] = ()) -> dict[str, tuple[int, int]]:
    """Every file's (mtime, size) under `root`, but those under a part named in `skip`."""
    return {
        str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size)
        for p in root.rglob("*")
        if p.is_file() and not set(skip) & set(p.relative_to(root).parts)
    }


def cifar_batch(n: int, seed: int) -> dict:
    """One batch as the official archive pickles it (bytes keys, uint8 (n, 3072), list of labels)."""
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"fake batch",
        b"labels": [int(v) for v in rng.integers(0, 10, size=n)],
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }


def add_member(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def write_fake_cifar(root: Path, per_batch: int = 10, extra: dict[str, bytes] | None = None) -> str:
    """Write `cifar-10-python.tar.gz` under root; returns its MD5."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for i in range(1, 6):
            add_member(
                tar,
                f"cifar-10-batches-py/data_batch_{i}",
                pickle.dumps(cifar_batch(per_batch, i), protocol=2),
            )
        add_member(
            tar, "cifar-10-batches-py/test_batch", pickle.dumps(cifar_batch(per_batch, 99), protocol=2)
        )
        add_member(tar, "cifar-10-batches-py/batches.meta", pickle.dumps({b"label_names": [b"x"] * 10}))
        for name, payload in (extra or {}).items():
            add_member(tar, name, payload)
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_lock(run_dir: Path, **holder) -> None:
    """A run directory's `.lock` as a holder on this host would leave it (`holder` sets or overrides keys)."""
    record = {"host": socket.gethostname(), "since": "2026-01-01 00:00:00", "token": "t", **holder}
    (run_dir / ".lock").write_text(json.dumps(record))
