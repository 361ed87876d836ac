"""Sampling with the parameters held fixed: the energy over several sampler steps, plus any
sums a caller accumulates from the same samples.

Used by the final measurement (:mod:`hpcvmc.measure`) and the moire observables
(:mod:`hpcvmc.observables`); step k draws from the stream (PURPOSE_MEASURE, k), which no
optimization step uses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from hpcvmc.build import Setup
from hpcvmc.deduplication import grouped_local_energy
from hpcvmc.protocols import PURPOSE_MEASURE
from hpcvmc.stats import combine_steps, summarize, summarize_weighted


def sample_fixed(setup: Setup, params: Any, chains: Any, n_steps: int,
                 collect: Callable[[Any, jax.Array], Any] | None = None, acc: Any = None,
                 ) -> tuple[tuple[float, float, float], Any, Any]:
    """``n_steps`` sampler steps with fixed parameters: the energy and, optionally, more sums.

    Step k samples with the stream (PURPOSE_MEASURE, k), evaluates the local energy of every
    sample (once per class of the sampler's ``deduplication``) and, when ``collect`` is given,
    updates ``acc = collect(acc, x)`` with this rank's samples x (jittable; the caller reduces
    ``acc`` over the ranks; x comes without weights, so ``collect`` serves Monte Carlo
    samplers). Collective.

    Args:
        setup: the built run.
        params: the parameters, held fixed.
        chains: this rank's chains (None for an exact sampler).
        n_steps: sampler steps (>= 1).
        collect: optional accumulator update.
        acc: its initial value.

    Returns:
        ``((mean, error, variance), acc, chains)``: the energy combined over the steps
        (:func:`hpcvmc.stats.combine_steps`, totals in the system's unit), the accumulator and
        the chains after the last step.
    """
    comm, system = setup.comm, setup.system
    chain_ids = jnp.asarray(setup.chain_ids)

    @jax.jit
    def one_step(chains: Any, acc: Any, step: jax.Array) -> tuple[Any, Any, Any]:
        batch, chains = setup.sampler.sample(setup.logpsi, params, chains, chain_ids, step,
                                             purpose=PURPOSE_MEASURE)
        x = batch.x.reshape((-1,) + batch.x.shape[2:])
        e_loc, _ = grouped_local_energy(
            lambda rows: system.local_energy(setup.logpsi, params, rows), x,
            getattr(setup.sampler, "deduplication", None))
        if batch.weights is None:
            stats = summarize(e_loc.reshape(batch.x.shape[:2]), comm)
        else:
            stats = summarize_weighted(e_loc, batch.weights.reshape(-1), comm)
        return chains, acc if collect is None else collect(acc, x), stats

    means, errors, variances = [], [], []
    for step in range(n_steps):
        chains, acc, stats = one_step(chains, acc, jnp.asarray(step))
        means.append(float(jnp.real(stats.mean)))
        errors.append(float(stats.error))
        variances.append(float(stats.variance))
    return combine_steps(means, errors, variances), acc, chains
