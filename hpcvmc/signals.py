"""Graceful stop on SIGTERM, SIGINT and SIGUSR1 (what Slurm sends before the time limit).

The first signal sets a flag: the driver finishes the current step, every rank agrees to stop
(an allreduce of the flag), a checkpoint is written and the process exits with
:data:`EXIT_INTERRUPTED`. A second signal at least :data:`REPEAT_GRACE` seconds after the first
exits at once with 128 + the signal number; repeats inside that window are ignored, because
launchers deliver the same signal more than once (Slurm's scancel through Hydra's mpirun sends
SIGTERM twice within a millisecond). The handler is installed by the CLI before anything slow
(imports, compilation, checkpoint loading), so an early signal is recorded, not fatal.
"""

from __future__ import annotations

import os
import signal
import sys
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

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            if time.monotonic() - self.received_at < REPEAT_GRACE:
                return
            sys.stderr.write(f"hpcvmc: second signal {signal.Signals(signum).name}: exiting now\n")
            os._exit(128 + signum)
        self.signum = signum
        self.received_at = time.monotonic()
        sys.stderr.write(
            f"hpcvmc: got {signal.Signals(signum).name}: finishing the step, then checkpointing\n"
        )

    def install(self) -> "StopFlag":
        """Install the handler for every stop signal (main thread only)."""
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._handle)
        return self
