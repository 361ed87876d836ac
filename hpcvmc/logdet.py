r"""Complex log-determinants and their log-sum-exp, for wave functions built from determinants.

A determinant can be negative or complex and its magnitude over- or underflows for a few dozen
electrons, so a wave function works with log det A = log|det A| + i arg det A (the phase
modulo 2 pi) and adds determinants as

    log sum_k exp(t_k) = m + log sum_k exp(t_k - m),   m = max_k Re t_k,

with m held constant under differentiation (it cancels exactly).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


@jax.jit
def log_det(matrices: jax.Array) -> jax.Array:
    """Complex log det of a batch of square matrices by LU with partial pivoting, in plain jax ops.

    log det A = sum_k log U_kk + i pi (number of row swaps), from Gaussian elimination with the
    largest remaining pivot of each column. Written with ``lax.fori_loop`` over the n columns
    (O(n^3) per matrix) instead of ``jnp.linalg.slogdet``: the LAPACK custom calls of slogdet and
    of its derivative (getrf, trsm) parallelize over the batch on XLA's intra-op thread pool and
    can deadlock when two of them run at once on a small pool (2 cores, jax 0.10.2).
    Differentiable in forward and reverse mode (the pivot choice is locally constant). Jitted, so
    that it is one named call in a traced model: the forward Laplacian
    (``hpcvmc.laplacian``) replaces it by its own rule instead of tracing the loop.

    Args:
        matrices: shape (..., n, n), real or complex.

    Returns:
        log det, complex, shape (...); the imaginary part is the phase modulo 2 pi.
    """
    matrices = matrices.astype(jnp.result_type(matrices.dtype, jnp.complex64))
    n = matrices.shape[-1]
    rows = jnp.arange(n)

    def eliminate(k: jax.Array, carry: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        a, log_acc = carry
        candidates = jnp.where(rows >= k, jnp.abs(a[..., :, k]), -1.0)
        pivot_row = jnp.argmax(candidates, axis=-1)[..., None]  # (..., 1)
        order = jnp.where(rows == k, pivot_row, jnp.where(rows == pivot_row, k, rows))
        a = jnp.take_along_axis(a, order[..., :, None], axis=-2)
        pivot = a[..., k, k]
        swapped = jnp.where(pivot_row[..., 0] != k, 1j * jnp.pi, 0.0)
        factors = jnp.where(rows > k, a[..., :, k] / pivot[..., None], 0.0)
        a = a - factors[..., :, None] * a[..., k, None, :]
        return a, log_acc + jnp.log(pivot) + swapped

    zero = jnp.zeros(matrices.shape[:-2], dtype=matrices.dtype)
    return jax.lax.fori_loop(0, n, eliminate, (matrices, zero))[1]


def log_sum_exp(terms: jax.Array) -> jax.Array:
    """log sum_k exp(t_k) over the last axis of complex terms t (module docstring).

    Args:
        terms: complex log terms, e.g. log w_k + log det_k, shape (..., K).

    Returns:
        Complex, shape (...); the imaginary part is the phase of the sum.
    """
    shift = jax.lax.stop_gradient(jnp.max(terms.real, axis=-1, keepdims=True))
    return shift[..., 0] + jnp.log(jnp.sum(jnp.exp(terms - shift), axis=-1))
