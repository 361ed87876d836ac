"""Exported states: the round trip from a checkpoint, refusals, and the shipped states in
results/ re-measured against the numbers they were exported with."""

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from hpcvmc import checkpoint as ckpt
from hpcvmc import config, export
from hpcvmc.cli import main
from hpcvmc.measure import FINAL_FILE
from test_cli import tiny_input

RESULTS = Path(__file__).parents[1] / "results"
EXACT_4X4 = -8.4579234  # Lanczos ground state of the 4 x 4 J1-J2 model at J2 = 0.5 (hpcvmc exact)
EXACT_6X6_PER_SITE = -0.503810  # 6 x 6 at J2 = 0.5, exact diagonalization (docs/physics.md)


def _finished_run(tmp_path, name="run"):
    path = tiny_input(tmp_path, name, **{"steps = 4": "steps = 2\nmeasure_steps = 1"})
    assert main(["run", str(path)]) == 0
    return tmp_path / name


@pytest.fixture(scope="module")
def mc_state(tmp_path_factory):
    """A finished 2-step Monte Carlo run of the tiny RBM input and its exported state."""
    tmp_path = tmp_path_factory.mktemp("mc")
    run = _finished_run(tmp_path)
    assert main(["export", str(run), str(tmp_path / "state.h5")]) == 0
    return run, tmp_path / "state.h5"


def test_export_holds_the_checkpoint_parameters_bit_for_bit_and_nothing_else(mc_state):
    run, out = mc_state
    snap = ckpt.newest_valid(run)
    final = json.loads((run / FINAL_FILE).read_text())
    with h5py.File(out, "r") as f:
        assert set(f) == {"meta", "params"}  # no chains, optimizer state or history
        assert set(f["params"]) == {"values", "layout"}  # format version 2: one flat dataset
        assert "format_version" not in f["meta"].attrs  # not to be taken for a checkpoint
        attrs = dict(f["meta"].attrs)
        assert f["meta/input_toml"][()].decode() == snap.input_toml
    stored = export.read(out).params
    assert stored.keys() == snap.params.keys() and snap.opt_state  # the checkpoint had more
    for name, value in snap.params.items():
        assert stored[name].dtype == value.dtype and stored[name].tobytes() == value.tobytes()
    assert attrs["step"] == snap.step == 2 and attrs["physics_hash"] == snap.physics_hash
    assert attrs["final_energy"] == final["energy"]["mean"] and attrs["final_n_samples"] == 64
    with pytest.raises(ckpt.CheckpointError, match="not an hpcvmc checkpoint"):
        ckpt.read(out)  # a resume from an exported file is refused


