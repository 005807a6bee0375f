"""The records a run writes, as types: `summary.json` (`Summary`), a metrics row of `metrics.jsonl`
(`MetricsRow`) and the metadata each checkpoint carries (`CheckpointMeta`, with the running `RecordMeta`).

`resnet_jax.summaries` builds a summary, `resnet_jax.lifecycle` a checkpoint's metadata and the metrics rows;
`resnet_jax.rundir` alone writes them and reads them back, and `resnet_jax.runs` reads summaries through
`summary_problems`. Each record says its schema's version (`SCHEMA`); files without one were written before
versions existed (version 0), hold the same fields, and read the same.
"""

from __future__ import annotations

from typing import Any, TypedDict

SCHEMA = 1  # summary.json's and each checkpoint's metadata's; what changes it also says how older ones read

NUMBER = (int, float)


class Summary(TypedDict, total=False):
    """summary.json: where the run stands and what it reached (`status`: `outcome.EXIT_CODES`' words)."""

    schema: int
    status: str
    step: int
    params: int
    devices: int
    processes: int
    identity: str  # SHA-256 of the config's identity (`resnet_jax.identity`): what config.yaml must say
    wandb_id: str  # the run's W&B id, kept by its checkpoints: a moved directory continues the same W&B run
    wall_time_s: float
    steps_per_s: float | None
    final: dict[str, float | str]  # the newest value of each metric (a non-finite one kept as text)
    best: dict[str, float | str]  # the least of each minimised metric
    exit_code: int  # a run that ended early: its exit code (`outcome.of_exception`) ...
    error: str  # ... and what ended it


# the types each field may have, for a reader that tells a damaged file from a run's (a field may be absent)
SUMMARY_TYPES: dict[str, tuple[type, ...]] = {
    "schema": (int,),
    "status": (str,),
    "step": (int,),
    "params": (int,),
    "final": (dict,),
    "best": (dict,),
    "steps_per_s": (*NUMBER, type(None)),
    "wall_time_s": NUMBER,
    "identity": (str,),
}

# a line of metrics.jsonl: `step` and the metrics logged there: train/loss, train/error, lr; at the evaluation
# cadence <split>/loss and <split>/error (test, val); at the probe cadence probe/<kind>: one value per layer
MetricsRow = dict[str, int | float | str | list[float]]


class RecordMeta(TypedDict):
    """What a run has measured so far (`loop.Record`), as a checkpoint carries it."""

    best: dict[str, float]
    final: dict[str, float]
    timed_steps: int
    timed_s: float
    wall_time_s: float


class CheckpointMeta(TypedDict, total=False):
    """What a checkpoint holds besides the state: enough to rebuild the run directory's other files."""

    schema: int
    config: dict[str, Any]  # the config the run trains with (its identity: `RunDir.trained_config`)
    record: RecordMeta
    summary: Summary  # the summary this checkpoint completes
    metrics: list[MetricsRow]  # every metrics row up to its step


def wrong_types(record: dict[str, Any], types: dict[str, tuple[type, ...]]) -> list[str]:
    """`key is <type>` for each field of `record` (dotted: nested) whose value is not of its allowed types."""
    wrong = []
    for dotted, allowed in types.items():
        node: Any = record
        for part in dotted.split("."):
            node = node.get(part, _ABSENT) if isinstance(node, dict) else _ABSENT
        ok = node is _ABSENT or (
            isinstance(node, allowed) and not (isinstance(node, bool) and bool not in allowed)
        )
        if not ok:
            wrong.append(f"{dotted} is {type(node).__name__}")
    return wrong


_ABSENT = object()


def summary_problems(summary: dict[str, Any]) -> list[str]:
    """What makes a parsed summary.json unusable: fields of the wrong type, metrics that are not numbers (or
    the text a non-finite number is kept as), or a schema newer than this code reads."""
    metrics = [
        f"{section}.{key} is {type(value).__name__}"
        for section in ("final", "best")
        for key, value in (summary.get(section) if isinstance(summary.get(section), dict) else {}).items()
        if not isinstance(value, (*NUMBER, str)) or isinstance(value, bool)
    ]
    wrong = wrong_types(summary, SUMMARY_TYPES)
    if not wrong and summary.get("schema", 0) > SCHEMA:
        return [f"schema {summary['schema']} is newer than this code reads ({SCHEMA})"]
    return wrong or metrics
