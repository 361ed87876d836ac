"""Slater model: antisymmetry, periodicity on the torus, basis and Hartree-Fock representation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hpcvmc import config as C
from hpcvmc.models import slater
from hpcvmc.reference import hf, hf_search
from hpcvmc.systems import moire


def _model(polarized, **model_keys):
    system = moire.from_config(moire.MoireConfig(sites=3, n_electrons=4, spin_polarized=polarized))
    cfg = slater.SlaterConfig(g_max=1.5, **model_keys)
    model = slater.from_config(cfg, system)
    params = model.init(jax.random.PRNGKey(0), jnp.ones((1, 4, 2)))["params"]
    return system, jax.jit(lambda x: model.apply({"params": params}, x))


def _phase_difference(a, b):
    """(a - b) imaginary part reduced to (-pi, pi]."""
    d = np.imag(a - b)
    return np.angle(np.exp(1j * d))


@pytest.mark.parametrize("polarized", [True, False])
@pytest.mark.parametrize("keys", [{}, {"jastrow": True, "n_determinants": 2, "init_noise": 0.5}],
                         ids=["one-det", "two-dets-jastrow"])
def test_swapping_equal_spins_flips_the_sign(polarized, keys):
    system, logpsi = _model(polarized, **keys)
    x = jax.random.uniform(jax.random.PRNGKey(1), (5, 4, 2)) * 2.0
    pairs = [(0, 1), (2, 3)] if not polarized else [(0, 1), (1, 3)]
    for i, j in pairs:
        swapped = x.at[:, [i, j]].set(x[:, [j, i]])
        a, b = np.asarray(logpsi(x)), np.asarray(logpsi(swapped))
        np.testing.assert_allclose(b.real, a.real, rtol=1e-10)
        np.testing.assert_allclose(np.abs(_phase_difference(b, a)), np.pi, atol=1e-9)


@pytest.mark.parametrize("polarized", [True, False])
def test_translating_an_electron_by_a_supercell_vector_leaves_psi_unchanged(polarized):
    system, logpsi = _model(polarized, jastrow=True, n_determinants=2, init_noise=0.5)
    x = jax.random.uniform(jax.random.PRNGKey(2), (5, 4, 2)) * 2.0
    reference = np.asarray(logpsi(x))
    L1, L2 = system.cell
    for electron in range(4):
        for shift in (L1, L2, 2 * L1 - 3 * L2):
            moved = np.asarray(logpsi(x.at[:, electron].add(jnp.asarray(shift))))
            np.testing.assert_allclose(moved.real, reference.real, rtol=1e-10)
            np.testing.assert_allclose(_phase_difference(moved, reference), 0.0, atol=1e-9)


def test_periodic_distance_is_the_distance_near_zero_and_periodic():
    cell = moire.from_config(moire.MoireConfig(sites=27, n_electrons=18)).cell
    r = np.array([[1e-3, 2e-3], [-3e-4, 1e-4]])
    d = np.asarray(slater.periodic_distance(jnp.asarray(r), cell))
    np.testing.assert_allclose(d, np.linalg.norm(r, axis=1), rtol=1e-5)
    far = np.array([0.7, -1.3])
    shifted = far + 2 * cell[0] - cell[1]
    np.testing.assert_allclose(slater.periodic_distance(jnp.asarray(shifted), cell),
                               slater.periodic_distance(jnp.asarray(far), cell), rtol=1e-12)


def test_jastrow_cusps_in_2d():
    """du/dr at r -> 0 is U for opposite spins and U/3 for equal spins (2D cusp conditions)."""
    U = 5.3
    cell = moire.from_config(moire.MoireConfig(sites=3, n_electrons=2)).cell
    Q = np.array([[0.0, 0.0], [1.0, 0.5]])
    for polarized, cusp in ((False, U), (True, U / 3)):
        up = np.eye(2)[:, : 2 if polarized else 1].astype(complex)
        orbitals = slater.Orbitals(Q=Q, n_up=up.shape[1], n_down=0 if polarized else 1,
                                   solve=lambda up=up: up)
        with_j, without = (slater.Slater(orbitals=orbitals, cell=cell, jastrow=j, U=U)
                           for j in (True, False))
        params = with_j.init(jax.random.PRNGKey(0), jnp.ones((1, 2, 2)))["params"]
        plain = {k: v for k, v in params.items() if not k.startswith("jastrow")}

        def jastrow(r, with_j=with_j, without=without, params=params, plain=plain):
            x = jnp.stack([jnp.array([0.3, 0.2]), jnp.array([0.3 + r, 0.2])])[None]
            diff = with_j.apply({"params": params}, x) - without.apply({"params": plain}, x)
            return diff[0].real

        np.testing.assert_allclose(jax.grad(jastrow)(1e-7), cusp, rtol=1e-5)


def test_reciprocal_shells_are_the_shells_of_the_triangular_lattice():
    """The 9-site cell's G != 0 by a brute-force search over integer combinations of the
    reciprocal basis: shells of |G|^2 / |G_1|^2 = 1, 3, 4, 7, 9, 12 (6, 6, 6, 12, 6, 6 vectors),
    every exp(i G . L) = 1."""
    cell = moire.from_config(moire.MoireConfig(sites=9, n_electrons=6)).cell
    G, shell = slater.reciprocal_shells(cell, 6)
    B = 2 * np.pi * np.linalg.inv(cell).T
    all_G = np.array([a * B[0] + b * B[1] for a in range(-9, 10) for b in range(-9, 10)])
    norm2 = np.round(np.sum(all_G**2, axis=1) / np.min(np.sum(G**2, axis=1)), 9)
    for s, (ratio, count) in enumerate(zip((1, 3, 4, 7, 9, 12), (6, 6, 6, 12, 6, 6))):
        assert np.sum(norm2 == ratio) == count == np.sum(shell == s)
        np.testing.assert_allclose(np.sum(G[shell == s]**2, axis=1) / np.sum(G[0]**2), ratio)
    np.testing.assert_allclose(np.exp(1j * G @ cell.T), 1.0, atol=1e-12)


@pytest.mark.parametrize("polarized", [True, False])
def test_plane_wave_jastrow_is_the_pair_sum_and_starts_at_zero(polarized):
    """log psi with jastrow_shells = 3 minus log psi without equals the direct double sum over
    pairs and G of a_{spins, shell} cos(G . r_ij); at initialization a = 0 and psi is unchanged;
    psi stays periodic."""
    system, logpsi_plain = _model(polarized, jastrow=True)
    model = slater.from_config(slater.SlaterConfig(g_max=1.5, jastrow=True, jastrow_shells=3),
                               system)
    params = dict(model.init(jax.random.PRNGKey(0), jnp.ones((1, 4, 2)))["params"])
    x = jax.random.uniform(jax.random.PRNGKey(4), (5, 4, 2)) * 2.0
    np.testing.assert_array_equal(params["jastrow_plane_waves"], np.zeros((2, 3)))
    np.testing.assert_allclose(model.apply({"params": params}, x), logpsi_plain(x), rtol=1e-14)
    a = np.array([[0.3, -0.2, 0.1], [-0.4, 0.25, 0.05]])
    params["jastrow_plane_waves"] = jnp.asarray(a)
    G, shell = slater.reciprocal_shells(system.cell, 3)
    n_up = 4 if polarized else 2
    direct = np.zeros(5)
    for i in range(4):
        for j in range(i + 1, 4):
            channel = 0 if (i < n_up) == (j < n_up) else 1
            r = np.asarray(x[:, i] - x[:, j])
            direct += np.cos(r @ G.T) @ a[channel, shell]
    got = model.apply({"params": params}, x)
    np.testing.assert_allclose(got - logpsi_plain(x), direct, rtol=1e-12, atol=1e-12)
    moved = model.apply({"params": params}, x.at[:, 1].add(jnp.asarray(system.cell[0])))
    np.testing.assert_allclose(moved.real, got.real, rtol=1e-10)


def test_plane_wave_jastrow_needs_the_jastrow():
    text = """
