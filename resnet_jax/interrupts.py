"""Ctrl-C and SIGTERM at any moment of the command line's life: one line and a non-zero exit, no traceback.

Until the runs begin (imports, the command line's check) nothing has been written: a signal ends the process
at once. Once they have begun, the first signal ends the run as an interrupt (`KeyboardInterrupt`: its run
directory records `interrupted` at the step it reached and gives its lock back). A second signal while that
unwinds (Ctrl-C pressed twice) ends the process at once, skipping the cleanup and the interpreter's exit
handlers, whose tracebacks were all a user saw: the directory is then as a kill leaves it, which the same
command resumes (`resnet_jax.rundir`). Signals are the process's, so their state is too: one `Interrupts`.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from types import FrameType
from typing import NoReturn

# the shell's convention: 128 + the signal's number
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}
RESUME = "run the same command to resume"


class Interrupts:
    """The process's SIGINT and SIGTERM handler: at once before `begin`, an interrupt after it."""

    def __init__(self) -> None:
        self.received: int | None = None  # the first signal, once one came
        self.begun = False

    def install(self) -> None:
        """Take SIGINT and SIGTERM, unless someone else already handles them (submitit, a host program)."""
        for signum in EXIT_CODES:
            if signal.getsignal(signum) in (signal.SIG_DFL, signal.default_int_handler):
                signal.signal(signum, self._handle)

    def begin(self) -> None:
        """The runs begin: from now on the first signal interrupts them, and they record where they are."""
        self.begun = True

    def exit_code(self) -> int:
        return EXIT_CODES.get(self.received, 1)

    def line(self) -> str:
        """What the user reads after an interrupt that the runs recorded."""
        name = signal.Signals(self.received).name if self.received else "an interrupt"
        stopped = "a run under way stopped where it was and says so in its directory"
        return f"interrupted by {name}: {stopped}; {RESUME}"

    def exit_after(self, line: str) -> NoReturn:
        """The runs have recorded the interrupt: say so and end the process, without the interpreter's exit
        handlers (JAX's, Orbax's, W&B's), which a second signal would interrupt into tracebacks or a crash."""
        os.write(2, f"error: {line}\n".encode())
        logging.shutdown()
        sys.stdout.flush()
        os._exit(self.exit_code())

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        first = self.received is None
        if first:
            self.received = signum
        if first and self.begun:
            raise KeyboardInterrupt
        name = signal.Signals(signum).name
        said = (
            f"interrupted by {name} before any run began; nothing was written"
            if first
            else f"interrupted again by {name}: stopped at once; {RESUME}"
        )
        os.write(2, f"\n{said}\n".encode())
        os._exit(EXIT_CODES[signum] if first else self.exit_code())


INTERRUPTS = Interrupts()