def test_export_refuses_an_existing_file_and_a_folder_that_is_no_run(tmp_path, mc_state, capsys):
    run, state = mc_state
    out = tmp_path / "state.h5"
    out.write_bytes(b"keep me")
    capsys.readouterr()
    assert main(["export", str(run), str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hpcvmc: error:") and "--force" in err and err.count("\n") == 1
    assert out.read_bytes() == b"keep me"
    assert main(["export", str(run), str(out), "--force"]) == 0
    assert out.read_bytes() == state.read_bytes()
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk.h5").write_bytes(b"keep me")
    for bad in (tmp_path / "empty", tmp_path / "missing", tmp_path / "junk.h5"):
        assert main(["export", str(bad), str(tmp_path / "x.h5")]) == 2
        assert capsys.readouterr().err.count("\n") == 1
    no_ckpt = tmp_path / "no_ckpt"
    no_ckpt.mkdir()
    (no_ckpt / "input.toml").write_text((run / "input.toml").read_text())
    assert main(["export", str(no_ckpt), str(tmp_path / "x.h5")]) == 2
    assert not (tmp_path / "x.h5").exists()


def test_measure_refuses_another_physics_and_an_output_folder_holding_a_run(tmp_path, mc_state,
                                                                          capsys):
    run, out = mc_state
    capsys.readouterr()
    assert main(["measure", str(out), "--set", "system.J2=0.3", "--out", str(tmp_path / "j")]) == 2
    assert "system.J2" in capsys.readouterr().err
    before = (run / FINAL_FILE).read_bytes()
    assert main(["measure", str(out), "--out", str(run)]) == 2
    assert (run / FINAL_FILE).read_bytes() == before


def test_sampled_measurement_of_an_exported_state_is_deterministic(tmp_path, mc_state):
    results = []
    for name in ("a", "b"):
        assert main(["measure", str(mc_state[1]), "--steps", "2", "--out", str(tmp_path / name)]) == 0
        results.append(json.loads((tmp_path / name / FINAL_FILE).read_text()))
    assert results[0] == results[1] and results[0]["n_samples"] == 128


def test_corrupt_exported_state_is_refused(tmp_path, mc_state, capsys):
    out = tmp_path / "state.h5"
    out.write_bytes(mc_state[1].read_bytes())
    with h5py.File(out, "r+") as f:
        f["params/values"][0] += 1.0
    capsys.readouterr()
    assert main(["measure", str(out), "--out", str(tmp_path / "m")]) == 2
    assert "checksum" in capsys.readouterr().err
    with h5py.File(out, "r+") as f:
        layout = json.loads(f["params/layout"][()])
        del f["params/layout"]
        f["params/layout"] = json.dumps(layout[1:])  # a leaf fewer than the values hold
    assert main(["measure", str(out), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "unreadable exported state" in err and str(out) in err and err.count("\n") == 1


def test_a_version_1_state_is_read_and_rewritten_in_version_2_unchanged(tmp_path, mc_state):
    """Version 1 (one dataset per leaf, written here by hand) is still read; ``hpcvmc export
    OLD.h5 NEW.h5`` rewrites it with the same parameters, input and provenance."""
    state = export.read(mc_state[1])
    old = tmp_path / "old.h5"
    with h5py.File(old, "w") as f:
        f.create_group("meta").attrs.update(dict(state.attrs, export_format_version=1))
        f["meta/input_toml"] = state.input_toml
        for name, value in state.params.items():
            f[f"params/{name}"] = value
    assert len(state.params) > 2 and export.read(old).params.keys() == state.params.keys()
    assert main(["export", str(old), str(tmp_path / "new.h5")]) == 0
    new = export.read(tmp_path / "new.h5")
    assert new.attrs["export_format_version"] == 2 and new.attrs == state.attrs
    assert new.input_toml == state.input_toml and new.step == state.step
    for name, value in state.params.items():
        assert new.params[name].shape == value.shape
        assert new.params[name].tobytes() == value.tobytes()
    assert (tmp_path / "new.h5").stat().st_size < old.stat().st_size


def _shipped(name):
    path = RESULTS / f"{name}.h5"
    if not path.is_file():
        pytest.fail(f"{path} is missing")
    return path, export.read(path).attrs


def test_shipped_4x4_exact_sum_state_gives_its_energy_exactly(tmp_path):
    """measure and run.init_params with run.steps = 0: the exact orbit sum of the stored
    parameters, deterministic, equal to the run's own final measurement."""
    path, attrs = _shipped("vit_4x4_factored")
    assert main(["measure", str(path), "--out", str(tmp_path / "m")]) == 0
    result = json.loads((tmp_path / "m" / FINAL_FILE).read_text())
    assert result["energy"]["error"] == 0.0 and result["n_samples"] == 107
    assert result["energy"]["mean"] == pytest.approx(attrs["final_energy"], rel=1e-10)
    # a variational energy: above the exact ground state, and within 1e-5 of it
    assert EXACT_4X4 - 1e-7 < result["energy"]["mean"] < EXACT_4X4 * (1 - 1e-5)
    job = tmp_path / "job.toml"
    job.write_text(export.read(path).input_toml)
    assert main(["run", str(job), "--set", f"run.output={json.dumps(str(tmp_path / 'ft'))}",
                 "--set", f"run.init_params={json.dumps(str(path))}", "--set", "run.steps=0"]) == 0
    again = json.loads((tmp_path / "ft" / FINAL_FILE).read_text())["energy"]["mean"]
    assert again == pytest.approx(attrs["final_energy"], rel=1e-10)


def test_shipped_9site_psiformer_state_agrees_with_its_table_value(tmp_path):
    """A short measurement (2,048 samples) against the exported 10,240-sample final energy."""
    path, attrs = _shipped("psiformer_9sites_eps10")
    assert main(["measure", str(path), "--steps", "4", "--out", str(tmp_path / "m"),
                 "--set", "sampler.n_chains=64", "--set", "sampler.burn_in=100"]) == 0
    energy = json.loads((tmp_path / "m" / FINAL_FILE).read_text())["energy"]
    sigma = np.hypot(energy["error"], attrs["final_error"])
    assert abs(energy["mean"] - attrs["final_energy"]) < 3 * sigma, (energy, attrs["final_energy"])
    assert energy["error"] < 0.1  # E0 total (6 electrons): ~0.06 meV per electron


def test_shipped_6x6_vit_state_agrees_with_its_table_value(tmp_path):
    """The 6 x 6 factored ViT before the symmetry projection: a short measurement (512 samples
    from 32 fresh chains after 20 sweeps) against its 20,480-sample final energy, which lies
    above the exact ground state."""
    path, attrs = _shipped("vit_6x6_factored")
    assert attrs["final_n_samples"] == 20480 and attrs["final_energy"] > 36 * EXACT_6X6_PER_SITE
    assert main(["measure", str(path), "--steps", "2", "--out", str(tmp_path / "m"),
                 "--set", "sampler.n_chains=32", "--set", "sampler.n_samples=256",
                 "--set", "sampler.burn_in=20"]) == 0
    energy = json.loads((tmp_path / "m" / FINAL_FILE).read_text())["energy"]
    sigma = np.hypot(energy["error"], attrs["final_error"])
    assert abs(energy["mean"] - attrs["final_energy"]) < 3 * sigma, (energy, attrs["final_energy"])
    assert energy["error"] < 0.05  # J1 total (36 sites): 1.4e-3 per site


def test_every_shipped_state_is_listed_and_matches_todays_physics_hash():
    """Each file in results/ is named in results/README.md (directly or by the brace pattern of
    the transition states) and its stored physics hash equals that of its stored input read by
    this version, so its verify command and ``run.init_params`` accept it; the folder stays
    under the 5 MB that issue 24 allows."""
    listing = (RESULTS / "README.md").read_text()
    states = sorted(RESULTS.glob("*.h5"))
    assert len(states) >= 10
    for path in states:
        named = f"`{path.name}`" in listing or path.name.startswith("transition_9sites_")
        assert named, f"{path.name} is not listed in results/README.md"
        state = export.read(path)
        assert config.loads(state.input_toml).physics_hash() == state.physics_hash, path.name
    assert sum(p.stat().st_size for p in RESULTS.iterdir()) < 5_000_000
