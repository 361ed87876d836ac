"""Error bars, autocorrelation time and split-R-hat on processes with known answers."""

import jax.numpy as jnp
import numpy as np
import pytest

from hpcvmc.parallel import SERIAL
from hpcvmc.stats import clip_local_energy, summarize, summarize_weighted


def _ar1(rho: float, n_chains: int, T: int, seed: int = 0) -> np.ndarray:
    """AR(1) chains x_t = rho x_{t-1} + sqrt(1 - rho^2) eta_t, stationary start, variance 1."""
    rng = np.random.default_rng(seed)
    x = np.empty((n_chains, T))
    x[:, 0] = rng.standard_normal(n_chains)
    for t in range(1, T):
        x[:, t] = rho * x[:, t - 1] + np.sqrt(1 - rho**2) * rng.standard_normal(n_chains)
    return x


def test_uncorrelated_samples():
    x = np.random.default_rng(1).standard_normal((64, 256))
    s = summarize(jnp.asarray(x), SERIAL)
    assert float(s.mean) == pytest.approx(x.mean(), abs=1e-12)
    assert float(s.variance) == pytest.approx(x.var(ddof=1), rel=1e-12)
    assert float(s.tau) == pytest.approx(0.5, abs=0.1)
    assert float(s.error) == pytest.approx(x.std() / np.sqrt(x.size), rel=0.15)
    assert float(s.r_hat) == pytest.approx(1.0, abs=0.02)


def test_autocorrelated_samples():
    """AR(1): tau_int = (1 + rho) / (2 (1 - rho)); the error bar must follow it."""
    rho = 0.8
    x = _ar1(rho, 64, 512)
    s = summarize(jnp.asarray(x), SERIAL)
    tau_exact = (1 + rho) / (2 * (1 - rho))
    assert float(s.tau) == pytest.approx(tau_exact, rel=0.2)
    # independent chains: the spread of chain means is the truth for the error of the mean
    error_from_chains = x.mean(axis=1).std(ddof=1) / np.sqrt(x.shape[0])
    assert float(s.error) == pytest.approx(error_from_chains, rel=0.3)


def test_r_hat_detects_disagreeing_chains():
    x = np.random.default_rng(2).standard_normal((16, 128))
    x[:8] += 1.0
    assert float(summarize(jnp.asarray(x), SERIAL).r_hat) > 1.1


def test_weighted_summary():
    values = jnp.asarray([1.0, 2.0, 4.0])
    weights = jnp.asarray([0.5, 0.25, 0.25])
    s = summarize_weighted(values, weights, SERIAL)
    assert float(s.mean) == pytest.approx(2.0)
    assert float(s.variance) == pytest.approx(0.5 * 1 + 0.25 * 0 + 0.25 * 4)
    assert float(s.error) == 0.0


def test_clip_local_energy_bounds_outliers_only():
    values = jnp.asarray([1.0 + 0.0j, 2.0 + 1.0j, 3.0 - 1.0j, 100.0 + 50.0j])
    mean = np.mean(np.asarray(values))  # 26.5 + 12.5j
    deviation = np.mean(np.abs(np.asarray(values) - mean))  # about 41.5
    clipped = np.asarray(clip_local_energy(values, 1.0, SERIAL))
    np.testing.assert_allclose(clipped[:3], np.asarray(values)[:3])  # inside the window
    assert clipped[3] == pytest.approx(complex(mean.real + deviation, 50.0))  # Re clipped only
    real = np.asarray(clip_local_energy(jnp.asarray([0.0, 0.0, 0.0, 8.0]), 0.5, SERIAL))
    np.testing.assert_allclose(real, [0.5, 0.5, 0.5, 3.5])  # mean 2, D = 3: window [0.5, 3.5]
