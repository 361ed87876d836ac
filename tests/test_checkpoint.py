"""Checkpoints: exact resume, atomic writes under kill -9, signals, validation on load."""

import dataclasses
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import jax
import numpy as np
import pytest

from hpcvmc import checkpoint as ckpt
from hpcvmc import config as C
from hpcvmc.build import build
from hpcvmc.cli import main
from hpcvmc.driver import fresh_state, prepare_output, save_checkpoint
from hpcvmc.errors import InputError
from hpcvmc.parallel import SERIAL
from test_cli import history, tiny_input

REPO = Path(__file__).parents[1]


def final_params(run_dir: Path) -> dict[str, np.ndarray]:
    snap = ckpt.read(ckpt.list_checkpoints(run_dir)[0])
    return snap.params


def test_resume_is_bit_for_bit(tmp_path, capsys):
    """2n steps straight vs n steps + resume + n steps: identical parameters and history."""
    assert main(["run", str(tiny_input(tmp_path, "straight"))]) == 0
    split = tiny_input(tmp_path, "split")
    assert main(["run", str(split), "--set", "run.steps=2"]) == 0
    assert ckpt.list_checkpoints(tmp_path / "split")[0].name == "step_00000002.h5"
    assert main(["run", str(split)]) == 0  # resumes automatically, run length may change
    assert "input changed since the checkpoint: run.steps: 2 -> 4" in capsys.readouterr().out
    a, b = history(tmp_path / "straight"), history(tmp_path / "split")
    np.testing.assert_array_equal(a["step"], b["step"])
    for name in ("energy", "error", "variance", "acceptance", "update_norm"):
        np.testing.assert_array_equal(a[name], b[name])
    pa, pb = final_params(tmp_path / "straight"), final_params(tmp_path / "split")
    assert pa.keys() == pb.keys()
    for k in pa:
        np.testing.assert_array_equal(pa[k], pb[k])
    snap = ckpt.read(ckpt.list_checkpoints(tmp_path / "split")[0])
    np.testing.assert_array_equal(snap.history["energy"], b["energy"])


def test_checkpoint_lacking_a_history_column_resumes_with_nan_there(tmp_path):
    """A checkpoint from a version that did not log n_samples (simulated by removing it) resumes:
    its steps read NaN in that column, the new steps their sample count."""
    path = tiny_input(tmp_path)
    assert main(["run", str(path), "--set", "run.steps=2"]) == 0
    newest = ckpt.list_checkpoints(tmp_path / "run")[0]
    snap = ckpt.read(newest)
    np.testing.assert_array_equal(snap.history["n_samples"], [64, 64])
    del snap.history["n_samples"]
    assert ckpt.save(snap, tmp_path / "run", keep=1) == newest
    assert "n_samples" not in ckpt.read(newest).history
    assert main(["run", str(path), "--set", "sampler.n_samples=128"]) == 0
    np.testing.assert_array_equal(history(tmp_path / "run")["n_samples"], [np.nan] * 2 + [128] * 2)


def test_keep_newest_and_plain_h5py_layout(tmp_path):
    path = tiny_input(tmp_path, **{"checkpoint_every = 2": "checkpoint_every = 1\nkeep_checkpoints = 2"})
    assert main(["run", str(path)]) == 0
    files = ckpt.list_checkpoints(tmp_path / "run")
    assert [f.name for f in files] == ["step_00000004.h5", "step_00000003.h5"]
    with h5py.File(files[0]) as f:
        assert f["meta"].attrs["format_version"] == ckpt.FORMAT_VERSION
        assert f["meta"].attrs["step"] == 4 and f["meta"].attrs["n_ranks"] == 1
        assert f["sampler/x"].shape == (8, 16)
        assert f["history/energy"].shape == (4,)
        assert "L = 4" in f["meta/input_toml"][()].decode()


def test_truncated_newest_checkpoint_falls_back_to_previous(tmp_path, capsys):
    path = tiny_input(tmp_path, **{"checkpoint_every = 2": "checkpoint_every = 1"})
    assert main(["run", str(path), "--set", "run.steps=3"]) == 0
    newest = ckpt.list_checkpoints(tmp_path / "run")[0]
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])
    capsys.readouterr()
    assert main(["run", str(path), "--set", "run.steps=4"]) == 0
    out = capsys.readouterr().out
    assert f"skipping checkpoint {newest}" in out and "resuming" in out and "from step 2" in out
    h = history(tmp_path / "run")
    np.testing.assert_array_equal(h["step"], [1, 2, 3, 4])  # no row lost or duplicated


def test_corrupt_checkpoint_fails_checksum(tmp_path):
    assert main(["run", str(tiny_input(tmp_path))]) == 0
    newest = ckpt.list_checkpoints(tmp_path / "run")[0]
    with h5py.File(newest, "r+") as f:
        f["history/energy"][0] += 1.0
    with pytest.raises(ckpt.CheckpointError, match="checksum mismatch"):
        ckpt.read(newest)
    with h5py.File(newest, "r+") as f:
        f["meta"].attrs["format_version"] = 99
    with pytest.raises(ckpt.CheckpointError, match="format version 99 is newer"):
        ckpt.read(newest)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = 1
    with pytest.raises(ckpt.CheckpointError, match="not an hpcvmc checkpoint"):
        ckpt.read(foreign)


