"""The Metropolis kernel and its move rules: the single-flip sampler against exact |psi|^2
(histogram, detailed balance, ergodicity), and the exchange and Gaussian rules through the
kernel against the numbers of the samplers they replace."""

import hashlib
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from hpcvmc.build import build
from hpcvmc.cli import main
from hpcvmc.config import InputError, load
from hpcvmc.continuum_sampling import GaussianMoves
from hpcvmc.metropolis import Metropolis
from hpcvmc.models import slater
from hpcvmc.models.rbm import RBM
from hpcvmc.parallel import SERIAL
from hpcvmc.sampling import (
    ExactSampler,
    ExchangeMoves,
    SpinFlipMoves,
    SpinFlipSamplerConfig,
    flip_from_config,
)
from hpcvmc.systems import moire
from hpcvmc.systems.lattice import J1J2
from test_cli import history, tiny_input

N_SITES = 6


def _rbm(n_sites: int, scale: float):
    model = RBM(alpha=2)
    params = model.init(jax.random.PRNGKey(0), jnp.ones((1, n_sites)))["params"]
    params = jax.tree_util.tree_map(
        lambda p: scale * jax.random.normal(jax.random.PRNGKey(p.size), p.shape), params)
    return (lambda p, x: model.apply({"params": p}, x)), params


def _all_states(n_sites: int) -> np.ndarray:
    """Every configuration of n spins, row r = the binary digits of r as +-1."""
    return np.where((np.arange(2**n_sites)[:, None] >> np.arange(n_sites)) & 1, 1.0, -1.0)


def _index(x: np.ndarray) -> np.ndarray:
    """Row of each configuration in :func:`_all_states`."""
    return ((x > 0) * (1 << np.arange(x.shape[-1]))).sum(axis=-1)


@pytest.fixture(scope="module")
def flip_run():
    """Samples of the flip sampler (from its config) and the exact distribution of the same psi."""
    logpsi, params = _rbm(N_SITES, scale=0.6)
    cfg = SpinFlipSamplerConfig(n_chains=128, n_samples=128 * 16, sweeps=1, burn_in=20)
    sampler = flip_from_config(cfg, SimpleNamespace(n_sites=N_SITES), seed=5, comm=SERIAL)
    assert isinstance(sampler.rule, SpinFlipMoves) and sampler.samples_per_step(SERIAL) == 2048
    exact = ExactSampler.from_states(_all_states(N_SITES), np.ones(2**N_SITES), SERIAL)
    batch, state = exact.sample(logpsi, params, None, jnp.arange(0), 0)
    assert state is None and exact.samples_per_step(SERIAL) == 2**N_SITES
    p_exact = np.asarray(batch.weights[0])
    ids = jnp.arange(cfg.n_chains)
    state = jax.jit(lambda p: sampler.init(logpsi, p, ids))(params)
    step = jax.jit(lambda st, k: sampler.sample(logpsi, params, st, ids, k))
    xs = []
    for k in range(6):
        batch, state = step(state, k)
        xs.append(np.asarray(batch.x))
    return np.concatenate(xs, axis=1), p_exact  # (chains, T, n_sites)


