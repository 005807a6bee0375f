"""Every job a command line runs, checked before Hydra creates any directory (`resnet_jax.callbacks` calls it
at the start of a run or a sweep), through Hydra's public compose API and override parser.

So a typo costs one line, not a traceback, and leaves every existing run directory as it was; a sweep is
checked in every combination of its values (not each value against the others' first), and a sweep whose
jobs would share a run directory is refused. A job checked here is not checked again when it runs
(`checked_ahead`). A search over ranges (`interval(...)`) has no list of jobs before its sweeper proposes
them: one job stands for them here, and each is checked by `runner.run` before it trains.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hydra import compose
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ValueType
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from resnet_jax import checks
from resnet_jax.composition import composition_error, to_config
from resnet_jax.config import Config, as_dict
from resnet_jax.errors import ConfigError
from resnet_jax.names import GLOB_CLASS
from resnet_jax.rundir import check_same_run, recorded_config

CALLBACK = "resnet_jax.callbacks.CheckJobs"  # the pre-flight's callback, as conf/config.yaml names it
NAME_MAX = 255  # bytes in one file name: Linux's file systems (ext4, XFS, Lustre, NFS, tmpfs) all allow this


@dataclass(frozen=True)
class Job:
    """One job of the command line: its overrides, its config and the run directory Hydra will give it."""

    overrides: tuple[str, ...]
    config: Config
    run_dir: Path
    dirname: str  # the run directory's name from the overrides (Hydra's override_dirname)


def sweeper_params(master: DictConfig) -> list[str]:
    """A preset's `hydra.sweeper.params` as overrides: its sweeper reads them before the command line's."""
    return [f"{key}={value}" for key, value in (master.hydra.sweeper.get("params") or {}).items()]


def sweep_arguments(master: DictConfig) -> list[str]:
    """The sweep's overrides as its sweeper reads them: the preset's `hydra.sweeper.params` first."""
    return sweeper_params(master) + list(OmegaConf.to_container(master.hydra.overrides.task, resolve=False))


def lists_sweep(hydra: DictConfig) -> bool:
    """Whether the sweeper runs every combination of the sweep's lists (Hydra's basic sweeper)."""
    return str(OmegaConf.select(hydra, "sweeper._target_", default="")).endswith(".BasicSweeper")


def checked_ahead(hydra: DictConfig) -> bool:
    """Whether the pre-flight checked this job (`hydra`: its Hydra config) before Hydra ran it: the pre-flight
    is among Hydra's callbacks, and the job is a run or one of a sweep of lists. A search's sweeper proposes
    jobs the pre-flight never saw; a Python caller has no pre-flight."""
    callbacks = OmegaConf.select(hydra, "callbacks", default=None) or {}
    configured = any(str(cb.get("_target_")) == CALLBACK for cb in callbacks.values())
    return configured and (hydra.mode == RunMode.RUN or lists_sweep(hydra))


def combinations(arguments: list[str]) -> tuple[list[list[str]], bool]:
    """Every job's overrides when each sweep is a list of values (`a,b`, `choice`, `range`, a `glob` over a
    group's options), in the order Hydra's basic sweeper runs them, and True; for a search over a range
    (`interval`), one job that stands for all (each range at its low end) and False."""
    axes: dict[str, list[str]] = {}  # by key: a later override of a key replaces the earlier, in its place
    complete = True
    parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())  # lists globs
    for override in parser.parse_overrides(arguments):
        key = override.get_key_element()
        if override.value_type == ValueType.INTERVAL_SWEEP:
            axes[key] = [f"{key}={override.value().start}"]
            complete = False
        elif override.is_sweep_override():
            axes[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            axes[key] = [f"{key}={override.get_value_element_as_str()}"]
    return [list(combo) for combo in itertools.product(*axes.values())], complete


def job(master: DictConfig, overrides: list[str], number: int | None) -> Job:
    """The job of `overrides` as its launcher composes it (`number`: its index in a sweep; None: a run)."""
    if number is None:
        job_cfg = master
    else:
        hydra_overrides = list(OmegaConf.to_container(master.hydra.overrides.hydra, resolve=False))
        try:
            job_cfg = compose(
                master.hydra.job.config_name, [*hydra_overrides, *overrides], return_hydra_config=True
            )
        except HydraException as exc:
            raise composition_error(exc) from exc
        with open_dict(job_cfg):
            job_cfg.hydra.job.num = number
    dirname = str(job_cfg.hydra.job.override_dirname)
    return Job(tuple(overrides), to_config(job_cfg), _run_dir(job_cfg, number is not None), dirname)


def planned(master: DictConfig, multirun: bool) -> tuple[list[Job], bool]:
    """The command line's jobs, and whether they are all of them (not so for a search over a range, whose
    jobs its sweeper proposes as it goes: `combinations`)."""
    if not multirun:
        return [job(master, list(OmegaConf.to_container(master.hydra.overrides.task)), None)], True
    combos, complete = combinations(sweep_arguments(master))
    return [job(master, combo, n) for n, combo in enumerate(combos)], complete


def _run_dir(job_cfg: DictConfig, multirun: bool) -> Path:
    """Where Hydra will put the job (its interpolations may ask HydraConfig, as in the job itself)."""
    previous = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(job_cfg)
    try:
        base = Path(str(OmegaConf.select(job_cfg, "hydra.sweep.dir" if multirun else "hydra.run.dir")))
        return base / str(OmegaConf.select(job_cfg, "hydra.sweep.subdir")) if multirun else base
    finally:
        if previous is not None:
            HydraConfig.instance().set_config(previous)


def check_output_dir(path: Path) -> None:
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


def check_job(job: Job) -> None:
    """ConfigError (one line) when `job` cannot run: a bad value, or a run directory that cannot be created
    or holds another configuration's run."""
    checks.check(job.config)
    if "/" in job.dirname or job.dirname in (".", ".."):
        raise ConfigError(
            f"the run directory's name {job.dirname!r} (from the overrides) must be one folder name: a "
            "value with '/' or '..' would place the run elsewhere"
        )
    check_output_dir(job.run_dir)
    recorded = recorded_config(job.run_dir)
    if recorded is not None:
        check_same_run(job.run_dir, recorded, as_dict(job.config))


def check(jobs: list[Job]) -> None:
    """Every job, and no two sharing a run directory."""
    owners: dict[Path, Job] = {}
    for each in jobs:
        check_job(each)
        other = owners.setdefault(each.run_dir.absolute(), each)
        if other is not each:
            raise ConfigError(
                f"the sweep's jobs {' '.join(other.overrides)} and {' '.join(each.overrides)} would share "
                f"the run directory {each.run_dir} (values of keys left out of its name); sweep them in "
                "separate commands or with different name=..."
            )


def varying_overrides(jobs: list[Job]) -> Iterator[tuple[Job, list[str]]]:
    """Each job with the overrides that tell it from the others (all of them when none vary)."""
    values: dict[str, set[str]] = {}
    for each in jobs:
        for override in each.overrides:
            key, _, value = override.partition("=")
            values.setdefault(key, set()).add(value)
    varying = {key for key, seen in values.items() if len(seen) > 1}
    for each in jobs:
        yield each, [o for o in each.overrides if o.partition("=")[0] in varying] or list(each.overrides)
