"""Graceful stop on SIGTERM, SIGINT and SIGUSR1 (what Slurm sends before the time limit).

The first signal sets a flag: the driver finishes the current step, every rank agrees to stop
(an allreduce of the flag), a checkpoint is written and the process exits with
:data:`EXIT_INTERRUPTED`. A second signal at least :data:`REPEAT_GRACE` seconds after the first
exits at once with 128 + the signal number; repeats inside that window are ignored, because
launchers deliver the same signal more than once (Slurm's scancel through Hydra's mpirun sends
SIGTERM twice within a millisecond). The handler is installed by the CLI before anything slow
(imports, compilation, checkpoint loading), so an early signal is recorded, not fatal.

Python runs a signal handler only when the main thread executes bytecode, which it does not
while it waits for a jitted step (seconds to minutes inside XLA). So the signals are acted on by
a watcher thread instead: the C-level handler writes every signal number to a pipe
(:func:`signal.set_wakeup_fd`) and the thread, which blocks on that pipe, records the first
signal and exits the process on a real second one while the step is still running. Checkpoints
are written atomically, so such an exit leaves the last one valid.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
EXIT_INTERRUPTED = 75
"""Exit code after a signal-triggered checkpoint (EX_TEMPFAIL: run again to resume)."""
REPEAT_GRACE = 2.0
"""Seconds after the first signal during which further signals are taken as duplicates."""


class StopFlag:
    """Records the first stop signal; exits hard on the second."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.received_at = 0.0

    def __bool__(self) -> bool:
        return self.signum is not None

    def deliver(self, signum: int) -> None:
        """Act on one delivery of ``signum``: record the first, exit on a later second."""
        if self.signum is not None:
            if time.monotonic() - self.received_at < REPEAT_GRACE:
                return
            sys.stderr.write(f"hpcvmc: second signal {signal.Signals(signum).name}: exiting now\n")
            sys.stderr.flush()
            os._exit(128 + signum)
        self.received_at = time.monotonic()
        self.signum = signum
        sys.stderr.write(
            f"hpcvmc: got {signal.Signals(signum).name}: finishing the step, then checkpointing\n"
        )
        sys.stderr.flush()

    def install(self) -> "StopFlag":
        """Route every stop signal to this flag (main thread only; replaces an earlier flag)."""
        _Watcher.start(self)
        return self


def _ignore(signum: int, frame: FrameType | None) -> None:
    """Python-level handler: the watcher thread does the work (it must exist so that the
    default action, termination, does not happen and the wakeup byte is written)."""


class _Watcher:
    """The process-wide thread that reads signal numbers from the wakeup pipe."""

    flag: StopFlag | None = None
    _thread: threading.Thread | None = None

    @classmethod
    def start(cls, flag: StopFlag) -> None:
        cls.flag = flag
        if cls._thread is None:
            read_fd, write_fd = os.pipe()
            os.set_blocking(write_fd, False)
            signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
            cls._thread = threading.Thread(target=cls._loop, args=(read_fd,), daemon=True,
                                           name="hpcvmc-signals")
            cls._thread.start()
        for signum in STOP_SIGNALS:
            signal.signal(signum, _ignore)

    @classmethod
    def _loop(cls, read_fd: int) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # delivered to other threads
        while True:
            for signum in os.read(read_fd, 64):
                if signum in STOP_SIGNALS and cls.flag is not None:
                    cls.flag.deliver(signum)
