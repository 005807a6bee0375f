"""A config composed through Hydra, as the command line composes it: the schemas and group options made known
to Hydra (`register`), a composed config made typed and checked for keys its options lack (`to_config`),
Hydra's composition errors as one line, and `compose` for library callers and tests."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from resnet_jax.config import CONF_DIR, GROUP_OPTIONS, Config, excluded_from_run_name, family_recipe
from resnet_jax.errors import ConfigError
from resnet_jax.names import run_name


def register() -> None:
    """Make the schema and every group option known to Hydra (and the `run_name` resolver to OmegaConf)."""
    store = ConfigStore.instance()
    store.store(name="schema", node=Config)
    for group, options in GROUP_OPTIONS.items():
        for option, schema in options.items():
            store.store(group=group, name=option, node=schema)
    OmegaConf.register_new_resolver("run_name", run_name, replace=True)
    OmegaConf.register_new_resolver("neutral_keys", excluded_from_run_name, replace=True)
    OmegaConf.register_new_resolver("recipe", family_recipe, replace=True)


def _foreign_keys(node: DictConfig, schema: type, path: str) -> None:
    """Hydra lets `+model.key=...` append a key the schema lacks, and `to_object` would drop it silently."""
    names = {f.name for f in dataclasses.fields(schema)}
    for key in node:
        if key not in names:
            raise ConfigError(foreign_key_message(f"{path}{key}", schema))
        child = node._get_node(key)
        if isinstance(child, DictConfig) and dataclasses.is_dataclass(OmegaConf.get_type(child)):
            _foreign_keys(child, OmegaConf.get_type(child), f"{path}{key}.")


def foreign_key_message(dotted: str, schema: type) -> str:
    """One line naming a key that the chosen option (or section) does not have, and the keys it has."""
    keys = ", ".join(f.name for f in dataclasses.fields(schema))
    group, _, _ = dotted.rpartition(".")
    option = {cls: name for options in GROUP_OPTIONS.values() for name, cls in options.items()}.get(schema)
    owner = f"{group}={option}" if option else (group or "the config")
    return f"{dotted} is not a key of {owner}; its keys are: {keys}"


def _check_option_names(cfg: DictConfig) -> None:
    """A group's `name` key is its option's name: setting it cannot switch the schema (`model=mlp` does).
    Checked before anything resolves, since the family recipes resolve through `model.name`."""
    for group, options in GROUP_OPTIONS.items():
        schema, name = OmegaConf.get_type(cfg, group), cfg[group].name
        chosen = next(option for option, known in options.items() if known is schema)
        if name == chosen:
            continue
        if name in options:
            raise ConfigError(f"{group}.name={name!r} cannot switch families; use {group}={name}")
        raise ConfigError(f"{group}.name={name!r} is not allowed; choose one of: {', '.join(options)}")


def to_config(cfg: DictConfig) -> Config:
    """The typed config of a composed one (Hydra's config node, if present, is ignored)."""
    container = cfg
    if "hydra" in cfg:
        container = cfg.copy()
        with open_dict(container):
            del container["hydra"]
    _foreign_keys(container, Config, "")
    _check_option_names(container)
    return OmegaConf.to_object(container)


def composition_error(exc: HydraException) -> ConfigError:
    """Hydra's composition error as one line: a group option that does not exist, a key the chosen option
    does not have, or a value of the wrong type (Hydra's first line and its cause's)."""
    text, cause = str(exc), exc.__cause__
    missing = re.search(r"Could not find '([\w/]+)/([^']*)'", text)
    options = re.findall(r"^\t(\S+)$", text, flags=re.MULTILINE)
    if missing and options:
        group, option = missing.groups()
        return ConfigError(f"{group}={option} is not allowed; choose one of: {', '.join(sorted(options))}")
    if isinstance(cause, OmegaConfBaseException) and re.match(r"Key '.*' not in '", str(cause)):
        schema = OmegaConf.get_type(cause.parent_node) if cause.parent_node is not None else None
        if schema is not None and dataclasses.is_dataclass(schema):
            return ConfigError(foreign_key_message(cause.full_key, schema))
    # a config file (e.g. an experiment) setting a key the chosen option lacks: Hydra names both in its text
    foreign = re.search(r"Key '(\w+)' not in '(\w+)'", text)
    schemas = {
        cls.__name__: (group, cls) for group, options in GROUP_OPTIONS.items() for cls in options.values()
    }
    if foreign and foreign.group(2) in schemas:
        group, schema = schemas[foreign.group(2)]
        return ConfigError(
            f"{text.strip().splitlines()[0]} {foreign_key_message(f'{group}.{foreign.group(1)}', schema)}"
        )
    said = [line.strip() for line in text.strip().splitlines() if line.strip()][:2]
    because = str(cause).strip().splitlines()[0] if cause is not None and str(cause).strip() else None
    if because and because not in said:
        said.append(because)
    message = said[0]
    for line in said[1:]:
        message += (" " if message.endswith(":") else ": ") + line
    return ConfigError(message)


def compose(*overrides: str, config_dir: Path = CONF_DIR) -> Config:
    """The typed config that `python -m resnet_jax.train OVERRIDES` runs: through Hydra's own composition."""
    register()
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            cfg = hydra_compose("config", overrides=list(overrides))
    except HydraException as exc:
        raise composition_error(exc) from exc
    return to_config(cfg)
