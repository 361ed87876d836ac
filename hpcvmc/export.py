"""Exported states: the effective input and the trained parameters of a run, nothing else.

``hpcvmc export RUN_DIR OUT.h5`` copies the parameters of a run folder's newest valid
checkpoint into a small HDF5 file that ``hpcvmc measure OUT.h5`` (fresh chains, a
measurement with the parameters fixed) and ``run.init_params = "OUT.h5"`` (fine-tuning) read.
Chains, optimizer state and history are left out: the file is a wave function, not a resumable
run.

Layout (export format version 2), readable with plain h5py or h5dump:

- ``/meta`` (attributes): ``export_format_version``, ``hpcvmc_version`` (the exporter),
  ``source_hpcvmc_version`` (the version that wrote the checkpoint), ``step`` (completed
  optimization steps of the parameters), ``physics_hash`` (SHA-256 of the run's [system] and
  [model], as in checkpoints), ``seed``, ``n_params``, ``source_run`` (the run folder as given),
  ``checksum`` (SHA-256 over the parameter leaves as in checkpoints: sorted path, dtype, shape,
  bytes) and, when the run's ``final.json`` measured this very step, ``final_energy``,
  ``final_error``, ``final_variance`` (totals in ``energy_unit``), ``final_n_samples``,
  ``final_measure_steps``, ``final_summary``; dataset ``/meta/input_toml`` holds the effective
  input of the run.
- ``/params/values``: every parameter leaf raveled (C order) and concatenated in sorted key-path
  order, one 1-D dataset of the leaves' common dtype (the checkpoint's bytes);
  ``/params/layout``: a JSON string, the list of ``[key path, shape]`` in that order.

Version 1 stored one dataset per leaf under ``/params`` (the checkpoint's layout); its HDF5
object headers (~1 KB per leaf) made up a quarter of a file. It is still read, and
``hpcvmc export OLD.h5 NEW.h5`` rewrites such a file in version 2 (parameters and provenance
unchanged, the checksum included).

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

EXPORT_FORMAT_VERSION = 2
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


def export(source: str | Path, out: str | Path, force: bool = False,
           warn: Any = print) -> tuple[Path, ExportedState]:
    """Write the parameters of the newest valid checkpoint of ``source`` to ``out``.

    ``source`` is a run folder, or an exported state of an older format version, which is
    rewritten in this one with its parameters and provenance unchanged (``hpcvmc_version``
    becomes this exporter's). Written to a temporary name next to ``out`` and renamed (atomic).

    Returns:
        The path written and what it holds.

    Raises:
        InputError: ``source`` is neither a run folder with a valid checkpoint nor an exported
            state; ``out`` exists and ``force`` is false.
        CheckpointError: ``source`` is an exported state that fails to read.
    """
    source, out = Path(source), Path(out)
    if out.exists() and not force:
        raise InputError(f"{out}: exists; use --force to overwrite it")
    if out.exists() and not out.is_file():
        raise InputError(f"{out}: exists and is not a file")
    state = _rewritten(source) if is_exported(source) else _from_run(source, warn)
    _write(out, state)
    return out, state


def _from_run(run_dir: Path, warn: Any) -> ExportedState:
    """The parameters, input and provenance of the newest valid checkpoint of ``run_dir``."""
    if not (run_dir / "input.toml").is_file():
        raise InputError(f"{run_dir}: neither an hpcvmc run folder (no input.toml) nor an "
                         "exported state")
    snap = ckpt.newest_valid(run_dir, warn=warn)
    if snap is None:
        raise InputError(f"{run_dir}: no valid checkpoint in {ckpt.checkpoint_dir(run_dir)}")
    params = {k: np.asarray(v) for k, v in snap.params.items()}
    attrs: dict[str, Any] = {
        "export_format_version": EXPORT_FORMAT_VERSION, "hpcvmc_version": __version__,
        "source_hpcvmc_version": _source_version(run_dir, snap.step), "step": snap.step,
        "physics_hash": snap.physics_hash, "seed": snap.seed,
        "n_params": int(sum(v.size for v in params.values())), "source_run": str(run_dir),
        "checksum": _params_checksum(params),
    }
    attrs.update(_final_attrs(run_dir, snap.step))
    return ExportedState(snap.step, params, snap.input_toml, snap.physics_hash, attrs)


def _params_checksum(params: dict[str, np.ndarray]) -> str:
    """The checksum of the parameter leaves as a checkpoint computes that of its ``/params``."""
    return ckpt.checksum({f"params/{k}": v for k, v in params.items()})


def _rewritten(path: Path) -> ExportedState:
    """An exported state as read, marked as written by this exporter in this format."""
    state = read(path)
    attrs = dict(state.attrs, export_format_version=EXPORT_FORMAT_VERSION,
                 hpcvmc_version=__version__)
    return ExportedState(state.step, state.params, state.input_toml, state.physics_hash, attrs)


def _write(out: Path, state: ExportedState) -> None:
    """Write ``state`` in the layout of this format version (module docstring), atomically."""
    names = sorted(state.params)
    dtypes = {state.params[name].dtype for name in names}
    if len(dtypes) > 1:
        raise InputError(f"{out}: not written: the parameters have several dtypes "
                         f"({sorted(map(str, dtypes))}), an exported state stores one")
    values = np.concatenate([np.ravel(state.params[name]) for name in names])
    layout = json.dumps([[name, list(state.params[name].shape)] for name in names])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        with h5py.File(tmp, "w") as f:
            meta = f.create_group("meta")
            meta.attrs.update(state.attrs)
            meta.create_dataset("input_toml", data=state.input_toml)
            f.create_dataset("params/values", data=values)
            f.create_dataset("params/layout", data=layout)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()


def _unpacked(values: np.ndarray, layout: list[Any]) -> dict[str, np.ndarray]:
    """The leaves of ``/params/values`` by the ``[key path, shape]`` list of ``/params/layout``.

    Raises:
        ValueError: the layout does not add up to the values.
    """
    params, offset = {}, 0
    for name, shape in layout:
        size = int(np.prod(shape, dtype=np.int64))
        params[str(name)] = values[offset:offset + size].reshape(shape)
        offset += size
    if offset != values.size:
        raise ValueError(f"layout holds {offset} values, /params/values {values.size}")
    return params


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
            if int(attrs["export_format_version"]) == 1:
                params = ckpt.read_group(f, "params")
            else:
                params = _unpacked(f["params/values"][()], json.loads(f["params/layout"][()]))
            input_toml = f["meta/input_toml"][()]
    except ckpt.CheckpointError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise ckpt.CheckpointError(f"{path}: unreadable exported state ({exc})") from None
    if _params_checksum(params) != attrs["checksum"]:
        raise ckpt.CheckpointError(f"{path}: checksum mismatch (corrupt exported state)")
    text = input_toml.decode() if isinstance(input_toml, bytes) else str(input_toml)
    return ExportedState(int(attrs["step"]), params, text, str(attrs["physics_hash"]), attrs)
