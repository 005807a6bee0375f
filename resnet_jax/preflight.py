"""Check the command line before Hydra creates any directory: a typo costs one line, not a traceback,
and leaves every existing run directory as it was.

Each override value (each value of a sweep, too) is composed once against the schema and validated;
group choices are checked against the files in `conf/`; the output directory must be creatable.
"""

from __future__ import annotations

import os
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

from resnet_jax.config import to_config, validate
from resnet_jax.data import check_available
from resnet_jax.errors import ConfigError
from resnet_jax.models.conv import resolve_conv_impl
from resnet_jax.models.dense import resolve_dense_impl

# Hydra flags that take a value, and flags that ask for information instead of a run.
_FLAGS_WITH_VALUE = {
    "-cn",
    "--config-name",
    "-cp",
    "--config-path",
    "-cd",
    "--config-dir",
    "--experimental-rerun",
}
_INFO_FLAGS = {"--cfg", "-c", "--help", "-h", "--hydra-help", "--info", "-i", "--resolve", "--package", "-p",
               "--version", "--shell-completion", "-sc"}  # fmt: skip


def split_overrides(argv: list[str]) -> list[str] | None:
    """The overrides in `argv`, or None when the user asks Hydra for information."""
    overrides, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in _INFO_FLAGS:
            return None
        elif arg in _FLAGS_WITH_VALUE:
            skip = True
        elif not arg.startswith("-"):
            overrides.append(arg)
    return overrides


def _first_lines(exc: BaseException) -> str:
    parts = [str(exc).strip().splitlines()[0]]
    if exc.__cause__ is not None and str(exc.__cause__).strip():
        parts.append(str(exc.__cause__).strip().splitlines()[0])
    return ": ".join(parts)


def _check_output_dir(target: str) -> None:
    path = Path(target).expanduser().absolute()
    ancestor = path
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(
            f"cannot create the output directory {path}: {ancestor} is not a writable directory; "
            "choose another with hydra.run.dir=... (or hydra.sweep.dir=... with -m)"
        )


def preflight(argv: list[str], conf_dir: Path) -> None:
    """Raise ConfigError (one line) for the first override that cannot run."""
    overrides = split_overrides(argv)
    if overrides is None:
        return
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as exc:
        raise ConfigError(f"cannot parse the command line: {_first_lines(exc)}") from None
    groups = {p.name: sorted(f.stem for f in p.glob("*.yaml")) for p in conf_dir.iterdir() if p.is_dir()}
    values = {}
    for override in parsed:
        key = override.key_or_group
        values[key] = (
            list(override.sweep_string_iterator()) if override.is_sweep_override()
            else [override.get_value_element_as_str()]
        )  # fmt: skip
        for value in values[key] if key in groups else ():
            if value not in groups[key] and value != "null":
                raise ConfigError(f"{key}={value} is not allowed; choose one of: {', '.join(groups[key])}")
    multirun = "-m" in argv or "--multirun" in argv
    out_key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    _check_output_dir(values.get(out_key, ["multirun" if multirun else "outputs"])[0])
    first = {o.key_or_group: o for o in parsed}
    variants = [{}] + [{key: v} for key, vs in values.items() for v in vs[1:]]
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        for variant in variants:
            chosen = [_as_override(first[k], variant.get(k, vs[0])) for k, vs in values.items()]
            try:
                cfg = compose("config", overrides=chosen)
            except HydraException as exc:
                raise ConfigError(_first_lines(exc)) from None
            typed = to_config(cfg)
            validate(typed)
            check_available(typed.data)
            if typed.model.conv_impl == "onednn":  # explicitly asked for, but cannot run here
                resolve_conv_impl("onednn")
            if typed.model.dense_impl == "onednn":
                resolve_dense_impl("onednn")


def _as_override(override, value: str) -> str:
    prefix = (
        "++" if override.is_force_add() else "+" if override.is_add() else "~" if override.is_delete() else ""
    )
    return f"{prefix}{override.key_or_group}={value}"
