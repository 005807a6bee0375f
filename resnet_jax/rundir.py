"""The run directory, a public contract with one owner: this module writes every file in it and reads them.

    config.yaml      the full resolved config: the run's identity (written once, at the first start)
    overrides.yaml   the command-line overrides that made it
    metrics.jsonl    one JSON object per logged step, each step exactly once
    summary.json     status, step, final and best metrics, speed; rewritten at every checkpoint
    train.log        the Python log of every attempt (process 0 only)
    checkpoints/     Orbax checkpoints; each also holds the config, the summary and the metrics rows so far
    damaged/         checkpoints that could not be read back, moved aside (never deleted)
    .lock            who writes the directory now (resnet_jax.lock)

A run is complete when its final checkpoint exists, whatever summary.json says: summary.json and
metrics.jsonl are rebuilt from the newest checkpoint when they are missing, damaged or behind. The trainer,
the entry point's sweep check and the report go through this module.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from resnet_jax import faults, outcome, runlog, storage
from resnet_jax.checkpoint import Checkpoints, DamagedCheckpoint
from resnet_jax.errors import CheckpointError, ConfigError
from resnet_jax.identity import differences
from resnet_jax.lock import RunLock
from resnet_jax.records import CheckpointMeta, Summary, summary_problems

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
OVERRIDES_FILE = "overrides.yaml"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
LOG_FILE = "train.log"
LOCK_FILE = ".lock"
CHECKPOINT_DIR = "checkpoints"
DAMAGED_DIR = "damaged"


def json_safe(value: Any) -> Any:
    """JSON has no NaN or infinity: keep the fact readable as a string."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from `path`, or None when it is missing or not a readable JSON object."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def read_yaml(path: Path) -> dict[str, Any] | None:
    try:
        value = yaml.safe_load(path.read_text())
    except (OSError, ValueError, yaml.YAMLError):  # ValueError: bytes that are not text
        return None
    return value if isinstance(value, dict) else None


def read_rows(path: Path) -> tuple[list[dict[str, Any]], bool]:
    """metrics.jsonl's rows, and whether anything in it was unreadable (a row cut short, garbage)."""
    rows, damaged = [], False
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return [], path.exists()
    except UnicodeDecodeError:
        return [], True
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            damaged = True
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append(row)
        else:
            damaged = True
    return rows, damaged


@dataclass
class Restored:
    """The newest intact checkpoint: its step, its arrays by path, and what it recorded besides."""

    step: int
    arrays: dict[str, Any]
    meta: CheckpointMeta


