"""Moire electrons: potential, Coulomb, local energy against exact results, observables, driver."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hpcvmc import config as C
from hpcvmc import observables
from hpcvmc.cli import main
from hpcvmc.continuum_sampling import GaussianMoves
from hpcvmc.metropolis import Metropolis
from hpcvmc.models import slater
from hpcvmc.reference import bands, hf
from hpcvmc.systems import moire
from hpcvmc.systems.ewald import Ewald2D

ONE_SITE = [[1, 0], [0, 1]]


def _model(system, **keys):
    model = slater.from_config(slater.SlaterConfig(**keys), system)
    params = model.init(jax.random.PRNGKey(0), jnp.ones((1,) + system.config_shape))["params"]
    return model, params, (lambda p, x: model.apply({"params": p}, x))


def _walkers(system, n, seed=1):
    frac = jax.random.uniform(jax.random.PRNGKey(seed), (n,) + system.config_shape)
    return frac @ jnp.asarray(system.cell)


def test_potential_and_coulomb_terms():
    system = moire.from_config(moire.MoireConfig(sites=9, n_electrons=6, epsilon=5.0))
    x = _walkers(system, 3)
    expected = bands.moire_potential(np.asarray(x), system.params.V_E0, system.params.phi).sum(-1)
    np.testing.assert_allclose(system.potential_energy(x), expected, rtol=1e-12)
    coulomb = system.params.U * jax.jit(jax.vmap(Ewald2D(system.cell).energy))(x)
    np.testing.assert_allclose(jax.jit(system.coulomb_energy)(x), coulomb, rtol=1e-12)
    np.testing.assert_allclose(system.params.U, 10.6235, rtol=1e-5)
    np.testing.assert_allclose(system.params.E0_meV, 3.37556, rtol=1e-5)
    assert system.config_shape == (6, 2) and system.n_sites == 9


@pytest.mark.parametrize("polarized,n_electrons", [(True, 7), (False, 14)])
def test_free_electron_closed_shell_has_exact_energy_and_zero_variance(polarized, n_electrons):
    """V = U = 0: a determinant of the lowest plane-wave shells is an eigenstate of -1/2 nabla^2."""
    cfg = moire.MoireConfig(sites=9, n_electrons=n_electrons, spin_polarized=polarized, V_E0=0.0, U=0.0)
    system = moire.from_config(cfg)
    model, params, logpsi = _model(system, g_max=1.0)
    kinetic = 0.5 * np.sort(np.sum(model.orbitals.Q**2, axis=1))
    per_spin = n_electrons if polarized else n_electrons // 2
    exact = (1 if polarized else 2) * kinetic[:per_spin].sum()
    assert kinetic[per_spin] > kinetic[per_spin - 1] + 1e-6  # closed shell
    e_loc = jax.jit(lambda p, x: system.local_energy(logpsi, p, x))(params, _walkers(system, 8))
    np.testing.assert_allclose(e_loc, exact, rtol=1e-10, atol=1e-10)


def test_one_electron_band_orbital_has_the_band_energy_and_zero_variance():
    """U = 0, one electron on the one-site torus: the lowest Bloch state at Gamma (-11.99 meV).

    E_L is constant only when the orbital is an eigenfunction of h, not just of h projected on
    the basis: at g_max = 8 the outermost coefficients are ~1e-16 (at the default 4 of bands.py,
    ~1e-6, which leaves E_L fluctuations of ~1e-3 E0 while the eigenvalue is converged to 1e-10).
    """
    system = moire.from_config(moire.MoireConfig(supercell=ONE_SITE, n_electrons=1, U=0.0))
    _, params, logpsi = _model(system, g_max=8.0)
    e_loc = jax.jit(lambda p, x: system.local_energy(logpsi, p, x))(params, _walkers(system, 16))
    gamma = np.zeros((1, 2))
    band = bands.solve_bands(gamma, system.params.V_E0, system.params.phi, g_max=8.0).energies[0, 0]
    np.testing.assert_allclose(e_loc, band, rtol=1e-10)
    np.testing.assert_allclose(system.to_meV(band), -11.99, atol=0.005)


def _sample(system, logpsi, params, n_chains=32, samples_per_chain=64, seed=5):
    sampler = Metropolis(rule=GaussianMoves(cell=system.cell, n_electrons=system.n_electrons),
                         n_chains=n_chains, samples_per_chain=samples_per_chain, sweeps=4,
                         burn_in=100, discard=0, seed=seed)
    ids = jnp.arange(n_chains)

    @jax.jit
    def run(p):
        state = sampler.init(logpsi, p, ids)
        batch, _ = sampler.sample(logpsi, p, state, ids, 0)
        return batch.x

    return run(params)


def test_vmc_energy_of_the_hartree_fock_state_equals_the_hf_energy():
    """The same Hamiltonian and constants as hf.py: <E_L> of the HF determinant = E_HF[P]."""
    system = moire.from_config(moire.MoireConfig(sites=3, n_electrons=3, epsilon=10.0,
                                             chunk_size=4096))  # one chunk: no lax.map
    model, params, logpsi = _model(system, g_max=1.5, init="hf")
    occupied = model.orbitals.block("up")
    basis = hf.supercell_basis(system.params, 1.5)
    builder = hf.fock_builder(system.params, basis)
    P = occupied @ occupied.conj().T
    terms = hf.hf_energy_terms(hf.one_body_matrix(system.params, basis),
                               hf.hartree_matrix(builder, P), hf.exchange_matrix(builder, P), P)
    e_hf = sum(terms.values()) + 1.5 * system.params.U * hf.madelung_constant(system.cell)
    x = _sample(system, logpsi, params)
    e_loc = jax.jit(lambda p, w: system.local_energy(logpsi, p, w))(params, x.reshape(-1, 3, 2))
    chain_means = np.asarray(e_loc.real).reshape(x.shape[:2]).mean(axis=1)
    error = chain_means.std(ddof=1) / np.sqrt(len(chain_means))  # independent chains
    assert abs(chain_means.mean() - e_hf) < 4 * error, (chain_means.mean(), error, e_hf)


def test_observables_of_a_honeycomb_crystal(tmp_path):
    """Electrons exactly on sublattices 1 and 2 of the 9-site cell: |rho_K| = 1/2, S(0) = N."""
    system = moire.from_config(moire.MoireConfig(sites=9, n_electrons=6))
    geometry = observables.make_geometry(system, points_per_aM=6.0)
    honeycomb = geometry.sites[geometry.sublattice != 0]
    x = jnp.asarray(np.stack([honeycomb, honeycomb + 1e-3]))
    acc = observables.accumulate(observables.empty(geometry), x, geometry)
    obs = observables.finalize(acc, geometry, energy=(-30.0, 0.1, 2.0))
    bin_area = abs(np.linalg.det(system.cell)) / np.prod(geometry.grid)
    np.testing.assert_allclose(obs.density.sum() * bin_area, 6.0)
    assert len(obs.k_points) == 6
    np.testing.assert_allclose(obs.rho_K_abs, 0.5, atol=1e-2)
    np.testing.assert_allclose(obs.S_q[0], 6.0)
    path = observables.write_observables(tmp_path, obs)
    back = observables.read_observables(path)
    np.testing.assert_array_equal(back.density, obs.density)
    assert back.n_electrons == 6 and back.energy_E0 == -30.0
    assert all(p.stat().st_size > 0 for p in observables.plot_observables(tmp_path))


def _input(tmp_path, name, body, steps, extra=""):
    """Write body plus a [run] section with `steps` steps (and `extra` keys) into tmp_path/name.toml."""
    path = tmp_path / f"{name}.toml"
    path.write_text(body + f'[run]\nsteps = {steps}\nseed = 3\noutput = "{tmp_path / name}"\n' + extra)
    return path


ONE_ELECTRON = """
[system]
type = "moire"
supercell = [[1, 0], [0, 1]]
n_electrons = 1
U = 0.0
[model]
type = "slater"
g_max = 2.0
init_noise = 0.3
[sampler]
type = "gaussian"
n_chains = 16
n_samples = 256
sweeps = 2
burn_in = 50
[optimizer]
type = "minsr"
learning_rate = 0.3
diag_shift = 1e-3
"""


def test_driver_optimizes_one_electron_to_the_band_energy(tmp_path):
    """From perturbed orbitals to the lowest eigenvalue in the same plane-wave basis."""
    path = _input(tmp_path, "one", ONE_ELECTRON, steps=30)
    assert main(["run", str(path), "--every", "10"]) == 0
    h = np.genfromtxt(tmp_path / "one" / "history.csv", delimiter=",", names=True)
    params = moire.from_config(moire.MoireConfig(n_electrons=1)).params
    band = bands.solve_bands(np.zeros((1, 2)), params.V_E0, params.phi, g_max=2.0).energies[0, 0]
    last = slice(-10, None)
    error = np.sqrt(np.mean(h["error"][last] ** 2) / 10)
    assert h["variance"][0] > 10 * np.mean(h["variance"][last])
    assert abs(np.mean(h["energy"][last]) - band) < 4 * error + 0.02, (h["energy"][last], band)


TINY = """
[system]
type = "moire"
sites = 3
n_electrons = 2
spin_polarized = false
[model]
type = "slater"
g_max = 1.0
n_determinants = 2
init_noise = 0.1
jastrow = true
[sampler]
type = "gaussian"
n_chains = 8
n_samples = 32
sweeps = 2
burn_in = 10
move = "one"
[optimizer]
type = "minsr"
learning_rate = 0.02
"""


def test_driver_smoke_run_and_resume(tmp_path):
    path = _input(tmp_path, "tiny", TINY, steps=2)
    assert main(["run", str(path)]) == 0
    path = _input(tmp_path, "tiny", TINY, steps=3, extra="measure_steps = 2\n")
    assert main(["run", str(path)]) == 0  # resumes from the step-2 checkpoint, then measures
    run_dir = tmp_path / "tiny"
    h = np.genfromtxt(run_dir / "history.csv", delimiter=",", names=True)
    assert len(h["energy"]) == 3 and np.all(np.isfinite(h["energy"]))
    assert np.all((h["acceptance"] > 0) & (h["acceptance"] <= 1))
    final = json.loads((run_dir / "final.json").read_text())
    obs = observables.read_observables(run_dir / observables.OBSERVABLES_FILE)
    assert final["energy"]["mean"] == obs.energy_E0 and final["n_samples"] == obs.n_samples == 64
    assert "meV per electron" in final["summary"]
    assert main(["plot", str(run_dir)]) == 0
    assert all((run_dir / name).stat().st_size > 0
               for name in ("energy.png", "density.png", "structure_factor.png"))


HF_START = """
[system]
type = "moire"
sites = 3
n_electrons = 2
[model]
type = "slater"
g_max = 1.0
init = "hf"
[sampler]
type = "gaussian"
n_chains = 4
n_samples = 16
burn_in = 5
[optimizer]
type = "minsr"
learning_rate = 0.001
"""


def test_resume_does_not_solve_hartree_fock_again(tmp_path, monkeypatch):
    """The HF orbitals only seed fresh parameters: a resume takes them from the checkpoint."""
    assert main(["run", str(_input(tmp_path, "hf", HF_START, steps=1))]) == 0

    def refuse(*args, **kwargs):
        raise AssertionError("Hartree-Fock solved on a resume")

    monkeypatch.setattr(slater, "hf_orbitals", refuse)
    assert main(["run", str(_input(tmp_path, "hf", HF_START, steps=2))]) == 0
    h = np.genfromtxt(tmp_path / "hf" / "history.csv", delimiter=",", names=True)
    assert len(h["energy"]) == 2
