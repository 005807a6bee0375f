"""The command line as Hydra reads it (the flags of `--hydra-help`), so that a config that does not compose
is one line naming the key before Hydra starts, instead of Hydra's report of the composition's failure."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

from resnet_jax.composition import composition_error, register
from resnet_jax.config import CONF_DIR

INFO_FLAGS = ("help", "hydra_help", "cfg", "info", "shell_completion", "experimental_rerun", "version")


@dataclass(frozen=True)
class CommandLine:
    overrides: list[str]
    multirun: bool
    config_path: str | None  # -cp: the primary config's folder
    config_name: str | None  # -cn
    config_dir: str | None  # -cd: a folder added to the config search path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    for flag, short in (("--help", "-h"), ("--hydra-help", None), ("--version", None), ("--resolve", None)):
        parser.add_argument(*filter(None, (flag, short)), action="store_true")
    for flag, short in (("--multirun", "-m"), ("--run", "-r"), ("--shell-completion", "-sc")):
        parser.add_argument(flag, short, action="store_true")
    for flag, short in (("--cfg", "-c"), ("--package", "-p"), ("--config-path", "-cp")):
        parser.add_argument(flag, short)
    for flag, short in (("--config-name", "-cn"), ("--config-dir", "-cd")):
        parser.add_argument(flag, short)
    parser.add_argument("--experimental-rerun")
    parser.add_argument("--info", "-i", nargs="?", const="all")
    parser.add_argument("overrides", nargs="*")
    return parser


def parse(argv: list[str]) -> CommandLine | None:
    """What `argv` runs; None when it asks Hydra for information, or Hydra would refuse the flags itself."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit:
        return None
    if any(getattr(args, flag) for flag in INFO_FLAGS):
        return None
    return CommandLine(args.overrides, args.multirun, args.config_path, args.config_name, args.config_dir)


def without_sweeps(overrides: list[str]) -> list[str]:
    """The overrides that are not sweeps (`a=1,2`, `interval(...)`): what the master config composes with."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    return [text for text, o in zip(overrides, parsed, strict=True) if not o.is_sweep_override()]


def check_composes(command: CommandLine) -> None:
    """ConfigError (one line) when the command line's config does not compose: an unknown key or option, a
    value of the wrong type. A sweep's values are composed later, job by job (`resnet_jax.preflight`)."""
    register()
    overrides = without_sweeps(command.overrides) if command.multirun else command.overrides
    if command.config_dir:  # where Hydra puts -cd: a search path entry of its own
        overrides = [*overrides, f"hydra.searchpath=[file://{Path(command.config_dir).absolute()}]"]
    primary = Path(command.config_path).absolute() if command.config_path else CONF_DIR
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(primary), version_base="1.3", job_name="train"):
            compose(command.config_name or "config", overrides)
    except HydraException as exc:
        raise composition_error(exc) from exc
    finally:
        GlobalHydra.instance().clear()
