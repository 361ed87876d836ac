"""HDF5 checkpoints: the whole state of a run, written atomically, validated on load.

Layout of ``<run.output>/checkpoints/step_<8-digit step>.h5`` (format version 1), readable with
plain h5py or h5dump:

- ``/meta`` (attributes): ``format_version``, ``hpcvmc_version``, ``step``, ``n_ranks``,
  ``wall_time`` (Unix seconds), ``physics_hash`` (SHA-256 of the [system] and [model] input),
  ``slurm_job_id`` ("" outside Slurm), ``checksum`` (SHA-256 over every dataset below, in
  sorted path order: path, dtype, shape and bytes); dataset ``/meta/input_toml`` holds the
  effective input (file plus ``--set`` overrides).
- ``/params/...`` and ``/opt_state/...``: one dataset per pytree leaf, the leaf's key path as
  the group path (``/params/Dense_0/kernel``; sequence entries as their index).
- ``/sampler``: ``x`` (n_chains, ...) walkers of every chain in global chain order, ``logpsi``,
  ``accepted``, ``proposed`` (per-chain move counters); absent for the exact sampler.
- ``/rng`` (attributes): ``seed`` and ``scheme``; every stream is derived from
  (seed, purpose, global chain index, step), so the seed and the step are the whole RNG state.
- ``/history``: one 1-D dataset per logged quantity, one row per completed step.

A file is written by rank 0 to a temporary name in the same folder, flushed, fsynced and
renamed over the final name (atomic on POSIX), so a kill at any moment leaves either the old
set of checkpoints or the new one (plus a stale temporary file, removed by the next write).
The newest ``keep`` files are kept.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

import h5py
import jax
import numpy as np

from hpcvmc.version import __version__
from hpcvmc.outputs import cannot_write, make_folder, remove_quietly, temporary_name, writing

FORMAT_VERSION = 1
CHECKPOINT_PATTERN = re.compile(r"^step_(\d{8})\.h5$")
T = TypeVar("T")


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message names the file and the reason."""


@dataclass
class Snapshot:
    """Everything a checkpoint holds, as host (numpy) data.

    Attributes:
        step: number of completed optimization steps.
        params: parameter pytree (numpy leaves).
        opt_state: optimizer-state pytree (numpy leaves).
        chains: dict of per-chain arrays in global chain order (x, logpsi, accepted,
            proposed), or None for the exact sampler.
        history: quantity name -> 1-D array with one entry per completed step.
        input_toml: the effective input.
        physics_hash: hash of the physics-relevant input sections.
        seed: the run seed.
        n_ranks: ranks of the run that wrote it.
        slurm_job_id: the Slurm job id, "" outside Slurm.
    """

    step: int
    params: Any
    opt_state: Any
    chains: dict[str, np.ndarray] | None
    history: dict[str, np.ndarray]
    input_toml: str
    physics_hash: str
    seed: int
    n_ranks: int
    slurm_job_id: str = ""


def checkpoint_dir(output: str | Path) -> Path:
    """The checkpoint folder of a run's output folder."""
    return Path(output) / "checkpoints"


def checkpoint_name(step: int) -> str:
    """File name of the checkpoint after ``step`` completed steps."""
    return f"step_{step:08d}.h5"


def list_checkpoints(output: str | Path) -> list[Path]:
    """Checkpoint files of a run, newest (highest step) first."""
    folder = checkpoint_dir(output)
    if not folder.is_dir():
        return []
    files = [p for p in folder.iterdir() if CHECKPOINT_PATTERN.match(p.name)]
    return sorted(files, key=lambda p: p.name, reverse=True)