class RunDir:
    """One run directory. Reading needs nothing; writing needs `owned()` (the lock); only process 0 writes."""

    def __init__(self, path: Path, *, primary: bool = True, keep: int = 2):
        self.path = Path(path)
        self.primary = primary
        self.keep = keep
        self.rows: list[dict[str, Any]] = []  # every metrics row of the run so far, in order
        self._checkpoints: Checkpoints | None = None
        self._lock = RunLock(self.path / LOCK_FILE)
        self._log_handler: logging.Handler | None = None

    # -- ownership -----------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def owned(self) -> Iterator[RunDir]:
        """Hold the directory for writing: the lock, and this attempt's log lines in train.log."""
        if not self.primary:
            yield self
            return
        with self._writing("its lock", "write_lock", started=False):
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock.acquire()
        try:
            with self._writing(LOG_FILE, "write_log", started=False):
                cut = runlog.end_torn_line(self.path / LOG_FILE)
                self._log_handler = runlog.RunLogHandler(self.path / LOG_FILE, self.path)
            logging.getLogger().addHandler(self._log_handler)
            if cut:
                log.warning("%s ended in a line cut short (%d bytes); removed", self.path / LOG_FILE, cut)
            yield self
        finally:
            try:
                if self._log_handler is not None:
                    logging.getLogger().removeHandler(self._log_handler)
                    self._log_handler.close()
                    self._log_handler = None
                self.close_checkpoints()
            finally:
                self._lock.release()  # whatever failed before: the directory is given back

    def close_checkpoints(self) -> None:
        if self._checkpoints is not None:
            self._checkpoints.close()
            self._checkpoints = None

    @contextlib.contextmanager
    def _writing(
        self, what: str, point: str, step: int | None = None, *, started: bool = True
    ) -> Iterator[None]:
        """Around a write into the directory (`point`: its fault point's name): a write the OS refuses (a full
        disk, a quota, a file-size limit, a read-only file system, a permission) is one line that says what
        was being written and what to do (the files already there stay as they were: every write is atomic,
        or an append that a resume rebuilds)."""
        try:
            faults.point(point, step)
            yield
        except Exception as exc:
            code = storage.refusal(exc)
            if code is None:
                raise
            raise storage.refused(self.path, what, code, started=started) from exc

    # -- identity ------------------------------------------------------------------------------------------

    def trained_config(self) -> tuple[int, dict[str, Any]] | None:
        """(step, config) of the newest checkpoint whose record reads: what the run was trained with, which a
        config.yaml edited by hand cannot change. None without a readable checkpoint."""
        for step in self.checkpoint_steps():
            try:
                config = self.checkpoints.meta(step).get("config")
            except DamagedCheckpoint:
                continue
            if config:
                return step, config
        return None

    def recorded_config(self) -> dict[str, Any] | None:
        """The config of the directory's run: its checkpoints', or config.yaml's before the first checkpoint
        (until then nothing trained could be taken for another configuration's result)."""
        trained = self.trained_config()
        return trained[1] if trained is not None else read_yaml(self.path / CONFIG_FILE)

    def claim(self, config: dict[str, Any], overrides: list[str]) -> None:
        """Make the directory this config's: record it on the first start, refuse any other config after.
        Once checkpoints exist they decide, and a config.yaml that no longer says what they were trained with
        (missing, damaged, edited by hand) is rewritten from them."""
        trained = self.trained_config()
        recorded = read_yaml(self.path / CONFIG_FILE)
        if trained is None and recorded is None:
            if self.primary:
                with self._writing(CONFIG_FILE, "write_config", started=False):
                    storage.write_atomic(self.path / CONFIG_FILE, yaml.safe_dump(config, sort_keys=False))
                    storage.write_atomic(self.path / OVERRIDES_FILE, yaml.safe_dump(list(overrides)))
            return
        if trained is None:
            check_same_run(self.path, recorded, config)
            return
        step, trained_with = trained
        check_same_run(self.path, trained_with, config)
        if recorded is None or differences(recorded, trained_with):
            said = (
                "is missing or damaged" if recorded is None else "does not say what the run was trained with"
            )
            log.warning("%s %s; rebuilt from the checkpoint at step %d", self.path / CONFIG_FILE, said, step)
            if self.primary:
                with self._writing(CONFIG_FILE, "write_config", started=False):
                    storage.write_atomic(
                        self.path / CONFIG_FILE, yaml.safe_dump(trained_with, sort_keys=False)
                    )

    # -- checkpoints ---------------------------------------------------------------------------------------

    @property
    def checkpoints(self) -> Checkpoints:
        if self._checkpoints is None:
            self._checkpoints = Checkpoints(self.path / CHECKPOINT_DIR, self.keep, create=self.primary)
        return self._checkpoints

    def checkpoint_steps(self) -> list[int]:
        """Committed checkpoint steps, newest first (none without a checkpoints/ folder)."""
        if not (self.path / CHECKPOINT_DIR).is_dir():
            return []
        return self.checkpoints.steps()

    def restore_newest(self) -> Restored | None:
        """The newest checkpoint that reads back whole; damaged ones are said in one line and moved aside.
        None without checkpoints; CheckpointError when there are some and none is intact."""
        steps = self.checkpoint_steps()
        for step in steps:
            try:
                arrays, meta = self.checkpoints.restore(step)
            except DamagedCheckpoint as exc:
                log.warning(
                    "the checkpoint at step %d in %s cannot be read (%s); moved to %s/, trying the "
                    "one before",
                    step,
                    self.path,
                    exc,
                    DAMAGED_DIR,
                )
                self._move_aside(step)
                continue
            return Restored(step, arrays, meta)
        if steps:
            raise CheckpointError(
                f"no intact checkpoint in {self.path / CHECKPOINT_DIR} (the damaged ones are in "
                f"{self.path / DAMAGED_DIR}); start over in another directory (hydra.run.dir=... or another "
                f"name=...), or delete {self.path}"
            )
        return None

    def _move_aside(self, step: int) -> None:
        if not self.primary:
            return
        target = self.path / DAMAGED_DIR / f"checkpoint-{step}-{time.strftime('%Y%m%d-%H%M%S')}"
        target.parent.mkdir(exist_ok=True)
        shutil.move(str(self.path / CHECKPOINT_DIR / str(step)), target)
        self.checkpoints.manager.reload()

    def save_checkpoint(self, step: int, state: Any, meta: CheckpointMeta) -> None:
        """A checkpoint with what rebuilds this directory's record: the metrics rows so far and `meta`."""
        if self.primary:
            with self._writing(f"the checkpoint at step {step}", "write_checkpoint", step):
                self.checkpoints.save(step, state, {**meta, "metrics": self.rows})

    # -- metrics -------------------------------------------------------------------------------------------

    def start_metrics(self, rows: list[dict[str, Any]]) -> None:
        """Begin this attempt's metrics with `rows` (a checkpoint's, or none for a fresh start): rows an
        earlier attempt logged after them go, as they will be logged again, identically."""
        self.rows = list(rows)
        _, damaged = read_rows(self.path / METRICS_FILE)
        if damaged:
            log.warning("%s was damaged; rebuilt from the checkpoint", self.path / METRICS_FILE)
        # compared as bytes: a last row without its newline parses, but the next row appended would join it
        wanted = "".join(json.dumps(r) + "\n" for r in self.rows)
        if _bytes(self.path / METRICS_FILE) != wanted.encode() and self.primary:
            with self._writing(METRICS_FILE, "write_metrics"):
                storage.write_atomic(self.path / METRICS_FILE, wanted)

    def append_metrics(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if self.primary:
            with (
                self._writing(METRICS_FILE, "write_metrics", row.get("step")),
                (self.path / METRICS_FILE).open("a") as f,
            ):
                f.write(json.dumps(row) + "\n")

    # -- summary -------------------------------------------------------------------------------------------

    def read_summary(self) -> Summary | None:
        """summary.json as a `Summary`; None if missing, unreadable or unusable (`summary_problems`)."""
        summary = read_json(self.path / SUMMARY_FILE)
        return summary if summary is not None and not summary_problems(summary) else None

    def restart_summary(self, summary: Summary) -> None:
        """An attempt's first summary.json (running, at its start step); a damaged one is said so."""
        if self.read_summary() is None and (self.path / SUMMARY_FILE).exists():
            log.warning("%s was damaged; rebuilt from the checkpoint", self.path / SUMMARY_FILE)
        self.write_summary(summary)

    def write_summary(self, summary: Summary) -> None:
        if self.primary:
            with self._writing(SUMMARY_FILE, "write_summary", summary.get("step")):
                storage.write_atomic(self.path / SUMMARY_FILE, summary_text(summary))

    def complete_from(self, restored: Restored) -> Summary:
        """A run whose final checkpoint exists is complete: its summary and metrics are the checkpoint's.
        Files that already say so are left untouched; missing, damaged or stale ones are rewritten."""
        summary = without_location(restored.meta["summary"])
        if _bytes(self.path / SUMMARY_FILE) != summary_text(summary).encode():
            if self.read_summary() is None and (self.path / SUMMARY_FILE).exists():
                log.warning("%s was damaged; rebuilt from the final checkpoint", self.path / SUMMARY_FILE)
            self.write_summary(summary)
        self.start_metrics(restored.meta["metrics"])
        return summary

    def record_end(self, summary: Summary) -> None:
        """summary.json of a run that ended early, if the disk takes it: on a full one it stays as the last
        checkpoint left it (`running` at that step, where the run resumes), and what ended the run, not this
        write, is what the run reports."""
        try:
            self.write_summary(summary)
        except storage.StorageRefused:
            log.debug(
                "%s not rewritten (the write was refused): it shows the run at its newest checkpoint",
                self.path / SUMMARY_FILE,
            )

    def record_failure(self, summary: Summary) -> None:
        """A failure before training began; a completed run's summary is never replaced."""
        if (self.read_summary() or {}).get("status") != "completed":
            self.record_end(summary)

    # -- outcome -------------------------------------------------------------------------------------------

    def outcome(self, config: dict[str, Any]) -> tuple[int, str, Summary | None]:
        """(exit code, one line, summary) of the run of `config` this directory holds, read from its files
        alone, each once; the summary is None where there is none of that run."""
        recorded = self.recorded_config()
        differing = differences(recorded, config) if recorded is not None else []
        if differing:
            return 2, f"holds a run of another configuration ({'; '.join(differing)})", None
        summary = self.read_summary()
        if summary is None:
            steps = self.checkpoint_steps() if self.path.is_dir() else []
            at = f"; its newest checkpoint is at step {steps[0]}" if steps else ""
            return 1, f"never finished: no readable {SUMMARY_FILE}{at}", None
        status = summary.get("status", "unknown")
        code = outcome.exit_code(summary)
        if status in ("running", "interrupted"):
            return code, f"never finished: {status} at step {summary.get('step')}", summary
        error = f": {summary['error']}" if summary.get("error") else ""
        return code, f"{status} at step {summary.get('step')}{error}", summary


def summary_text(summary: Summary) -> str:
    """summary.json's text for `summary`: the one form it is written in."""
    return json.dumps(summary, indent=2) + "\n"


def _bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def without_location(summary: Summary) -> Summary:
    """A summary without the path it was written at (older records held it): a directory moved elsewhere
    lives where it is now."""
    return {key: value for key, value in summary.items() if key != "run_dir"}


def recorded_config(path: Path) -> dict[str, Any] | None:
    """`RunDir.recorded_config` of the directory at `path`, read without taking it."""
    directory = RunDir(path, primary=False)
    try:
        return directory.recorded_config()
    finally:
        directory.close_checkpoints()


def check_same_run(path: Path, recorded: dict[str, Any], config: dict[str, Any]) -> None:
    """One config per run directory: a different result-affecting key is refused, naming the keys."""
    changed = differences(recorded, config)
    if changed:
        raise ConfigError(
            f"{path} holds a run of another configuration ({'; '.join(changed)}); run it elsewhere with "
            "hydra.run.dir=... (hydra.sweep.dir=... with -m) or another name=..., or rerun with the recorded "
            "values"
        )
