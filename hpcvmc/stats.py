"""Monte Carlo statistics reduced over ranks: mean, variance, error bar, tau and split-R-hat.

All functions are jittable and return identical values on every rank. Local energies arrive
as an array of shape (n_chains_local, T): chain c's T consecutive samples.

Error bar: sigma = sqrt(var * 2 tau / N) with the integrated autocorrelation time
tau = 1/2 + sum_{t >= 1} rho(t), rho the chain-averaged normalized autocorrelation function,
summed up to Sokal's self-consistent window (the first W with W >= 5 tau(W)). For uncorrelated
samples tau = 1/2 and sigma^2 = var / N.

Split-R-hat (Gelman et al.): each chain is cut into two halves (m = 2 C chains of n = T/2);
W = mean within-half variance, B = n * variance of the half means,
R-hat = sqrt(((n - 1)/n W + B/n) / W). Values near 1 mean the chains agree.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from hpcvmc.parallel import Comm

SOKAL_WINDOW = 5.0


class Stats(NamedTuple):
    """Summary of a sampled quantity (real part of the local energy for tau and R-hat).

    Attributes:
        mean: complex mean over all samples of all ranks.
        error: standard error of the real part of the mean (autocorrelation-corrected).
        variance: sample variance <|E - mean|^2>.
        tau: integrated autocorrelation time in samples (1/2 = uncorrelated).
        r_hat: split-R-hat over chains (nan when there are fewer than 2 samples per chain).
    """

    mean: jax.Array
    error: jax.Array
    variance: jax.Array
    tau: jax.Array
    r_hat: jax.Array


def _autocovariance(y: jax.Array) -> jax.Array:
    """Sum over chains of the autocovariance sums: out[t] = sum_c sum_s y_c[s] y_c[s+t]."""
    T = y.shape[1]
    f = jnp.fft.rfft(y, n=2 * T, axis=1)
    return jnp.fft.irfft(f * jnp.conj(f), n=2 * T, axis=1)[:, :T].sum(axis=0)


def integrated_time(acov: jax.Array, counts: jax.Array) -> jax.Array:
    """tau from the summed autocovariances with Sokal's automatic window.

    Args:
        acov: sum over all chains of sum_s y[s] y[s+t], shape (T,).
        counts: number of pairs entering each lag: n_chains * (T - t), shape (T,).
    """
    gamma = acov / counts
    rho = gamma / gamma[0]
    taus = 0.5 + jnp.cumsum(rho) - rho[0]  # taus[W] = 1/2 + sum_{t=1..W} rho(t)
    windows = jnp.arange(len(rho))
    ok = windows >= SOKAL_WINDOW * taus
    window = jnp.where(ok.any(), jnp.argmax(ok), len(rho) - 1)
    return jnp.maximum(taus[window], 0.5)


def summarize(values: jax.Array, comm: Comm) -> Stats:
    """Statistics of Monte Carlo samples sharded over ranks.

    Args:
        values: shape (n_chains_local, T), real or complex.
        comm: the run's communicator (every rank has the same number of chains).

    Returns:
        Stats, equal on all ranks.
    """
    n_chains_local, T = values.shape
    n_total = n_chains_local * T * comm.size
    mean = comm.sum(jnp.sum(values)) / n_total
    dev = values - mean
    variance = comm.sum(jnp.sum(jnp.abs(dev) ** 2)) / (n_total - 1)
    y = dev.real
    acov = comm.sum(_autocovariance(y))
    counts = n_chains_local * comm.size * (T - jnp.arange(T))
    tau = integrated_time(acov, counts) if T > 1 else jnp.asarray(0.5)
    var_real = comm.sum(jnp.sum(y**2)) / (n_total - 1)
    error = jnp.sqrt(var_real * 2.0 * tau / n_total)
    return Stats(mean, error, variance, tau, split_r_hat(values.real, comm))


def clip_local_energy(values: jax.Array, width: float, comm: Comm) -> jax.Array:
    """E_L clipped for the gradient: each of Re and Im into [mean - w D, mean + w D].

    D = <|E_L - <E_L>|> is the mean absolute deviation over all samples of all ranks and
    w = ``width``. Outliers near nodes of psi (or electron coalescences) otherwise dominate
    the update; the energy estimate itself always uses the unclipped values.

    Args:
        values: local energies of this rank, any shape, real or complex.
        width: w > 0.
        comm: the run's communicator.

    Returns:
        The clipped values, same shape and dtype (equal reductions on every rank).
    """
    n_total = values.size * comm.size
    mean = comm.sum(jnp.sum(values)) / n_total
    deviation = comm.sum(jnp.sum(jnp.abs(values - mean))) / n_total
    half = width * deviation
    real = jnp.clip(values.real, mean.real - half, mean.real + half)
    if not jnp.iscomplexobj(values):
        return real
    return jax.lax.complex(real, jnp.clip(values.imag, mean.imag - half, mean.imag + half))


def split_r_hat(values: jax.Array, comm: Comm) -> jax.Array:
    """Split-R-hat over all chains of all ranks; nan when T < 4."""
    n_chains_local, T = values.shape
    if T < 4:
        return jnp.asarray(jnp.nan)
    n = T // 2
    halves = jnp.concatenate([values[:, :n], values[:, T - n:]], axis=0)  # (2C_local, n)
    m = 2 * n_chains_local * comm.size
    half_means = halves.mean(axis=1)
    within = comm.sum(jnp.sum(halves.var(axis=1, ddof=1))) / m
    grand = comm.sum(jnp.sum(half_means)) / m
    between = n * comm.sum(jnp.sum((half_means - grand) ** 2)) / (m - 1)
    var_hat = (n - 1) / n * within + between / n
    return jnp.sqrt(var_hat / within)


def summarize_weighted(values: jax.Array, weights: jax.Array, comm: Comm) -> Stats:
    """Exact expectation values: weights are normalized probabilities summing to 1 over ranks.

    The error is zero by construction (no sampling), tau = 0.5 and R-hat = 1.
    """
    mean = comm.sum(jnp.sum(weights * values))
    variance = comm.sum(jnp.sum(weights * jnp.abs(values - mean) ** 2))
    return Stats(mean, jnp.asarray(0.0), variance, jnp.asarray(0.5), jnp.asarray(1.0))


def combine_steps(means: list[float], errors: list[float], variances: list[float]
                  ) -> tuple[float, float, float]:
    """Combine the per-step estimates of a measurement with fixed parameters (host floats).

    With K steps of means m_k, error bars e_k and variances v_k:
    mean = (1/K) sum_k m_k; error = max(sqrt(sum_k e_k^2) / K, std(m_k) / sqrt(K)) (the
    second, from the spread of the step means, also catches correlations between steps that
    the per-step tau cannot see; for K = 1 only the first exists); variance = (1/K) sum_k v_k.

    Returns:
        (mean, error, variance).
    """
    k = len(means)
    within = math.sqrt(sum(e * e for e in errors)) / k
    error = within
    if k > 1:
        mean_of_means = sum(means) / k
        spread = math.sqrt(sum((m - mean_of_means) ** 2 for m in means) / (k - 1) / k)
        error = max(within, spread)
    return sum(means) / k, error, sum(variances) / k
