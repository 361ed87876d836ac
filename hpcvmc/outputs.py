"""Writing files: one-line errors for file-system failures, atomic text files, no silent
replacement of a named output.

An ``OSError`` while writing (disk full, read-only file system, permissions, quota) becomes
:class:`OutputError`, whose message names the file and the system's reason; the CLI prints it
as one line and exits with :data:`EXIT_IO`. Writers remove their temporary files before raising,
and files are replaced by renaming a complete temporary copy over them, so a failed write never
destroys the previous valid version.
"""

from __future__ import annotations

import os
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Iterator

from hpcvmc.config import InputError

EXIT_IO = 74
"""Exit code of a failed write (EX_IOERR of sysexits.h)."""


class OutputError(Exception):
    """A file could not be written; the message is one line naming the file and the reason."""


def reason(exc: OSError) -> str:
    """The system's one-line reason of an OSError ('No space left on device', ...)."""
    text = exc.strerror or str(exc) or type(exc).__name__
    return " ".join(text.split())


def cannot_write(path: str | Path, exc: OSError) -> OutputError:
    """The OutputError for a failed write of ``path``."""
    return OutputError(f"{path}: cannot write ({reason(exc)})")


@contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Turn an OSError raised inside the block into an :class:`OutputError` naming ``path``."""
    try:
        yield
    except OSError as exc:
        raise cannot_write(path, exc) from None


def temporary_name(path: Path) -> Path:
    """The temporary sibling a file is written to before it is renamed over ``path``."""
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def remove_quietly(path: Path) -> None:
    """Delete a temporary file if it exists (a failure to delete is not reported)."""
    with suppress(OSError):
        path.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to a temporary sibling, fsync it and rename it over ``path``.

    Raises:
        OutputError: naming ``path``; the temporary file is removed and ``path`` is unchanged.
    """
    path = Path(path)
    tmp = temporary_name(path)
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        remove_quietly(tmp)
        raise cannot_write(path, exc) from None


def make_folder(path: str | Path) -> None:
    """``mkdir -p``; raises :class:`OutputError` naming the folder."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{path}: cannot create the folder ({reason(exc)})") from None


def refuse_existing(path: str | Path | None, force: bool) -> None:
    """A named output must not replace an existing file unless ``--force`` is given.

    Raises:
        InputError: ``path`` exists (or is a folder) and ``force`` is false.
    """
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not an output file")
    if path.exists() and not force:
        raise InputError(f"{path}: exists; pass --force to replace it")