[system]
type = "moire"
sites = 3
n_electrons = 2
[model]
type = "slater"
g_max = 1.0
jastrow_shells = 2
[sampler]
type = "gaussian"
[optimizer]
type = "minsr"
[run]
steps = 1
"""
    with pytest.raises(C.InputError, match="model.jastrow_shells = 2 needs model.jastrow = true"):
        C.loads(text)


def test_basis_is_the_hartree_fock_basis():
    params = moire.from_config(moire.MoireConfig(sites=27, n_electrons=18)).params
    for g_max in (1.0, 3.0):
        ours = slater.initial_orbitals(params, g_max, "bands").Q
        np.testing.assert_array_equal(ours, hf.supercell_basis(params, g_max).Q)


def hf_energy(params, basis, P):
    """The Hartree-Fock energy functional E[P] (E0, total, with N U xi / 2) from hf.py's pieces."""
    builder = hf.fock_builder(params, basis)
    h = hf.one_body_matrix(params, basis)
    terms = hf.hf_energy_terms(h, hf.hartree_matrix(builder, P), hf.exchange_matrix(builder, P), P)
    madelung = 0.5 * params.n_electrons * params.U * hf.madelung_constant(params.cell)
    return sum(terms.values()) + madelung


def test_hf_initialization_is_the_lowest_hartree_fock_state():
    """init = 'hf': orthonormal orbitals on the HF basis whose energy is the lowest SCF energy."""
    params = moire.from_config(moire.MoireConfig(sites=3, n_electrons=3, epsilon=10.0)).params
    orbitals = slater.initial_orbitals(params, g_max=1.5, init="hf")
    occupied = orbitals.block("up")
    np.testing.assert_allclose(occupied.conj().T @ occupied, np.eye(3), atol=1e-10)
    basis = hf.supercell_basis(params, 1.5)
    reference = hf_search.run_hf(params, hf_search.SearchSettings(q_max=1.5))
    assert reference["converged"]
    np.testing.assert_allclose(hf_energy(params, basis, occupied @ occupied.conj().T),
                               reference["energy_E0"], rtol=1e-8)


def test_parameters_are_real_and_counted():
    system = moire.from_config(moire.MoireConfig(sites=9, n_electrons=6))
    model = slater.from_config(slater.SlaterConfig(g_max=3.0, n_determinants=2, init_noise=0.1,
                                              jastrow=True), system)
    params = model.init(jax.random.PRNGKey(0), jnp.ones((1, 6, 2)))["params"]
    n_q = len(model.orbitals.Q)
    assert n_q == len(hf.supercell_basis(system.params, 3.0).Q_int)
    leaves = jax.tree_util.tree_leaves(params)
    assert all(not jnp.iscomplexobj(leaf) for leaf in leaves)
    assert sum(leaf.size for leaf in leaves) == 2 * 2 * n_q * 6 + 2 * 2 + 2
