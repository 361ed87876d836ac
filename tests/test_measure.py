"""The final measurement against the exact energy of the same parameters, and in the driver."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hpcvmc import checkpoint as ckpt
from hpcvmc import config as C
from hpcvmc.build import build
from hpcvmc.cli import main
from hpcvmc.driver import restore
from hpcvmc.measure import FINAL_FILE, final_measurement
from hpcvmc.parallel import SERIAL
from hpcvmc.reference import lattice_ed
from hpcvmc.stats import combine_steps
from hpcvmc.systems.lattice import marshall_log_sign
from test_cli import EXACT, tiny_input


def _perturbed(setup):
    return jax.tree_util.tree_map(
        lambda p: p + 0.1 * jax.random.normal(jax.random.PRNGKey(p.size), p.shape), setup.init_params())


def _dense_energy(setup, params) -> float:
    """<psi|H|psi> / <psi|psi> with the exact-diagonalization matrix (independent code path)."""
    basis = lattice_ed.sz0_basis(16)
    spins = jnp.asarray(np.where((basis[:, None] >> np.arange(16)) & 1, 1.0, -1.0))
    log_psi = np.asarray(setup.logpsi(params, spins) + marshall_log_sign(4, spins))
    psi = np.exp(log_psi - log_psi.real.max())
    H = lattice_ed.hamiltonian(4, 1.0, 0.5)
    return float(np.real(np.vdot(psi, H @ psi)) / np.vdot(psi, psi).real)


def test_exact_sampler_measurement_is_the_dense_energy(tmp_path):
    setup = build(C.load(tiny_input(tmp_path, "x", **EXACT)), SERIAL)
    params = _perturbed(setup)
    (tmp_path / "x").mkdir()
    result = final_measurement(setup, params, None, step=7, n_steps=3)
    assert result["energy"]["mean"] == pytest.approx(_dense_energy(setup, params), rel=1e-12)
    assert result["energy"]["error"] == 0.0 and result["n_samples"] == 12870
    assert json.loads((tmp_path / "x" / FINAL_FILE).read_text()) == result


def test_sampled_measurement_agrees_with_the_exact_energy_within_its_error(tmp_path):
    path = tiny_input(tmp_path, "m", **{"n_chains = 8\nn_samples = 64": "n_chains = 16\nn_samples = 256"})
    setup = build(C.load(path), SERIAL)
    params = _perturbed(setup)
    chains = jax.jit(lambda p: setup.sampler.init(setup.logpsi, p, jnp.asarray(setup.chain_ids)))(params)
    (tmp_path / "m").mkdir()
    result = final_measurement(setup, params, chains, step=1, n_steps=8)
    exact = _dense_energy(setup, params)
    error = result["energy"]["error"]
    # the variance includes |Im E_L|^2, the error bar is that of Re E: sqrt(var / N) bounds it loosely
    naive = np.sqrt(result["energy"]["variance"] / result["n_samples"])
    assert result["n_samples"] == 8 * 256 and 0.5 * naive < error < 5 * naive
    assert abs(result["energy"]["mean"] - exact) < 4 * error, (result, exact)


def test_combine_steps_takes_the_larger_of_the_two_error_estimates():
    mean, error, variance = combine_steps([1.0, 2.0], [0.1, 0.1], [3.0, 5.0])
    assert (mean, variance) == (1.5, 4.0)
    assert error == pytest.approx(0.5)  # spread of the step means, larger than sqrt(0.02)/2
    assert combine_steps([1.0], [0.2], [1.0])[1] == pytest.approx(0.2)


def test_driver_measures_once_at_the_end_and_again_when_the_result_is_missing(tmp_path, capsys):
    path = tiny_input(tmp_path, **{"steps = 4": "steps = 3\nmeasure_steps = 2"})
    assert main(["run", str(path)]) == 0
    final = tmp_path / "run" / FINAL_FILE
    first = json.loads(final.read_text())
    assert first["step"] == 3 and first["measure_steps"] == 2 and first["n_samples"] == 128
    assert "per site" in first["summary"]
    assert main(["run", str(path)]) == 0  # finished and measured: nothing to do
    assert "final measurement" not in capsys.readouterr().out.split("nothing to do")[-1]
    final.unlink()  # as if killed during the measurement
    assert main(["run", str(path)]) == 0
    assert json.loads(final.read_text()) == first  # the same streams: the same numbers
    assert main(["inspect", str(tmp_path / "run"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["final"] == first


def test_measure_command_measures_the_newest_checkpoint(tmp_path, capsys):
    """`hpcvmc measure` on a folder: the exact sampler gives the dense energy of its checkpoint."""
    path = tiny_input(tmp_path, **EXACT)
    assert main(["run", str(path)]) == 0
    assert main(["measure", str(tmp_path / "run")]) == 2  # measure_steps = 0 and no --steps
    assert "--steps" in capsys.readouterr().err
    assert main(["measure", str(tmp_path / "run"), "--steps", "1"]) == 0
    result = json.loads((tmp_path / "run" / FINAL_FILE).read_text())
    setup = build(C.load(path), SERIAL)
    snap = ckpt.newest_valid(tmp_path / "run")
    params = restore(setup, snap, tmp_path / "run" / "checkpoints" / ckpt.checkpoint_name(4)).params
    assert result["step"] == 4 and result["measure_steps"] == 1
    assert result["energy"]["mean"] == pytest.approx(_dense_energy(setup, params), rel=1e-12)
    capsys.readouterr()
    assert main(["measure", str(tmp_path / "run"), "--steps", "1"]) == 0
    assert "already holds" in capsys.readouterr().out
