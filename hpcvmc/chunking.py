"""Evaluation of a batched function in sequential chunks of rows, to bound its memory."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp


def map_in_chunks(fn: Callable[[jax.Array], jax.Array], x: jax.Array, chunk: int) -> jax.Array:
    """Apply ``fn`` (batch -> batch) to ``x`` in sequential chunks of at most ``chunk`` rows.

    fn(x)[i] = fn(x[chunk k containing i])[i - k chunk]: the rows are padded (with copies of the
    first row) to a multiple of the chunk, the chunks run one after another (``lax.map``), and
    the padding is dropped from the result. With ``n <= chunk`` this is a single call. Peak
    memory is that of one call on ``chunk`` rows.

    Args:
        fn: row-wise batched function, (m, ...) -> (m, ...) for every m; jittable.
        x: the rows, shape (n, ...).
        chunk: rows per call (>= 1).

    Returns:
        fn of every row, shape (n, ...) as fn returns it.
    """
    n = x.shape[0]
    if n <= chunk:
        return fn(x)
    n_chunks = -(-n // chunk)
    pad = n_chunks * chunk - n
    xp = jnp.concatenate([x, jnp.repeat(x[:1], pad, axis=0)]) if pad else x
    out = jax.lax.map(fn, xp.reshape((n_chunks, chunk) + x.shape[1:]))
    return out.reshape((n_chunks * chunk,) + out.shape[2:])[:n]


def map_leading_chunks(fn: Callable[[jax.Array], jax.Array], x: jax.Array,
                       count: int | jax.Array, chunk: int) -> jax.Array:
    """``fn`` (batch -> batch) of the first ``count`` rows of x, in chunks of ``chunk`` rows.

    Runs ceil(count / chunk) calls in a ``fori_loop`` (``count`` may be traced); the last chunk
    starts at ``n - chunk`` when it would run past the end, recomputing a few rows instead of
    padding. Rows not covered by a call are 0. Peak memory is that of one call.

    Args:
        fn: row-wise batched function, (c, ...) -> (c, ...); jittable.
        x: the rows, shape (n, ...).
        count: rows needed (<= n; a Python int or a traced integer).
        chunk: rows per call.

    Returns:
        Shape (n, ...) as fn returns it.
    """
    n = x.shape[0]
    chunk = min(chunk, n)
    shape = jax.eval_shape(fn, x[:chunk])
    out = jnp.zeros((n,) + shape.shape[1:], shape.dtype)

    def fill(k: jax.Array, out: jax.Array) -> jax.Array:
        start = jnp.minimum(k * chunk, n - chunk)
        rows = jax.lax.dynamic_slice_in_dim(x, start, chunk, axis=0)
        return jax.lax.dynamic_update_slice_in_dim(out, fn(rows), start, axis=0)

    return jax.lax.fori_loop(0, (count + chunk - 1) // chunk, fill, out)
