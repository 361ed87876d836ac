"""Gaussian-move Metropolis on the torus: |psi|^2 reproduced, rank independence, adaptation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hpcvmc import config as C
from hpcvmc.continuum_sampling import GaussianMoves
from hpcvmc.metropolis import Metropolis
from hpcvmc.models import slater
from hpcvmc.systems import moire

ONE_SITE = [[1, 0], [0, 1]]


def _setup(n_electrons=1, supercell=ONE_SITE, **sampler_keys):
    system = moire.from_config(moire.MoireConfig(supercell=supercell, n_electrons=n_electrons, U=1.0))
    model = slater.from_config(slater.SlaterConfig(g_max=1.0), system)
    params = model.init(jax.random.PRNGKey(0), jnp.ones((1, n_electrons, 2)))["params"]
    keys = dict(samples_per_chain=50, sweeps=2, burn_in=50, discard=0, seed=7)
    rule_keys = {k: sampler_keys.pop(k) for k in ("move", "width", "target_acceptance")
                 if k in sampler_keys}
    keys.update(sampler_keys)
    rule = GaussianMoves(cell=system.cell, n_electrons=n_electrons, **rule_keys)
    sampler = Metropolis(rule=rule, n_chains=32, **keys)
    return system, model, params, sampler


def _logpsi(model):
    return lambda p, x: model.apply({"params": p}, x)


@pytest.mark.parametrize("move", ["all", "one"])
def test_one_electron_histogram_matches_psi_squared(move):
    """Chi-square of a 4 x 4 histogram of fractional coordinates against |psi|^2 on the bins."""
    system, model, params, sampler = _setup(samples_per_chain=150, sweeps=3, move=move)
    logpsi = _logpsi(model)
    chain_ids = jnp.arange(32)
    state = jax.jit(lambda p: sampler.init(logpsi, p, chain_ids))(params)
    batch, _ = jax.jit(lambda p, s: sampler.sample(logpsi, p, s, chain_ids, 0))(params, state)
    frac = np.asarray(batch.x).reshape(-1, 2) @ np.linalg.inv(system.cell)
    assert np.all((frac >= 0) & (frac < 1))
    m, fine = 4, 24
    observed = np.histogram2d(frac[:, 0], frac[:, 1], bins=m, range=[[0, 1], [0, 1]])[0]
    s = (np.arange(m * fine) + 0.5) / (m * fine)
    grid = np.stack(np.meshgrid(s, s, indexing="ij"), axis=-1).reshape(-1, 1, 2) @ system.cell
    weight = np.exp(2 * np.real(np.asarray(logpsi(params, jnp.asarray(grid)))))
    expected = weight.reshape(m, fine, m, fine).sum(axis=(1, 3))
    expected *= frac.shape[0] / expected.sum()
    chi2 = np.sum((observed - expected) ** 2 / expected)
    uniform = np.full_like(expected, frac.shape[0] / m**2)
    chi2_uniform = np.sum((observed - uniform) ** 2 / uniform)
    dof = m * m - 1
    assert chi2 < 3.0 * dof, (chi2, dof)  # factor ~2 tau for correlated samples
    assert chi2_uniform > 50 * dof  # the test can tell |psi|^2 from a flat distribution


def test_chains_do_not_depend_on_their_neighbours():
    """Chain 4 gives the same samples alone as among chains 0..5 (any rank count)."""
    system, model, params, sampler = _setup(n_electrons=3, supercell=[[1, 1], [2, -1]],
                                            samples_per_chain=5, burn_in=20, discard=2)
    logpsi = _logpsi(model)
    results = []
    for ids in (jnp.arange(6), jnp.asarray([4])):
        state = jax.jit(lambda p, ids=ids: sampler.init(logpsi, p, ids))(params)
        batch, state = jax.jit(lambda p, s, ids=ids: sampler.sample(logpsi, p, s, ids, 3))(params, state)
        results.append((batch.x, state))
    (x_all, s_all), (x_one, s_one) = results
    np.testing.assert_allclose(x_all[4], x_one[0], rtol=1e-12, atol=1e-12)
    for a, b in zip(s_all, s_one):
        np.testing.assert_allclose(np.asarray(a)[4], np.asarray(b)[0], rtol=1e-12, atol=1e-12)


def test_width_adapts_toward_the_target_acceptance():
    system, model, params, sampler = _setup(n_electrons=3, supercell=[[1, 1], [2, -1]],
                                            width=3.0, burn_in=150, target_acceptance=0.5)
    logpsi = _logpsi(model)
    ids = jnp.arange(8)
    state = jax.jit(lambda p: sampler.init(logpsi, p, ids))(params)
    assert np.all(np.asarray(state.width) < 1.0)
    _, after = jax.jit(lambda p, s: sampler.sample(logpsi, p, s, ids, 0))(params, state)
    rate = np.sum(after.accepted - state.accepted) / np.sum(after.proposed - state.proposed)
    assert 0.3 < rate < 0.7, rate
    assert set(GaussianMoves.State._fields) >= {"x", "logpsi", "accepted", "proposed", "width"}


def test_samples_do_not_depend_on_a_constant_added_to_log_psi():
    """As for the exchange sampler: the state's log psi belongs to the previous parameters and
    must be recomputed, or a constant shift of log psi freezes (or frees) every chain."""
    system, model, params, sampler = _setup(n_electrons=3, supercell=[[1, 1], [2, -1]],
                                            samples_per_chain=4, burn_in=20)
    logpsi = _logpsi(model)
    ids = jnp.arange(6)
    state = sampler.init(logpsi, params, ids)
    same, same_state = sampler.sample(logpsi, params, state, ids, 1)
    for shift in (-30.0, 30.0):
        moved, new_state = sampler.sample(lambda p, x, s=shift: logpsi(p, x) + s, params, state,
                                          ids, 1)
        np.testing.assert_allclose(np.asarray(moved.x), np.asarray(same.x), rtol=0, atol=1e-12)
        np.testing.assert_array_equal(np.asarray(new_state.accepted), np.asarray(same_state.accepted))