def test_checkpoint_of_other_lattice_is_refused(tmp_path, capsys):
    assert main(["run", str(tiny_input(tmp_path))]) == 0
    newest = ckpt.list_checkpoints(tmp_path / "run")[0]
    other = tiny_input(tmp_path, "other", **{"L = 4": "L = 6"})
    capsys.readouterr()
    assert main(["run", str(other), "--restart", str(newest)]) == 2
    err = capsys.readouterr().err
    assert "different system/model (system.L differ)" in err and str(newest) in err
    assert not (tmp_path / "other").exists()
    model = tiny_input(tmp_path, "model", **{"alpha = 1": "alpha = 2"})
    assert main(["run", str(model), "--restart", str(newest)]) == 2


def test_checkpoint_with_same_keys_but_other_hash_names_init_params(tmp_path, capsys):
    """A checkpoint whose physics hash came from another version (same keys) is refused with
    a message that says how to go on, not an empty list of differing keys."""
    assert main(["run", str(tiny_input(tmp_path))]) == 0
    snap = ckpt.read(ckpt.list_checkpoints(tmp_path / "run")[0])
    foreign = ckpt.save(dataclasses.replace(snap, physics_hash="0" * 64), tmp_path / "old", 1)
    capsys.readouterr()
    assert main(["run", str(tiny_input(tmp_path, "again")), "--restart", str(foreign)]) == 2
    err = capsys.readouterr().err
    assert "physics hash of another hpcvmc version" in err and "run.init_params" in err
    assert "()" not in err and err.count("\n") == 1


KILL_IN_WRITE = """
import os, signal, sys
import h5py
from hpcvmc.cli import main
real_create = h5py.Group.create_dataset
calls = []
def create_dataset(self, name, *args, **kwargs):
    calls.append(name)
    if name == "history/energy" and calls.count(name) == 2:  # halfway through the 2nd checkpoint
        os.kill(os.getpid(), signal.SIGKILL)
    return real_create(self, name, *args, **kwargs)
h5py.Group.create_dataset = create_dataset
sys.exit(main(sys.argv[1:]))
"""


def test_kill_during_checkpoint_write_keeps_previous(tmp_path):
    path = tiny_input(tmp_path)
    proc = subprocess.run([sys.executable, "-c", KILL_IN_WRITE, "run", str(path)],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    files = ckpt.list_checkpoints(tmp_path / "run")
    assert [f.name for f in files] == ["step_00000002.h5"]
    ckpt.read(files[0])  # intact
    assert len(list((tmp_path / "run" / "checkpoints").glob(".step_*"))) == 1  # the dead write
    assert main(["run", str(path)]) == 0
    assert ckpt.read(ckpt.list_checkpoints(tmp_path / "run")[0]).step == 4
    assert len(history(tmp_path / "run")) == 4
    assert not list((tmp_path / "run" / "checkpoints").glob(".step_*"))  # cleaned up


def test_sigterm_checkpoints_the_current_step(tmp_path):
    path = tiny_input(tmp_path, **{"steps = 4": "steps = 100000",
                                   "checkpoint_every = 2": "checkpoint_every = 100000"})
    proc = subprocess.Popen([sys.executable, "-m", "hpcvmc", "run", str(path)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    csv = tmp_path / "run" / "history.csv"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if csv.exists() and len(csv.read_text().splitlines()) >= 3:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err[-2000:]
    snap = ckpt.read(ckpt.list_checkpoints(tmp_path / "run")[0])
    assert snap.step >= 2 and snap.step == len(history(tmp_path / "run"))
    assert "stopped by signal" in out


MOIRE_SLATER = """
[system]
type = "moire"
sites = 3
n_electrons = 2
[model]
type = "slater"
g_max = 1.0
jastrow = true
[sampler]
type = "gaussian"
n_chains = 4
n_samples = 8
burn_in = 1
[optimizer]
type = "minsr"
[run]
steps = 1
"""


def test_init_params_extends_a_model_with_new_parameters_at_their_initial_values(tmp_path):
    """run.init_params from a Slater-Jastrow checkpoint into the same model with plane-wave
    Jastrow terms: every stored parameter is taken, the new one keeps its initial zeros and is
    named; a stored parameter that the model lacks is refused (the reverse direction)."""

    def setup_of(name: str, *overrides: str):
        out = f"run.output={json.dumps(str(tmp_path / name))}"
        return build(C.loads(MOIRE_SLATER, overrides=[out, *overrides]), SERIAL)

    source = setup_of("source")
    stored = jax.tree_util.tree_map(lambda p: p + 0.25, source.init_params())
    save_checkpoint(source, fresh_state(source, stored)._replace(step=7))
    init = f"run.init_params={json.dumps(str(tmp_path / 'source'))}"
    said: list[str] = []
    state = prepare_output(setup_of("target", "model.jastrow_shells=2", init), None, said.append)
    params = dict(state.params)
    np.testing.assert_array_equal(params.pop("jastrow_plane_waves"), np.zeros((2, 2)))
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(np.array_equal, params, dict(stored)))
    assert any("step 7" in line for line in said)
    assert any("kept at their initial values: jastrow_plane_waves" in line for line in said)
    save_checkpoint(setup_of("target", "model.jastrow_shells=2"), state)
    back = f"run.init_params={json.dumps(str(tmp_path / 'target'))}"
    with pytest.raises(InputError, match="run.init_params: .*entries the model lacks"):
        prepare_output(setup_of("back", back), None, said.append)
