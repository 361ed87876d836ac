"""The exclusive lock of a run folder: one ``hpcvmc run`` per ``run.output`` at a time.

Rank 0 holds ``flock(LOCK_EX)`` on ``<run.output>/.hpcvmc.lock`` for the life of the run. The
kernel drops the lock when the process ends in any way (kill -9 included), so a dead run never
leaves a stale lock; the file itself stays. While held, the file names the holder (host, pid,
Slurm job id); it is emptied on a clean release. A second run on the same folder (a duplicated
sbatch, a requeued job overlapping its predecessor) is refused with :class:`InputError` naming
the folder and the holder, before it reads or writes anything there; under MPI every rank learns
of the refusal through a broadcast and exits the same way.

On a network file system the lock needs the file system's lock support (NFSv4: yes; Lustre: the
``flock`` mount option); where it has none, a warning is printed and the run goes on unlocked.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from hpcvmc.config import InputError
from hpcvmc.outputs import OutputError, make_folder, writing
from hpcvmc.parallel import Comm

LOCK_FILE = ".hpcvmc.lock"


def holder() -> str:
    """This process as the lock file records it: host, pid and Slurm job id."""
    job = os.environ.get("SLURM_JOB_ID", "")
    return f"host {socket.gethostname()}, pid {os.getpid()}" + (f", Slurm job {job}" if job else "")


class RunLock:
    """A held lock (rank 0). ``release`` drops it; a folder this lock created and nothing else
    filled is removed again, so a run refused at start-up leaves no half-made folder."""

    def __init__(self, folder: Path, fd: int | None, created: bool) -> None:
        self.folder, self.fd, self.created = folder, fd, created

    def release(self) -> None:
        """Empty the lock file, drop the lock, remove a folder that holds only the lock file."""
        if self.fd is not None:
            try:
                os.ftruncate(self.fd, 0)
            except OSError:
                pass
            os.close(self.fd)
            self.fd = None
        lock = self.folder / LOCK_FILE
        try:
            if self.created and [p.name for p in self.folder.iterdir()] == [LOCK_FILE]:
                lock.unlink()
                self.folder.rmdir()
        except OSError:
            pass


def acquire(folder: str | Path, warn: Callable[[str], None]) -> RunLock:
    """Create ``folder`` if needed and take its lock without waiting.

    Raises:
        InputError: another process holds the lock (the message names the folder and holder).
        OutputError: the folder or the lock file cannot be created or written.
    """
    folder = Path(folder)
    created = not folder.exists()
    make_folder(folder)
    path = folder / LOCK_FILE
    with writing(path):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            text = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "holder unknown"
            os.close(fd)
            raise InputError(f"{folder}: run.output is in use by another hpcvmc run ({text}); "
                             "wait for it to end or choose another run.output") from None
        warn(f"hpcvmc: warning: {path}: the file system does not support locks "
             f"({exc.strerror}); running without the run-folder lock")
        os.close(fd)
        return RunLock(folder, None, created)
    lock = RunLock(folder, fd, created)
    try:
        with writing(path):
            os.ftruncate(fd, 0)
            os.pwrite(fd, (holder() + "\n").encode(), 0)
    except OutputError:
        lock.release()
        raise
    return lock


@contextmanager
def locked(folder: str | Path, comm: Comm, warn: Callable[[str], None]) -> Iterator[None]:
    """Hold the run-folder lock (on rank 0) for the duration of the block (collective).

    Raises:
        InputError, OutputError: on every rank when rank 0 cannot take the lock.
    """
    lock, failure = None, None
    if comm.is_root:
        try:
            lock = acquire(folder, warn)
        except (InputError, OutputError) as exc:
            failure = (type(exc).__name__, str(exc))
    failure = comm.bcast(failure)
    if failure is not None:
        raise (InputError if failure[0] == "InputError" else OutputError)(failure[1])
    try:
        yield
    finally:
        if lock is not None:
            lock.release()
