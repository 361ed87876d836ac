"""Exported states: the effective input and the trained parameters of a run, nothing else.

``hpcvmc export RUN_DIR OUT.h5`` copies the parameters of a run folder's newest valid
checkpoint into a small HDF5 file that ``hpcvmc measure OUT.h5`` (fresh chains, a
measurement with the parameters fixed) and ``run.init_params = "OUT.h5"`` (fine-tuning) read.
Chains, optimizer state and history are left out: the file is a wave function, not a resumable
run.

Layout (export format version 1), readable with plain h5py or h5dump:

- ``/meta`` (attributes): ``export_format_version``, ``hpcvmc_version`` (the exporter),
  ``source_hpcvmc_version`` (the version that wrote the checkpoint), ``step`` (completed
  optimization steps of the parameters), ``physics_hash`` (SHA-256 of the run's [system] and
  [model], as in checkpoints), ``seed``, ``n_params``, ``source_run`` (the run folder as given),
  ``checksum`` (SHA-256 over the ``/params`` datasets as in checkpoints: sorted path, dtype,
  shape, bytes) and, when the run's ``final.json`` measured this very step, ``final_energy``,
  ``final_error``, ``final_variance`` (totals in ``energy_unit``), ``final_n_samples``,
  ``final_measure_steps``, ``final_summary``; dataset ``/meta/input_toml`` holds the effective
  input of the run.
- ``/params/...``: one dataset per parameter leaf, the pytree key path as the group path, exactly
  as ``/params`` of a checkpoint (the bytes are the checkpoint's).

There is no ``/meta/format_version``: a checkpoint reader refuses the file instead of taking it
for a resumable state.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from hpcvmc.version import __version__
from hpcvmc import checkpoint as ckpt
from hpcvmc.config import InputError

EXPORT_FORMAT_VERSION = 1
FINAL_KEYS = ("final_energy", "final_error", "final_variance", "final_n_samples",
              "final_measure_steps", "final_summary", "energy_unit")


@dataclass
class ExportedState:
    """What an exported file holds, as host data.

    Attributes:
        step: completed optimization steps of the parameters.
        params: flat dict "a/b/c" -> numpy leaf (as :func:`hpcvmc.checkpoint.read` gives).
        input_toml: the effective input of the source run.
        physics_hash: hash of its [system] and [model].
        attrs: every ``/meta`` attribute (provenance, the final energy when present).
    """

    step: int
    params: dict[str, np.ndarray]
    input_toml: str
    physics_hash: str
    attrs: dict[str, Any]


def is_exported(path: str | Path) -> bool:
    """Whether ``path`` is an HDF5 file with an exported state's marker."""
    try:
        with h5py.File(path, "r") as f:
            return "meta" in f and "export_format_version" in f["meta"].attrs
    except (OSError, ValueError):
        return False


def _final_attrs(run_dir: Path, step: int) -> dict[str, Any]:
    """The final measurement of ``run_dir`` as attributes, when it measured ``step``."""
    try:
        final = json.loads((run_dir / "final.json").read_text())
    except (OSError, ValueError):
        return {}
    if final.get("step") != step:
        return {}
    energy = final["energy"]
    return {
        "final_energy": float(energy["mean"]), "final_error": float(energy["error"]),
        "final_variance": float(energy["variance"]), "final_n_samples": int(final["n_samples"]),
        "final_measure_steps": int(final["measure_steps"]), "final_summary": str(final["summary"]),
        "energy_unit": str(final["units"]),
    }


def export(run_dir: str | Path, out: str | Path, force: bool = False,
           warn: Any = print) -> tuple[Path, ExportedState]:
    """Write the parameters of the newest valid checkpoint of ``run_dir`` to ``out``.

    Written to a temporary name next to ``out`` and renamed (atomic).

    Returns:
        The path written and what it holds.

    Raises:
        InputError: ``run_dir`` is not a run folder or has no valid checkpoint; ``out`` exists
            and ``force`` is false.
    """
    run_dir, out = Path(run_dir), Path(out)
    if not (run_dir / "input.toml").is_file():
        raise InputError(f"{run_dir}: not an hpcvmc run folder (no input.toml)")
    if out.exists() and not force:
        raise InputError(f"{out}: exists; use --force to overwrite it")
    if out.exists() and not out.is_file():
        raise InputError(f"{out}: exists and is not a file")
    snap = ckpt.newest_valid(run_dir, warn=warn)
    if snap is None:
        raise InputError(f"{run_dir}: no valid checkpoint in {ckpt.checkpoint_dir(run_dir)}")
    params = {k: np.asarray(v) for k, v in snap.params.items()}
    attrs: dict[str, Any] = {
        "export_format_version": EXPORT_FORMAT_VERSION, "hpcvmc_version": __version__,
        "source_hpcvmc_version": _source_version(run_dir, snap.step), "step": snap.step,
        "physics_hash": snap.physics_hash, "seed": snap.seed,
        "n_params": int(sum(v.size for v in params.values())), "source_run": str(run_dir),
        "checksum": ckpt.checksum({f"params/{k}": v for k, v in params.items()}),
    }
    attrs.update(_final_attrs(run_dir, snap.step))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        with h5py.File(tmp, "w") as f:
            meta = f.create_group("meta")
            meta.attrs.update(attrs)
            meta.create_dataset("input_toml", data=snap.input_toml)
            for name, array in sorted(params.items()):
                f.create_dataset(f"params/{name}", data=array)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out, ExportedState(snap.step, params, snap.input_toml, snap.physics_hash, attrs)


def _source_version(run_dir: Path, step: int) -> str:
    """``hpcvmc_version`` of the checkpoint of ``step`` (the file :func:`export` read)."""
    path = ckpt.checkpoint_dir(run_dir) / ckpt.checkpoint_name(step)
    with h5py.File(path, "r") as f:
        return str(f["meta"].attrs["hpcvmc_version"])


def read(path: str | Path) -> ExportedState:
    """Read and validate an exported state.

    Raises:
        CheckpointError: the file is missing, not an exported state, from a newer export
            format, or fails its checksum; the message names the file.
    """
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            if "meta" not in f or "export_format_version" not in f["meta"].attrs:
                raise ckpt.CheckpointError(f"{path}: not an exported hpcvmc state "
                                           "(no /meta/export_format_version)")
            attrs = {k: (v.item() if isinstance(v, np.generic) else v)
                     for k, v in f["meta"].attrs.items()}
            if int(attrs["export_format_version"]) > EXPORT_FORMAT_VERSION:
                raise ckpt.CheckpointError(
                    f"{path}: export format version {attrs['export_format_version']} is newer "
                    f"than this hpcvmc reads ({EXPORT_FORMAT_VERSION}); upgrade hpcvmc")
            params = ckpt.read_group(f, "params")
            input_toml = f["meta/input_toml"][()]
    except ckpt.CheckpointError:
        raise
    except (OSError, KeyError, ValueError) as exc:
        raise ckpt.CheckpointError(f"{path}: unreadable exported state ({exc})") from None
    if ckpt.checksum({f"params/{k}": v for k, v in params.items()}) != attrs["checksum"]:
        raise ckpt.CheckpointError(f"{path}: checksum mismatch (corrupt exported state)")
    text = input_toml.decode() if isinstance(input_toml, bytes) else str(input_toml)
    return ExportedState(int(attrs["step"]), params, text, str(attrs["physics_hash"]), attrs)
