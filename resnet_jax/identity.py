"""A run's identity: the keys and values that make it this run (all but `config.RESULT_NEUTRAL`), their
digest, and the differences between a recorded config and a wanted one (`resnet_jax.rundir` refuses a
directory that holds another run)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from resnet_jax.config import GROUP_OPTIONS, RESULT_NEUTRAL, Config


def flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as dotted keys (`optim.lr`: 0.1, ...); an empty section stays a key of its own."""
    found: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            found.update(flat(value, f"{prefix}{key}."))
        else:
            found[f"{prefix}{key}"] = value
    return found


def identity(config: dict[str, Any]) -> dict[str, Any]:
    """The keys and values that make a run this run, flattened (`optim.lr`: 0.1, ...)."""
    return {
        key: value
        for key, value in flat(config).items()
        if not any(key == n or key.startswith(f"{n}.") for n in RESULT_NEUTRAL)
    }


def identity_digest(config: dict[str, Any]) -> str:
    """A SHA-256 of the identity: what a run's summary and checkpoints carry, so that a reader can tell a
    config.yaml edited by hand from the configuration the run was trained with."""
    text = json.dumps(identity(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


_NO_DEFAULT = object()


def schema_default(config: dict[str, Any], dotted: str) -> Any:
    """The schema's default for a dotted key of `config` (its group's chosen option's), or `_NO_DEFAULT`."""
    section, _, key = dotted.partition(".")
    field_types = {f.name: f.default_factory for f in dataclasses.fields(Config)}
    if section in GROUP_OPTIONS:
        schema = GROUP_OPTIONS[section].get(str((config.get(section) or {}).get("name")))
    else:
        factory = field_types.get(section)
        schema = factory if dataclasses.is_dataclass(factory) else None
    fields = {f.name: f for f in dataclasses.fields(schema)} if schema else {}
    if key not in fields or fields[key].default is dataclasses.MISSING:
        return _NO_DEFAULT
    return fields[key].default


def differences(recorded: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """`key: recorded -> wanted` for each identity key whose value differs (or exists on one side only). A key
    that a run recorded by an older version lacks, wanted at its default, is no difference: a key is added
    with the behaviour that came before it as its default (`data.validation=0`)."""
    a, b = identity(recorded), identity(wanted)
    missing = object()
    return [
        f"{key}: {a.get(key, '(absent)')} -> {b.get(key, '(absent)')}"
        for key in sorted(set(a) | set(b))
        if a.get(key, missing) != b.get(key, missing)
        and not (key not in a and b.get(key) == schema_default(wanted, key))
    ]
