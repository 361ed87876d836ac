"""The Python API: configure, run, resume and read runs from a script or a notebook.

    import hpcvmc

    config = hpcvmc.load_config("jobs/quickstart.toml", overrides=["run.steps=20"])
    # or from tables: hpcvmc.config_from_tables({"system": {...}, "model": {...}, ...})
    hpcvmc.run(config)                       # runs, or resumes run.output from its checkpoint
    history = hpcvmc.read_history(config.run.output)   # {"energy": array, "error": ...}
    final = hpcvmc.read_final(config.run.output)       # final.json (run.measure_steps > 0)

A component written in the notebook itself is added with ``hpcvmc.register(Component(...))``
(:mod:`hpcvmc.registry`) and selected by its name, exactly like a built-in. ``run`` is the code
path of ``hpcvmc run``: the same checks, checkpoints and results; under ``mpirun`` every rank
calls it. Energies are totals in the system's unit (J1 for spins, E0 for moire electrons).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from hpcvmc.config import Config, check_ranks, from_tables, load
from hpcvmc.errors import InputError


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read and validate an input file (``overrides``: ``"section.key=value"`` strings, TOML
    values, as ``--set``); plug-in files are looked for next to it.

    Raises:
        InputError: one line naming the key or the file.
    """
    return load(path, overrides)


def config_from_tables(tables: Mapping[str, Mapping[str, Any]], base_dir: str | Path = ".") -> Config:
    """Validate an input given as nested dicts, section -> key -> value (as TOML would give).

    Raises:
        InputError: one line naming the key.
    """
    return from_tables(tables, Path(base_dir))


def init(config: Config | None = None, platform: str = "auto") -> Any:
    """MPI and device binding first, then float64 (energies and solvers need it); returns the
    communicator. Called by :func:`run`; call it first when building a run by hand.

    Raises:
        InputError: ``run.platform = "gpu"`` and some rank has no usable GPU (every rank).
    """
    from hpcvmc.parallel import init_distributed

    platform = config.run.platform if config else platform
    comm = init_distributed(platform=platform)
    import jax

    jax.config.update("jax_enable_x64", True)
    if platform == "gpu":
        try:
            missing = not jax.devices("gpu")
        except RuntimeError:
            missing = True
        if comm.any(missing):
            raise InputError("run.platform = 'gpu': no usable GPU (JAX finds no GPU backend on "
                             f"{'every rank' if comm.size > 1 else 'this machine'}); use 'auto' "
                             "or 'cpu', or run on a GPU node")
    return comm


def check_costs(config: Config, comm: Any) -> None:
    """Memory checks before anything is built or written (every rank).

    Raises:
        InputError: naming the key whose cost does not fit.
    """
    from hpcvmc import resources
    from hpcvmc.parallel import ranks_on_node

    on_node = ranks_on_node(comm)
    resources.check_before_build(config, comm.size, on_node)
    resources.check_network(config, comm.size, on_node)


def run(config: Config, restart: str | Path | None = None, progress_every: int = 1,
        stop: Any = None) -> int:
    """Run or resume the optimization of ``config``; returns the exit code (0 finished, 3 a
    non-finite energy, 75 stopped by a signal; see README "Exit codes").

    Args:
        config: a validated input.
        restart: a checkpoint file to start from instead of run.output's newest.
        progress_every: print a progress line every this many steps.
        stop: an installed :class:`hpcvmc.signals.StopFlag` (installed here when None).

    Raises:
        InputError: bad input, a foreign or locked output folder, a bad checkpoint.
        OutputError: a file of the run folder could not be written.
    """
    from hpcvmc import resources
    from hpcvmc.build import build
    from hpcvmc.driver import run as drive
    from hpcvmc.parallel import launcher_world_size

    if restart is not None and not Path(restart).is_file():
        what = "not a checkpoint file" if Path(restart).exists() else "no such checkpoint file"
        raise InputError(f"--restart {restart}: {what}")
    # absurd sizes are refused before MPI and JAX start (the full check follows below)
    resources.check_before_build(config, launcher_world_size(), 1)
    comm = init(config)
    check_ranks(config, comm.size)
    check_costs(config, comm)
    return drive(build(config, comm), restart=None if restart is None else str(restart),
                 progress_every=progress_every, stop=stop)


def read_history(run_dir: str | Path) -> dict[str, np.ndarray]:
    """The per-step log of a run folder (``history.csv``): one float array per column
    (``step``, ``energy``, ``error``, ``variance``, ... see README "The output folder").

    Raises:
        InputError: the folder has no readable history.csv.
    """
    path = Path(run_dir) / "history.csv"
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not rows:
        return {}
    return {key: np.array([float(row[key]) for row in rows]) for key in rows[0]}


def read_final(run_dir: str | Path) -> dict[str, Any] | None:
    """The final measurement of a run folder (``final.json``), or None when there is none."""
    from hpcvmc.measure import read_final as read

    return read(run_dir)
