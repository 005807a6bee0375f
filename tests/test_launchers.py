"""Launcher presets: joblib thread limits, and the SLURM submission rendered without a cluster."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import submitit
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

import resnet_jax.train  # noqa: F401  (registers the schema and the run_name resolver)
from resnet_jax.slurm import fitting_defaults, make_executor

CONF = Path(__file__).resolve().parents[1] / "conf"


def hydra_config(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def test_joblib_preset_runs_jobs_in_parallel_with_one_thread_each() -> None:
    cfg = hydra_config("launcher=joblib")
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher") and cfg.hydra.launcher.n_jobs == 2
    env = cfg.hydra.job.env_set
    assert "intra_op_parallelism_threads=1" in env.XLA_FLAGS and env.OMP_NUM_THREADS == "1"


def fake_command(tmp_path: Path, monkeypatch, name: str, body: str) -> None:
    """A command `name` first on PATH, running the shell line `body`."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir(exist_ok=True)
    (fake_bin / name).write_text(f"#!/bin/sh\n{body}\n")
    (fake_bin / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}:{os.environ['PATH']}")


class _Rendered(Exception):
    """Stops the launch once the submission script exists."""


def test_slurm_preset_renders_the_expected_sbatch_submission(tmp_path: Path, monkeypatch) -> None:
    cfg = hydra_config(
        "launcher=submitit_slurm",
        f"hydra.sweep.dir={tmp_path}",
        "hydra.launcher.partition=a100",
        "hydra.launcher.nodes=2",
        "hydra.launcher.tasks_per_node=4",
        "hydra.launcher.gpus_per_node=4",
        "hydra.launcher.cpus_per_task=8",
        "hydra.launcher.mem_gb=32",
    )
    rendered: dict[str, object] = {}

    def capture(executor: submitit.AutoExecutor, fn, *iterables):
        slurm = executor._executor
        rendered["script"] = slurm._make_submission_file_text(slurm._submitit_command_str, "job")
        rendered["jobs"] = len(list(zip(*iterables, strict=True)))
        rendered["max_num_timeout"] = slurm.max_num_timeout
        raise _Rendered

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", capture)
    fake_command(tmp_path, monkeypatch, "srun", "exit 1")  # submitit looks for it before rendering anything
    launcher = instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=None, task_function=lambda c: None, config=cfg)
    with pytest.raises(_Rendered):
        launcher.launch([["model.depth=20"], ["model.depth=56"], ["model.depth=110"]], initial_job_idx=0)
    script = rendered["script"]
    for line in (
        "#SBATCH --partition=a100",
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=32GB",
        "#SBATCH --time=720",
        "#SBATCH --signal=USR2@120",
        "#SBATCH --open-mode=append",
        f"source {Path(sys.prefix) / 'bin' / 'activate'}",  # the submitting environment, from any directory
    ):
        assert line in script, line
    assert f"{tmp_path}/.submitit/" in script
    # the job's Python starts with USR2 ignored, until submitit's handler takes it (slurm.submitit_python)
    assert (
        f"""/bin/sh -c 'trap "" USR2; exec "$0" "$@"' {sys.executable} -u -m submitit.core._submit"""
        in script
    )
    assert rendered["jobs"] == 3 and rendered["max_num_timeout"] == 5


def test_a_population_group_as_a_slurm_job_gets_the_slurm_launchers_submission(
    tmp_path: Path, monkeypatch
) -> None:
    """`launcher=population hydra.launcher.backend=submitit_slurm`: the executor settings map to the same
    sbatch lines as `launcher=submitit_slurm`'s (the preset's defaults included)."""
    executor_settings = ("partition=a100", "gpus_per_node=1", "cpus_per_task=8", "mem_gb=32")
    backend = "hydra.launcher.backend=submitit_slurm"
    cfg = hydra_config(
        "launcher=population",
        f"hydra.sweep.dir={tmp_path}",
        backend,
        *(f"hydra.launcher.executor.{kv}" for kv in executor_settings),
    )
    fake_command(tmp_path, monkeypatch, "srun", "exit 1")  # submitit looks for it before rendering anything
    launcher = instantiate(cfg.hydra.launcher).launcher  # resnet_jax.population_launcher's
    executor, _ = make_executor(launcher.backend, launcher.executor)
    script = executor._executor._make_submission_file_text(executor._executor._submitit_command_str, "job")
    for line in (
        "#SBATCH --partition=a100",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=32GB",
        "#SBATCH --time=720",
        "#SBATCH --signal=USR2@120",
        f"source {Path(sys.prefix) / 'bin' / 'activate'}",
        'trap "" USR2; exec',
    ):
        assert line in script, line
    assert f"{tmp_path}/.submitit/" in script and executor._executor.max_num_timeout == 5


def fake_sinfo(tmp_path: Path, monkeypatch, lines: str) -> None:
    """`sinfo` on PATH answering `lines` (one node per line: CPUs and memory in MB)."""
    fake_command(tmp_path, monkeypatch, "sinfo", f"printf '{lines}'")


def test_unset_cpus_and_memory_fit_the_smallest_node_and_ask_no_gpu(tmp_path: Path, monkeypatch) -> None:
    fake_sinfo(tmp_path, monkeypatch, "2 24105\\n64 515000\\n")
    filled = fitting_defaults(
        {
            "partition": "cpu",
            "tasks_per_node": 1,
            "cpus_per_task": None,
            "mem_gb": None,
            "gpus_per_node": None,
            "setup": None,
        }
    )
    assert (filled["cpus_per_task"], filled["mem_gb"], filled["gpus_per_node"]) == (2, 18, None)
    assert filled["setup"] == [f"source {Path(sys.prefix) / 'bin' / 'activate'}"]
    big = fitting_defaults({"tasks_per_node": 2, "cpus_per_task": None, "mem_gb": None, "setup": ["x"]})
    assert (big["cpus_per_task"], big["mem_gb"], big["setup"]) == (
        1,
        18,
        ["x"],
    )  # the smallest node, per task
    asked = fitting_defaults({"cpus_per_task": 4, "mem_gb": 2, "setup": []})
    assert (asked["cpus_per_task"], asked["mem_gb"]) == (4, 2)  # what is asked for stays


def test_without_sinfo_nothing_is_guessed(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no sinfo at all
    filled = fitting_defaults({"cpus_per_task": None, "mem_gb": None, "setup": []})
    assert (filled["cpus_per_task"], filled["mem_gb"]) == (None, None)


DISCOVERY = """
import sys
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
found = {c.__module__ + "." + c.__name__ for c in Plugins.instance().discover(Launcher)}
heavy = {"jax", "flax", "optax", "orbax"} & set(sys.modules)
print(sorted(n for n in found if "resnet_jax" in n), sorted(heavy))
"""


def test_hydras_plugin_discovery_finds_the_launchers_without_importing_jax() -> None:
    """Hydra imports every `hydra_plugins` module when any Hydra app starts: ours must not slow them all."""
    out = subprocess.run([sys.executable, "-c", DISCOVERY], capture_output=True, text=True, check=True)
    names = ("PopulationLauncher", "SlurmLauncher")
    launchers = [f"hydra_plugins.resnet_jax_launchers.{name}" for name in names]
    assert out.stdout.strip() == f"{launchers} []"
