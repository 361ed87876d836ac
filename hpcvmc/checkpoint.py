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
from typing import Any

import h5py
import jax
import numpy as np

from hpcvmc import __version__

FORMAT_VERSION = 1
CHECKPOINT_PATTERN = re.compile(r"^step_(\d{8})\.h5$")


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


def _unflatten(template: Any, arrays: dict[str, np.ndarray], what: str, path: Path) -> Any:
    """Fill a template pytree with arrays by key path, checking names and shapes."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    out = []
    for key_path, leaf in leaves:
        name = "/".join(_key_to_str(k) for k in key_path)
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


def _checksum(datasets: dict[str, np.ndarray]) -> str:
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

    Returns:
        The path of the new checkpoint.
    """
    folder = checkpoint_dir(output)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / checkpoint_name(snap.step)
    tmp = folder / f".{final.name}.tmp{os.getpid()}"
    datasets = _datasets(snap)
    with open(tmp, "w+b") as raw:
        with h5py.File(raw, "w") as f:
            meta = f.create_group("meta")
            meta.attrs.update({
                "format_version": FORMAT_VERSION, "hpcvmc_version": __version__,
                "step": snap.step, "n_ranks": snap.n_ranks, "wall_time": time.time(),
                "physics_hash": snap.physics_hash, "slurm_job_id": snap.slurm_job_id,
                "checksum": _checksum(datasets),
            })
            meta.create_dataset("input_toml", data=snap.input_toml)
            rng = f.create_group("rng")
            rng.attrs.update({"seed": snap.seed,
                              "scheme": "fold_in(fold_in(fold_in(key(seed), purpose), chain), step)"})
            for name, array in datasets.items():
                f.create_dataset(name, data=array)
        raw.flush()
        os.fsync(raw.fileno())
    os.replace(tmp, final)
    _fsync_dir(folder)
    for old in list_checkpoints(output)[keep:]:
        old.unlink()
    for stale in folder.glob(".step_*.h5.tmp*"):  # left by a writer that was killed
        stale.unlink()
    return final


def _read_group(f: h5py.File, name: str) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    if name not in f:
        return out

    def visit(path: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset):
            out[path] = obj[()]

    f[name].visititems(visit)
    return out


def read(path: str | Path) -> Snapshot:
    """Read and validate a checkpoint; params and opt_state come back as flat path dicts.

    Raises:
        CheckpointError: the file is missing, truncated, corrupt, foreign, from a newer format
            version, or fails its checksum. The message names the file.
    """
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            if "meta" not in f or "format_version" not in f["meta"].attrs:
                raise CheckpointError(f"{path}: not an hpcvmc checkpoint (no /meta/format_version)")
            meta = dict(f["meta"].attrs)
            if int(meta["format_version"]) > FORMAT_VERSION:
                raise CheckpointError(
                    f"{path}: format version {meta['format_version']} is newer than this hpcvmc "
                    f"reads ({FORMAT_VERSION}); upgrade hpcvmc"
                )
            groups = {g: _read_group(f, g) for g in ("params", "opt_state", "sampler", "history")}
            input_toml = f["meta/input_toml"][()]
            seed = int(f["rng"].attrs["seed"])
    except CheckpointError:
        raise
    except (OSError, KeyError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable or truncated checkpoint ({exc})") from None
    datasets = {f"{g}/{k}": v for g, arrays in groups.items() for k, v in arrays.items()}
    if _checksum(datasets) != meta["checksum"]:
        raise CheckpointError(f"{path}: checksum mismatch (corrupt checkpoint)")
    return Snapshot(
        step=int(meta["step"]),
        params=groups["params"],
        opt_state=groups["opt_state"],
        chains=groups["sampler"] or None,
        history=groups["history"],
        input_toml=input_toml.decode() if isinstance(input_toml, bytes) else str(input_toml),
        physics_hash=str(meta["physics_hash"]),
        seed=seed,
        n_ranks=int(meta["n_ranks"]),
        slurm_job_id=str(meta["slurm_job_id"]),
    )


def newest_valid(output: str | Path, warn: Any = print) -> Snapshot | None:
    """The newest checkpoint of a run that passes validation; bad ones are reported by name."""
    for path in list_checkpoints(output):
        try:
            return read(path)
        except CheckpointError as exc:
            warn(f"hpcvmc: skipping checkpoint {exc}")
    return None


def restore_tree(template: Any, flat: dict[str, np.ndarray], what: str, path: Path) -> Any:
    """Rebuild a params/opt_state pytree from a checkpoint's flat dict, shaped like template."""
    return _unflatten(template, flat, what, path)


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
