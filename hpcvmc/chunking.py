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
