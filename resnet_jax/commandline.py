"""One way in: before Hydra creates any directory, every job the command line would run is composed and
checked, through Hydra's own argument parser, config loader and sweep expansion.

So a typo costs one line, not a traceback, and leaves every existing run directory as it was; a sweep is
checked in every combination of its values (not each value against the others' first), and a sweep whose
jobs would share a run directory is refused. `HYDRA_FULL_ERROR=1` changes only how an error is shown.
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra._internal.hydra import Hydra
from hydra._internal.utils import create_config_search_path, get_args_parser
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from resnet_jax import checks, population, population_launcher
from resnet_jax.composition import composition_error, register, to_config
from resnet_jax.config import CONF_DIR, Config, as_dict
from resnet_jax.errors import ConfigError
from resnet_jax.names import GLOB_CLASS
from resnet_jax.rundir import check_same_run, recorded_config

NAME_MAX = 255  # bytes in one file name: Linux's file systems (ext4, XFS, Lustre, NFS, tmpfs) all allow this


@dataclass(frozen=True)
class Job:
    """One job of the command line: its overrides, its config and the run directory Hydra will give it."""

    overrides: tuple[str, ...]
    config: Config
    run_dir: Path
    dirname: str  # the run directory's name from the overrides (Hydra's override_dirname)


@dataclass(frozen=True)
class Plan:
    """What a command line runs: its jobs, and whether as a multirun (a sweep)."""

    jobs: list[Job]
    multirun: bool
    launcher: dict  # hydra.launcher's settings


def _parse(argv: list[str]):
    """Hydra's own reading of the command line; None when it asks for information (help, --cfg, ...)."""
    parser = get_args_parser()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            args = parser.parse_args(argv)
        except SystemExit:  # --version, or a malformed flag: Hydra answers it itself
            return None
    asks = args.help or args.hydra_help or args.cfg or args.info or args.shell_completion
    return None if asks or args.experimental_rerun else args


def _hydra(args) -> Hydra:
    """A Hydra with the search path `python -m resnet_jax.train` gets (with -cp and -cd honoured)."""
    primary = Path(args.config_path).absolute() if args.config_path else CONF_DIR
    search_path = create_config_search_path(str(primary))
    if args.config_dir:
        search_path.append(provider="command-line", path=f"file://{Path(args.config_dir).absolute()}")
    GlobalHydra.instance().clear()
    return Hydra.create_main_hydra2(task_name="train", config_search_path=search_path)


def _sweep(hydra: Hydra, master: DictConfig) -> list[list[str]]:
    """Each job's overrides, as Hydra's basic sweeper expands them (the preset's sweep params first)."""
    params = master.hydra.sweeper.get("params") or {}
    arguments = [f"{k}={v}" for k, v in params.items()]
    arguments += OmegaConf.to_container(master.hydra.overrides.task, resolve=False)
    parsed = OverridesParser.create(config_loader=hydra.config_loader).parse_overrides(arguments)
    return BasicSweeper.split_arguments(parsed, None)[0]


def _run_dir(job_cfg: DictConfig, multirun: bool) -> Path:
    """Where Hydra will put the job."""
    previous = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(job_cfg)
    try:
        base = Path(str(OmegaConf.select(job_cfg, "hydra.sweep.dir" if multirun else "hydra.run.dir")))
        return base / str(OmegaConf.select(job_cfg, "hydra.sweep.subdir")) if multirun else base
    finally:
        if previous is not None:
            HydraConfig.instance().set_config(previous)


def planned_jobs(argv: list[str]) -> Plan | None:
    """Every job `python -m resnet_jax.train ARGV` would run, or None for an information request."""
    args = _parse(argv)
    if args is None:
        return None
    register()
    hydra = _hydra(args)
    config_name = args.config_name or "config"
    try:
        mode = RunMode.MULTIRUN if args.multirun else RunMode.RUN
        master = hydra.compose_config(
            config_name, args.overrides, run_mode=mode, with_log_configuration=False
        )
        multirun = args.multirun or master.hydra.get("mode") == RunMode.MULTIRUN
        if multirun and mode != RunMode.MULTIRUN:
            master = hydra.compose_config(
                config_name, args.overrides, run_mode=RunMode.MULTIRUN, with_log_configuration=False
            )
        combos = _sweep(hydra, master) if multirun else [list(args.overrides)]
        jobs = []
        for number, overrides in enumerate(combos):
            job_cfg = hydra.config_loader.load_sweep_config(master, overrides) if multirun else master
            with open_dict(job_cfg):
                job_cfg.hydra.job.num = number
            dirname = str(job_cfg.hydra.job.override_dirname)
            jobs.append(Job(tuple(overrides), to_config(job_cfg), _run_dir(job_cfg, multirun), dirname))
        launcher = OmegaConf.to_container(master.hydra.launcher, resolve=False)
        return Plan(jobs, multirun, launcher)
    except HydraException as exc:
        raise composition_error(exc) from exc
    finally:
        GlobalHydra.instance().clear()


def _check_output_dir(path: Path) -> None:
    """The run directory can be made here: names the file system takes, a writable ancestor."""
    path = path.expanduser().absolute()
    if GLOB_CLASS.search(str(path)):
        raise ConfigError(
            f"the output directory {path} has '[' or ']' in its path, which the checkpoints cannot be read "
            "back from (Orbax reads them as a pattern); choose another hydra.run.dir=... (or "
            "hydra.sweep.dir=... with -m)"
        )
    for part in path.parts:
        if len(part.encode()) > NAME_MAX:
            raise ConfigError(
                f"the output directory {path} has a name of {len(part.encode())} bytes, longer than the "
                f"{NAME_MAX} the file system allows; choose a shorter hydra.run.dir=... (or "
                "hydra.sweep.dir=... with -m)"
            )
    ancestor = path
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(
            f"cannot create the output directory {path}: {ancestor} is not a writable directory; "
            "choose another with hydra.run.dir=... (or hydra.sweep.dir=... with -m)"
        )


def check(argv: list[str]) -> Plan | None:
    """The command line's jobs; ConfigError (one line) for the first that cannot run: a bad value, a run
    directory that cannot be created, holds another configuration's run, or is shared with another job."""
    plan = planned_jobs(argv)
    if plan is None:
        return None
    population_launcher.check(plan.launcher)
    owners: dict[Path, Job] = {}
    for job in plan.jobs:
        checks.check(job.config)
        if "/" in job.dirname or job.dirname in (".", ".."):
            raise ConfigError(
                f"the run directory's name {job.dirname!r} (from the overrides) must be one folder name: a "
                "value with '/' or '..' would place the run elsewhere"
            )
        _check_output_dir(job.run_dir)
        recorded = recorded_config(job.run_dir)
        if recorded is not None:
            check_same_run(job.run_dir, recorded, as_dict(job.config))
        other = owners.setdefault(job.run_dir.absolute(), job)
        if other is not job:
            raise ConfigError(
                f"the sweep's jobs {' '.join(other.overrides)} and {' '.join(job.overrides)} would share "
                f"the run directory {job.run_dir} (values of keys left out of its name); sweep them in "
                "separate commands or with different name=..."
            )
    population_launcher.remember(
        population.MemberJob(job.config, job.run_dir, job.overrides, job.dirname or "default")
        for job in plan.jobs
    )
    return plan
