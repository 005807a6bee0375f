"""train.log: the Python log of every attempt of a run, one line per record (`RunLogHandler`), the lines of a
process that owns several run directories (a population's members) each in its own (`speaking`), and a last
line an interrupted write cut short removed before the next attempt writes (`end_torn_line`)."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from resnet_jax import storage

LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] %(message)s"
# the run directory whose train.log alone takes the lines logged now (None: every owned directory's does),
# for a process that owns several (a population's members)
_SPEAKING: contextvars.ContextVar[Path | None] = contextvars.ContextVar("speaking", default=None)


@contextlib.contextmanager
def speaking(run_dir: Path) -> Iterator[None]:
    """Lines logged inside go to `run_dir`'s train.log only."""
    token = _SPEAKING.set(run_dir)
    try:
        yield
    finally:
        _SPEAKING.reset(token)


class RunLogHandler(logging.FileHandler):
    """train.log: this directory's lines (`speaking`); a write the OS refuses (the file-size limit, a full
    disk) ends the log quietly, since the run's own one line says what happened."""

    def __init__(self, path: Path, run_dir: Path):
        super().__init__(path)
        self.run_dir = run_dir
        self.refused = False
        self.setFormatter(logging.Formatter(LOG_FORMAT))
        self.addFilter(lambda _record: not self.refused and _SPEAKING.get() in (None, run_dir))

    def handleError(self, record: logging.LogRecord) -> None:
        if storage.refusal(sys.exc_info()[1]) is None:
            super().handleError(record)
            return
        self.refused = True

    def flush(self) -> None:
        with self._unless_refused():
            super().flush()

    def close(self) -> None:
        with self._unless_refused():
            super().close()

    @contextlib.contextmanager
    def _unless_refused(self) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            if storage.refusal(exc) is None:
                raise
            self.refused = True


def end_torn_line(path: Path, block: int = 1 << 16) -> int:
    """Cut a last line that an interrupted write left unfinished (and whatever follows it, such as the
    zeros a crash leaves at the end of a file), so the next attempt's lines start on lines of their own;
    returns the bytes cut."""
    try:
        with path.open("rb+") as f:
            size = end = f.seek(0, os.SEEK_END)
            while end > 0:
                start = max(0, end - block)
                f.seek(start)
                chunk = f.read(end - start)
                newline = chunk.rfind(b"\n")
                if newline >= 0:
                    end = start + newline + 1
                    break
                end = start
            if end < size:
                f.truncate(end)
            return size - end
    except FileNotFoundError:
        return 0