def _key_to_str(key: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _flatten(tree: Any) -> dict[str, np.ndarray]:
    """Pytree -> {"a/b/c": numpy leaf}."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {"/".join(_key_to_str(k) for k in path): np.asarray(leaf) for path, leaf in leaves}


def _unflatten(template: Any, arrays: dict[str, np.ndarray], what: str, path: Path,
               fresh: dict[str, np.ndarray] | None = None) -> Any:
    """Fill a template pytree with arrays by key path, checking names and shapes; a name that
    ``arrays`` lacks takes its value from ``fresh`` when given, else it is an error."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    out = []
    for key_path, leaf in leaves:
        name = "/".join(_key_to_str(k) for k in key_path)
        if name not in arrays and fresh is not None:
            out.append(fresh[name])
            continue
        if name not in arrays:
            raise CheckpointError(f"{path}: /{what}/{name} is missing (different model?)")
        value = arrays[name]
        shape = tuple(getattr(leaf, "shape", np.shape(leaf)))  # arrays or jax.ShapeDtypeStruct
        if value.shape != shape:
            raise CheckpointError(
                f"{path}: /{what}/{name} has shape {value.shape}, the model needs {shape}"
            )
        out.append(_upcast(value, getattr(leaf, "dtype", None)))
    extra = set(arrays) - {"/".join(_key_to_str(k) for k in p) for p, _ in leaves}
    if extra:
        raise CheckpointError(f"{path}: /{what} holds entries the model lacks: {sorted(extra)[:3]}")
    return jax.tree_util.tree_unflatten(treedef, out)


def _upcast(value: np.ndarray, dtype: Any) -> np.ndarray:
    """A stored float leaf in the model's wider float dtype (float32 -> float64, exact).

    Parameters and optimizer state are float64 whatever ``model.dtype`` (the compute dtype);
    checkpoints of versions in which ``model.dtype = "float32"`` made them float32 hold float32
    leaves, and the cast is lossless.
    """
    if (dtype is not None and np.issubdtype(value.dtype, np.floating)
            and np.issubdtype(dtype, np.floating) and np.dtype(dtype).itemsize > value.itemsize):
        return value.astype(dtype)
    return value


def checksum(datasets: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(datasets):
        array = np.ascontiguousarray(datasets[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _datasets(snap: Snapshot) -> dict[str, np.ndarray]:
    out = {f"params/{k}": v for k, v in _flatten(snap.params).items()}
    out.update({f"opt_state/{k}": v for k, v in _flatten(snap.opt_state).items()})
    if snap.chains is not None:
        out.update({f"sampler/{k}": np.asarray(v) for k, v in snap.chains.items()})
    out.update({f"history/{k}": np.asarray(v) for k, v in snap.history.items()})
    return out


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(snap: Snapshot, output: str | Path, keep: int) -> Path:
    """Write a checkpoint atomically and delete all but the newest ``keep`` (rank 0 only).

    Call only while holding the run-folder lock (:mod:`hpcvmc.runlock`): the clean-up of
    temporary files left by a killed writer relies on no other writer being alive.

    Returns:
        The path of the new checkpoint.

    Raises:
        OutputError: a write failed (disk full, read-only, ...); the message names the file,
            the temporary file is removed and the existing checkpoints are untouched.
    """
    folder = checkpoint_dir(output)
    make_folder(folder)
    final = folder / checkpoint_name(snap.step)
    tmp = temporary_name(final)
    datasets = _datasets(snap)
    try:
        with open(tmp, "w+b") as raw:
            with h5py.File(raw, "w") as f:
                meta = f.create_group("meta")
                meta.attrs.update({
                    "format_version": FORMAT_VERSION, "hpcvmc_version": __version__,
                    "step": snap.step, "n_ranks": snap.n_ranks, "wall_time": time.time(),
                    "physics_hash": snap.physics_hash, "slurm_job_id": snap.slurm_job_id,
                    "checksum": checksum(datasets),
                })
                meta.create_dataset("input_toml", data=snap.input_toml)
                rng = f.create_group("rng")
                rng.attrs.update({"seed": snap.seed, "scheme": "fold_in(fold_in(fold_in(key(seed), "
                                  "purpose), chain), step)"})
                for name, array in datasets.items():
                    f.create_dataset(name, data=array)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, final)
        _fsync_dir(folder)
    except OSError as exc:
        remove_quietly(tmp)
        raise cannot_write(final, exc) from None
    with writing(folder):
        for old in list_checkpoints(output)[keep:]:
            old.unlink()
        for stale in folder.glob(".step_*.h5.tmp*"):  # left by a writer that was killed
            stale.unlink()
    return final


def read_group(f: h5py.File, name: str) -> dict[str, np.ndarray]:
    """Every dataset under group ``name`` as {path relative to it: array} ({} when absent)."""
    out: dict[str, np.ndarray] = {}
    if name not in f:
        return out

    def visit(path: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset):
            out[path] = obj[()]

    f[name].visititems(visit)
    return out


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _attribute(attrs: Any, name: str, kind: type, path: Path) -> Any:
    """A /meta or /rng attribute converted to ``kind``; CheckpointError if missing or malformed."""
    if name not in attrs:
        raise CheckpointError(f"{path}: attribute {name} is missing (corrupt checkpoint)")
    value = attrs[name]
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    try:
        if kind is int:
            if isinstance(value, (str, float)) or np.ndim(value) != 0 or int(value) != value:
                raise ValueError
            return int(value)
        if not isinstance(value, str):
            raise ValueError
        return value
    except (TypeError, ValueError):
        raise CheckpointError(f"{path}: attribute {name} = {_one_line(repr(value))[:60]} is not "
                              f"{'an integer' if kind is int else 'a string'} (corrupt checkpoint)") from None


def _check_history(history: dict[str, np.ndarray], path: Path) -> None:
    """Every logged quantity: a 1-D numeric array, all of one length."""
    lengths = set()
    for name, values in history.items():
        if values.ndim != 1 or not np.issubdtype(values.dtype, np.number):
            raise CheckpointError(f"{path}: /history/{name} is not a 1-D numeric array "
                                  "(corrupt checkpoint)")
        lengths.add(len(values))
    if len(lengths) > 1:
        raise CheckpointError(f"{path}: /history has quantities of different lengths "
                              f"{sorted(lengths)} (corrupt checkpoint)")


def read(path: str | Path) -> Snapshot:
    """Read and validate a checkpoint; params and opt_state come back as flat path dicts.

    Every part is checked: the /meta and /rng attributes (present, of the right type), the
    effective input, the checksum over all datasets, the history's shape.

    Raises:
        CheckpointError: the file is missing, truncated, corrupt (any part missing or malformed),
            foreign, from a newer format version, or fails its checksum. The message is one
            line naming the file.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a checkpoint file (a folder?)")
    try:
        with h5py.File(path, "r") as f:
            if "meta" not in f or "format_version" not in f["meta"].attrs:
                raise CheckpointError(f"{path}: not an hpcvmc checkpoint (no /meta/format_version)")
            attrs = f["meta"].attrs
            version = _attribute(attrs, "format_version", int, path)
            if version > FORMAT_VERSION:
                raise CheckpointError(
                    f"{path}: format version {version} is newer than this hpcvmc "
                    f"reads ({FORMAT_VERSION}); upgrade hpcvmc"
                )
            meta = {name: _attribute(attrs, name, kind, path) for name, kind in (
                ("step", int), ("n_ranks", int), ("physics_hash", str), ("slurm_job_id", str),
                ("checksum", str))}
            for group in ("meta/input_toml", "rng"):
                if group not in f:
                    raise CheckpointError(f"{path}: /{group} is missing (corrupt checkpoint)")
            seed = _attribute(f["rng"].attrs, "seed", int, path)
            groups = {g: read_group(f, g) for g in ("params", "opt_state", "sampler", "history")}
            input_toml = f["meta/input_toml"][()]
    except CheckpointError:
        raise
    except (OSError, KeyError, ValueError, TypeError, AttributeError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: unreadable or truncated checkpoint "
                              f"({_one_line(exc)[:200]})") from None
    datasets = {f"{g}/{k}": v for g, arrays in groups.items() for k, v in arrays.items()}
    if checksum(datasets) != meta["checksum"]:
        raise CheckpointError(f"{path}: checksum mismatch (corrupt checkpoint)")
    if isinstance(input_toml, bytes):
        input_toml = input_toml.decode(errors="replace")
    if not isinstance(input_toml, str):
        raise CheckpointError(f"{path}: /meta/input_toml is not text (corrupt checkpoint)")
    if meta["step"] < 0 or meta["n_ranks"] < 1 or not groups["params"]:
        raise CheckpointError(f"{path}: step {meta['step']}, n_ranks {meta['n_ranks']}, "
                              f"{len(groups['params'])} parameter arrays (corrupt checkpoint)")
    _check_history(groups["history"], path)
    return Snapshot(
        step=meta["step"],
        params=groups["params"],
        opt_state=groups["opt_state"],
        chains=groups["sampler"] or None,
        history=groups["history"],
        input_toml=input_toml,
        physics_hash=meta["physics_hash"],
        seed=seed,
        n_ranks=meta["n_ranks"],
        slurm_job_id=meta["slurm_job_id"],
    )


def newest_valid(output: str | Path, warn: Any = print) -> Snapshot | None:
    """The newest checkpoint of a run that passes validation; bad ones are reported by name."""
    found = newest_usable(output, lambda snap, path: snap, warn)
    return None if found is None else found[1]


def newest_usable(output: str | Path, use: Callable[[Snapshot, Path], T],
                  warn: Callable[[str], None]) -> tuple[Path, T] | None:
    """Newest first, the first checkpoint of a run that reads and that ``use`` accepts.

    ``use(snapshot, path)`` turns a valid snapshot into what the caller needs (e.g. restores
    the parameter tree); a :class:`CheckpointError` from reading or from ``use`` marks that file
    as unusable: it is reported by name through ``warn`` and the one before it is tried.

    Returns:
        (path, use's result), or None when no checkpoint is usable.
    """
    for path in list_checkpoints(output):
        try:
            return path, use(read(path), path)
        except CheckpointError as exc:
            warn(f"hpcvmc: skipping checkpoint {exc}")
    return None


def restore_tree(template: Any, flat: dict[str, np.ndarray], what: str, path: Path) -> Any:
    """Rebuild a params/opt_state pytree from a checkpoint's flat dict, shaped like template."""
    return _unflatten(template, flat, what, path)


def restore_extended(template: Any, flat: dict[str, np.ndarray], what: str, path: Path,
                     fresh: Callable[[], Any]) -> tuple[Any, list[str]]:
    """Parameters of a model that extends the stored one (e.g. more Jastrow terms): every
    stored entry must be an entry of ``template`` with its shape; the entries the store lacks
    take their values from ``fresh()`` (the model's initial pytree, computed only then).

    Returns:
        (pytree shaped like ``template``, sorted names of the entries taken from ``fresh()``).

    Raises:
        CheckpointError: a stored entry the model lacks, a shape that differs, or no entry in
            common.
    """
    leaves, _ = jax.tree_util.tree_flatten_with_path(template)
    names = {"/".join(_key_to_str(k) for k in key_path) for key_path, _ in leaves}
    kept = sorted(names - set(flat))
    if not kept:
        return _unflatten(template, flat, what, path), []
    if len(kept) == len(names):
        raise CheckpointError(f"{path}: /{what} shares no entry with the model (different model?)")
    return _unflatten(template, flat, what, path, fresh=_flatten(fresh())), kept


def redistribute_chains(chains: dict[str, np.ndarray], n_chains: int) -> dict[str, np.ndarray]:
    """Map saved chains (global order) onto ``n_chains`` chains (elastic resume).

    Rule: new chain c continues saved chain c mod n_saved. With the same count nothing
    changes; with fewer chains the first ones are kept; with more, chains are cloned cyclically
    (a clone then decorrelates from its original because its random stream, keyed by its own
    global index, differs).
    """
    n_saved = len(next(iter(chains.values())))
    index = np.arange(n_chains) % n_saved
    return {k: v[index] for k, v in chains.items()}
