"""Writes that the operating system refuses, as one line that says what happened and what to do.

A full disk, a quota, a file-size limit (`ulimit -f`: Python ignores SIGXFSZ, so such a write fails with
EFBIG), a read-only file system or a missing permission stops a run where it is; every write into a run
directory is atomic or an append that a resume rebuilds, so the same command resumes once the cause is
gone. Orbax and TensorStore report such a refusal inside their own exceptions, with the OS's words or code.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import sys
from pathlib import Path

from resnet_jax.errors import UserError

# each refusal: what it is (with the directory), and what to do about it
REFUSALS: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("no space left on the device of {path}", "free space"),
    errno.EDQUOT: ("the disk quota is exceeded on the device of {path}", "free space within your quota"),
    errno.EFBIG: (
        "a file in {path} reached the file-size limit (ulimit -f)",
        "raise the limit (ulimit -f unlimited)",
    ),
    errno.EROFS: (
        "{path} is on a read-only file system",
        "make it writable, or copy the directory somewhere writable and run there with hydra.run.dir=...",
    ),
    errno.EACCES: ("permission denied in {path}", "give this user write permission on it"),
    errno.EPERM: ("the operation is not permitted in {path}", "give this user write permission on it"),
}
_CODE_IN_TEXT = re.compile(r"os_error_code='?(\d+)")


class StorageRefused(UserError):
    """The operating system refused a write into a run directory: the run stops where it is, and resumes
    once the cause is removed (exit 1, as a failed run: nothing in the command line was wrong)."""

    exit_code = 1


def refusal(exc: BaseException | None) -> int | None:
    """The refusal's error code if `exc`, or what it arose from, is a write the OS refused, else None."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in REFUSALS:
            return exc.errno
        text = str(exc)
        found = _CODE_IN_TEXT.search(text)
        if found and int(found.group(1)) in REFUSALS:
            return int(found.group(1))
        for code in REFUSALS:
            if os.strerror(code) in text:
                return code
        exc = exc.__cause__ or exc.__context__
    return None


def refused(path: Path, what: str, code: int, *, started: bool = True) -> StorageRefused:
    """The one line for a refused write of `what` into the run directory `path`."""
    problem, remedy = REFUSALS[code]
    where = "the run stopped there" if started else "the run did not start"
    then = "resume from its newest checkpoint" if started else "start it"
    return StorageRefused(
        f"{problem.format(path=path)} while writing {what}; {where}: {remedy}, then run the same command to "
        f"{then}"
    )


class QuietAftermath(logging.Filter):
    """A refused write inside Orbax is reported again by each of its worker threads (a logged traceback per
    thread), and TensorStore's callbacks then print `Event loop is closed` into the loop Orbax shut: echoes
    of the one refusal whose line the run prints. This drops those echoes, and nothing else."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return refusal(exc) is None and not (
            isinstance(record.args, tuple)
            and any(refusal(arg) is not None for arg in record.args if isinstance(arg, BaseException))
        )

    @staticmethod
    def unraisablehook(previous):
        """`sys.unraisablehook` less the `Event loop is closed` raised by callbacks into a closed loop."""

        def hook(unraisable) -> None:
            value = unraisable.exc_value
            if isinstance(value, RuntimeError) and str(value) == "Event loop is closed":
                return
            previous(unraisable)

        hook.quiet_aftermath = True
        return hook

    @classmethod
    def install(cls) -> None:
        """On Orbax's logger (absl's) and on the errors its threads' callbacks cannot raise; idempotent."""
        absl = logging.getLogger("absl")
        if not any(isinstance(f, cls) for f in absl.filters):
            absl.addFilter(cls())
        if not getattr(sys.unraisablehook, "quiet_aftermath", False):
            sys.unraisablehook = cls.unraisablehook(sys.unraisablehook)


def write_atomic(path: Path, text: str) -> None:
    """Readers never see a half-written file: write beside it, then rename over it."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text)
    except OSError:
        tmp.unlink(missing_ok=True)  # a partial copy is no use to anyone
        raise
    os.replace(tmp, path)
