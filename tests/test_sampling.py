"""Samplers against exact |psi|^2 on a space small enough to enumerate; symmetry orbits."""

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from hpcvmc.models.rbm import RBM
from hpcvmc.parallel import SERIAL
from hpcvmc.metropolis import Metropolis
from hpcvmc.sampling import ExactSampler, ExchangeMoves
from hpcvmc.systems.lattice import (
    J1J2,
    space_group_with_spin_flip,
    symmetry_orbits,
    sz0_configurations,
)


def _model_and_params(n_sites: int, scale: float = 0.6):
    model = RBM(alpha=2)
    params = model.init(jax.random.PRNGKey(0), jnp.ones((1, n_sites)))["params"]
    params = jax.tree_util.tree_map(
        lambda p: scale * jax.random.normal(jax.random.PRNGKey(p.size), p.shape), params)
    return (lambda p, x: model.apply({"params": p}, x)), params


def _exact_probabilities(logpsi, params, states):
    logp = 2 * np.asarray(logpsi(params, jnp.asarray(states))).real
    p = np.exp(logp - logp.max())
    return p / p.sum()


def test_exchange_sampler_chi_square():
    """Histogram of samples on the 6-state Sz = 0 sector of 4 spins vs |psi|^2 (chi-square)."""
    system = J1J2(L=2)
    logpsi, params = _model_and_params(4)
    states = sz0_configurations(4)
    p_exact = _exact_probabilities(logpsi, params, states)
    assert p_exact.max() / p_exact.min() > 3  # a non-trivial distribution
    sampler = Metropolis(rule=ExchangeMoves(n_sites=4, pairs=system.exchange_pairs()), n_chains=256,
                         samples_per_chain=4, sweeps=3, burn_in=20, discard=0, seed=7)
    chains = jnp.arange(256)
    state = sampler.init(logpsi, params, chains)
    step = jax.jit(lambda st, k: sampler.sample(logpsi, params, st, chains, k))
    samples = []
    for k in range(8):
        batch, state = step(state, k)
        samples.append(np.asarray(batch.x).reshape(-1, 4))
    x = np.concatenate(samples)
    index = {tuple(s): i for i, s in enumerate(states)}
    counts = np.bincount([index[tuple(s)] for s in x], minlength=len(states))
    chi2, p_value = scipy.stats.chisquare(counts, p_exact * len(x))
    assert p_value > 1e-4, (counts, p_exact * len(x), chi2)


def test_exchange_sampler_conserves_sz_and_is_rank_independent():
    """Chain c draws the same samples whether simulated alone or with others."""
    system = J1J2(L=4)
    logpsi, params = _model_and_params(16, scale=0.1)
    sampler = Metropolis(rule=ExchangeMoves(n_sites=16, pairs=system.exchange_pairs()), n_chains=8,
                         samples_per_chain=3, sweeps=1, burn_in=5, discard=1, seed=3)
    all_chains = jnp.arange(8)
    full, _ = sampler.sample(logpsi, params, sampler.init(logpsi, params, all_chains), all_chains, 2)
    half_ids = all_chains[4:]
    half, _ = sampler.sample(logpsi, params, sampler.init(logpsi, params, half_ids), half_ids, 2)
    np.testing.assert_array_equal(np.asarray(full.x)[4:], np.asarray(half.x))
    assert np.all(np.asarray(full.x).sum(axis=-1) == 0)


def test_exact_sampler_weights_are_born_probabilities():
    logpsi, params = _model_and_params(4)
    sampler = ExactSampler.from_states(sz0_configurations(4), np.ones(6), SERIAL)
    batch, _ = sampler.sample(logpsi, params, None, jnp.arange(0), 0)
    np.testing.assert_allclose(
        np.asarray(batch.weights[0]), _exact_probabilities(logpsi, params, sampler.configurations),
        rtol=1e-12)


def test_samples_do_not_depend_on_a_constant_added_to_log_psi():
    """The chains carry log psi of the previous parameters; after an update that shifts log psi
    by a constant (|psi|^2 unchanged up to normalization) the samples must be the same."""
    system = J1J2(L=4)
    logpsi, params = _model_and_params(16, scale=0.3)
    sampler = Metropolis(rule=ExchangeMoves(n_sites=16, pairs=system.exchange_pairs()), n_chains=8,
                         samples_per_chain=4, sweeps=1, burn_in=5, discard=0, seed=3)
    chains = jnp.arange(8)
    state = sampler.init(logpsi, params, chains)
    for shift in (-30.0, 30.0):
        def shifted(p, x, shift=shift):
            return logpsi(p, x) + shift

        same, _ = sampler.sample(logpsi, params, state, chains, 1)
        moved, new_state = sampler.sample(shifted, params, state, chains, 1)
        np.testing.assert_array_equal(np.asarray(moved.x), np.asarray(same.x))
        np.testing.assert_allclose(np.asarray(new_state.logpsi),
                                   np.asarray(shifted(params, new_state.x)), rtol=1e-12)
    assert len({tuple(c) for c in np.asarray(same.x).reshape(-1, 16)}) > 8  # the chains move


def test_symmetry_orbits_match_burnside_and_stabilizers():
    """Orbit count = (1/|G|) sum_g |Fix(g)| (Burnside); each orbit size = |G| / |Stab(r)|."""
    side = 4
    representatives, sizes = symmetry_orbits(side)
    states = sz0_configurations(side * side)
    ops = list(zip(*space_group_with_spin_flip(side)))
    assert len({(tuple(p), f) for p, f in ops}) == len(ops) == 256
    fixed = sum(np.sum(np.all(flip * states[:, perm] == states, axis=1)) for perm, flip in ops)
    assert fixed % len(ops) == 0 and len(representatives) == fixed // len(ops) == 107
    stabilizers = sum(np.all(flip * representatives[:, perm] == representatives, axis=1)
                      for perm, flip in ops)
    np.testing.assert_array_equal(sizes, len(ops) // stabilizers)
    assert sizes.sum() == len(states) and np.all(representatives.sum(axis=1) == 0)

