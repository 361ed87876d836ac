"""Per-sample log-derivatives O and their centring and scaling for the natural-gradient solvers.

``O_{s,k} = d log psi(sigma_s) / d theta_k`` for real parameters theta (flattened with
``jax.flatten_util.ravel_pytree``) and a complex (or real) log psi. :func:`jacobian` computes it in
chunks of samples so that no intermediate is larger than ``chunk_size * P`` numbers (times the
model's own activations for ``chunk_size`` samples); :func:`centred_scaled` turns this rank's rows
into the rows of the matrix O and vector eps that :func:`hpcvmc.optim.minsr.solve` expects.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from hpcvmc.chunking import map_leading_chunks
from hpcvmc.parallel import Comm

LogPsi = Callable[[Any, jax.Array], jax.Array]
"""``logpsi(params, x_batch) -> log psi`` of shape (batch,), complex or real."""


@partial(jax.jit, static_argnames=("logpsi", "chunk_size"))
def jacobian(logpsi: LogPsi, params: Any, x: jax.Array, chunk_size: int,
             n_rows: jax.Array | None = None) -> jax.Array:
    """Dense per-sample Jacobian ``O_{s,k} = d log psi(x_s) / d theta_k``, in sample chunks.

    Each chunk of ``c = min(chunk_size, n)`` samples is differentiated by reverse mode (two
    vector-Jacobian products per sample for complex log psi, of Re and Im) and written in place
    into the (n, P) result (:func:`hpcvmc.chunking.map_leading_chunks`: the last chunk starts at
    ``n - c`` and so recomputes a few rows instead of padding the samples). Jitted; ``logpsi``
    and ``chunk_size`` are static (pass the same function object to reuse the compilation).

    Args:
        logpsi: ``logpsi(params, x_batch) -> (batch,)`` log amplitudes, complex or real.
        params: the parameter pytree, real leaves.
        x: the samples, shape (n, ...).
        chunk_size: samples per chunk (the memory bound).
        n_rows: only the first ``n_rows`` rows are needed (traced; the chunks that hold none of
            them are skipped and their rows left 0); None: all n.

    Returns:
        O of shape (n, P), complex when log psi is complex, else real; column k is the k-th
        entry of ``ravel_pytree(params)[0]``.

    Raises:
        ValueError: if a parameter leaf is complex.
    """
    flat, unravel = ravel_pytree(params)
    if jnp.iscomplexobj(flat):
        raise ValueError("jacobian expects real parameters; split complex ones into Re and Im")
    per_chunk = _chunk_jacobian(logpsi, unravel)
    count = x.shape[0] if n_rows is None else n_rows
    return map_leading_chunks(lambda rows: per_chunk(flat, rows), x, count, chunk_size)


def _chunk_jacobian(logpsi: LogPsi, unravel: Callable) -> Callable:
    """``(flat, x_chunk) -> (c, P)`` Jacobian of one chunk, vmapped over its samples."""

    def one_sample(flat: jax.Array, x_one: jax.Array) -> jax.Array:
        return logpsi(unravel(flat), x_one[None])[0]

    def parts(flat: jax.Array, x_one: jax.Array) -> jax.Array:
        value = one_sample(flat, x_one)
        return jnp.stack([value.real, value.imag]) if jnp.iscomplexobj(value) else value

    def rows(flat: jax.Array, x_chunk: jax.Array) -> jax.Array:
        jac = jax.vmap(jax.jacrev(parts), in_axes=(None, 0))(flat, x_chunk)
        return jax.lax.complex(jac[:, 0], jac[:, 1]) if jac.ndim == 3 else jac

    return rows


def centred_scaled(
    O_local: jax.Array,
    eps_local: jax.Array,
    comm: Comm,
    weights: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Centre with the global mean and scale the rows of O and of the local energies.

    Monte Carlo samples (``weights`` None), with N_s the total number of samples over ranks:

        O_s <- (O_s - <O>) / sqrt(N_s),   eps_s = (E_L(s) - <E_L>) / sqrt(N_s),
        <A> = (1/N_s) sum_s A_s   (allreduce).

    Exact full sums (``weights`` given: p_s proportional to |psi(s)|^2 over an enumerated
    configuration space, normalised here over all ranks):

        O_s <- sqrt(p_s) (O_s - <O>_p),   eps_s = sqrt(p_s) (E_L(s) - <E_L>_p),
        <A>_p = sum_s p_s A_s.

    Either way ``O~^T O~ = Re Cov(O, O)`` and ``O~^T eps~ = Re Cov(O, E_L) = grad E / 2``.
    Jittable; returns new arrays (the input O can be donated by a jitted caller).

    Args:
        O_local: this rank's rows of d log psi / d theta, shape (n_local, P).
        eps_local: this rank's local energies E_L, shape (n_local,).
        comm: the communicator.
        weights: optional unnormalised probabilities, shape (n_local,), real, >= 0.

    Returns:
        ``(O, eps)``, centred and scaled, shapes (n_local, P) and (n_local,).
    """
    if weights is None:
        count = comm.sum(jnp.asarray(O_local.shape[0], O_local.real.dtype))
        sum_o, sum_e = comm.sum((O_local.sum(axis=0), eps_local.sum()))
        mean_o, mean_e = sum_o / count, sum_e / count
        row_scale = jnp.full(O_local.shape[:1], jnp.sqrt(1.0 / count))
    else:
        probabilities = weights / comm.sum(weights.sum())
        mean_o, mean_e = comm.sum((probabilities @ O_local, probabilities @ eps_local))
        row_scale = jnp.sqrt(probabilities)
    return (O_local - mean_o) * row_scale[:, None], (eps_local - mean_e) * row_scale