def test_flip_sampler_histogram_matches_psi_squared(flip_run):
    """Chi-square of the 64-state histogram (all magnetizations) against |psi|^2."""
    x, p_exact = flip_run
    assert p_exact.max() / p_exact.min() > 10  # a distribution far from uniform
    magnetization = _all_states(N_SITES).sum(axis=1)
    sectors = np.bincount((magnetization + N_SITES).astype(int) // 2, weights=p_exact)
    assert np.all(sectors > 1e-3)  # every sector of Sz carries weight
    counts = np.bincount(_index(x.reshape(-1, N_SITES)), minlength=2**N_SITES)
    expected = p_exact * counts.sum()
    chi2 = np.sum((counts - expected) ** 2 / expected)
    dof = 2**N_SITES - 1
    assert chi2 < 2.0 * dof, (chi2, dof)  # factor ~2 tau: consecutive samples are correlated
    uniform = np.full(2**N_SITES, counts.sum() / 2**N_SITES)
    assert np.sum((counts - uniform) ** 2 / uniform) > 20 * dof  # the test can tell


def test_flip_sampler_detailed_balance_and_ergodicity(flip_run):
    """One sweep is a reversible kernel: transitions x -> x' between consecutive samples are
    as frequent as x' -> x (pairwise test over all pairs); every chain moves between sectors
    of the magnetization, and the chains visit every configuration of more than 10 expected visits."""
    x, p_exact = flip_run
    idx = _index(x)
    before, after = idx[:, :-1].ravel(), idx[:, 1:].ravel()
    counts = np.zeros((2**N_SITES, 2**N_SITES))
    np.add.at(counts, (before, after), 1)
    upper = np.triu_indices(2**N_SITES, k=1)
    forward, backward = counts[upper], counts.T[upper]
    used = forward + backward > 0
    stat = np.sum((forward - backward)[used] ** 2 / (forward + backward)[used])
    p_value = scipy.stats.chi2.sf(stat, used.sum())
    assert p_value > 1e-4, (stat, used.sum())
    assert used.sum() > 300  # many distinct transitions were tested
    sectors = [len(np.unique(chain.sum(axis=-1))) for chain in x]
    assert min(sectors) >= 3, sectors  # every chain changes its magnetization
    likely = np.flatnonzero(p_exact * idx.size > 10)
    assert len(likely) > 20 and np.all(np.isin(likely, idx))


def test_flip_config_checks_the_sample_count():
    with pytest.raises(InputError, match="sampler.n_samples = 100 is not a multiple"):
        SpinFlipSamplerConfig(n_chains=64, n_samples=100).validate(None)


def test_flip_sampler_runs_from_the_input_and_resumes_bit_identically(tmp_path):
    """``[sampler] type = "flip"`` through the registry: 4 steps straight equal 2 steps, stop and
    resume to 4 (the flip chains are checkpointed and restored)."""
    flip = {'type = "exchange"': 'type = "flip"'}
    straight = tiny_input(tmp_path, "straight", **flip)
    setup = build(load(straight), SERIAL)
    assert isinstance(setup.sampler.rule, SpinFlipMoves) and len(setup.chain_ids) == 8
    assert main(["run", str(straight)]) == 0
    assert main(["run", str(tiny_input(tmp_path, "parts", **flip)), "--set", "run.steps=2"]) == 0
    assert main(["run", str(tiny_input(tmp_path, "parts", **flip))]) == 0
    a, b = history(tmp_path / "straight"), history(tmp_path / "parts")
    assert len(a) == 4 and np.all((a["acceptance"] > 0) & (a["acceptance"] < 1))
    for key in ("energy", "variance", "acceptance", "update_norm"):
        np.testing.assert_array_equal(a[key], b[key])


def test_exchange_rule_reproduces_the_exchange_sampler_it_replaced():
    """Numbers of ``hpcvmc.sampling.ExchangeSampler`` before the kernel existed (commit
    1b56378, this setup run there): sha256 of the samples as int8 and the move counters. The
    kernel must keep every random draw and every Metropolis decision."""
    model = RBM(alpha=2)
    params = model.init(jax.random.PRNGKey(0), jnp.ones((1, 16)))["params"]
    params = jax.tree_util.tree_map(
        lambda p: 0.3 * jax.random.normal(jax.random.PRNGKey(p.size), p.shape), params)
    logpsi = lambda p, x: model.apply({"params": p}, x)  # noqa: E731
    sampler = Metropolis(rule=ExchangeMoves(n_sites=16, pairs=J1J2(L=4).exchange_pairs()),
                         n_chains=4, samples_per_chain=3, sweeps=2, burn_in=4, discard=1, seed=11)
    ids = jnp.arange(4)
    start = sampler.init(logpsi, params, ids)
    batch, end = sampler.sample(logpsi, params, start, ids, 5)
    x = np.asarray(batch.x).astype(np.int8)
    assert hashlib.sha256(x.tobytes()).hexdigest() == (
        "fffbe75fb6783e9abc03fc336c8028e99ad64d591034779e94670ad1925d25fe")
    assert np.asarray(start.accepted).tolist() == [7, 5, 6, 5]
    assert np.asarray(start.proposed).tolist() == [28, 34, 24, 38]
    assert np.asarray(end.accepted).tolist() == [9, 12, 11, 10]
    assert np.asarray(end.proposed).tolist() == [84, 93, 76, 83]


# GaussianSampler at commit 1b56378, the setup below: x[2, 1] (chain 2, second sample), the
# widths after burn-in and after the step, accepted moves after the step.
GAUSSIAN_REFERENCE = {
    "all": ([0.05696279948074365, 1.42187110675558, 0.24042295873000252, 0.8468527042111894,
             1.3063042585074653, -0.060516555379357184],
            [0.244280551632034, 0.2, 0.1637461506155964],
            [0.2699717615152007, 0.18096748360719195, 0.1213061319425267], [15, 12, 9]),
    "one": ([0.8717960059665876, 0.028893107054903333, 0.6531921912200804, 0.8959352634499704,
             0.35208797579052115, 1.5021363490298534],
            [0.24428055163203402, 0.22852616235914455, 0.244280551632034],
            [0.2525604686587603, 0.28858337333106737, 0.22103418361512955], [44, 45, 42]),
}


@pytest.mark.parametrize("move", ["all", "one"])
def test_gaussian_rule_reproduces_the_gaussian_sampler_it_replaced(move):
    system = moire.from_config(moire.MoireConfig(supercell=[[1, 1], [2, -1]], n_electrons=3, U=1.0))
    model = slater.from_config(slater.SlaterConfig(g_max=1.0), system)
    params = model.init(jax.random.PRNGKey(0), jnp.ones((1, 3, 2)))["params"]
    logpsi = lambda p, x: model.apply({"params": p}, x)  # noqa: E731
    sampler = Metropolis(rule=GaussianMoves(cell=system.cell, n_electrons=3, move=move),
                         n_chains=3, samples_per_chain=2, sweeps=2, burn_in=20, discard=1, seed=7)
    ids = jnp.arange(3)
    start = sampler.init(logpsi, params, ids)
    batch, end = sampler.sample(logpsi, params, start, ids, 4)
    x21, width_start, width_end, accepted = GAUSSIAN_REFERENCE[move]
    np.testing.assert_allclose(np.asarray(batch.x)[2, 1].ravel(), x21, rtol=1e-10)
    np.testing.assert_allclose(np.asarray(start.width), width_start, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(end.width), width_end, rtol=1e-12)
    assert np.asarray(end.accepted).tolist() == accepted
    assert np.asarray(end.proposed).tolist() == [25 if move == "all" else 75] * 3
