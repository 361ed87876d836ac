"""Positions on a 2D torus: the supercell spanned by the rows L_1, L_2 of ``cell``.

A position r has fractional coordinates s = r L^{-1} (r = s_1 L_1 + s_2 L_2); r and r + L are
the same point for every lattice vector L = n_1 L_1 + n_2 L_2 (n integer).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def fractional_in_cell(x: jax.Array, cell: np.ndarray) -> jax.Array:
    """Fractional coordinates taken into the cell, s - floor(s) with s = x L^{-1}.

    Args:
        x: positions, shape (..., 2), in the units of ``cell``.
        cell: rows L_1, L_2, shape (2, 2).

    Returns:
        s mod 1, shape of x, each component in [0, 1) (up to rounding at 1).
    """
    frac = x @ jnp.asarray(np.linalg.inv(cell))
    return frac - jnp.floor(frac)


def wrap_into_cell(x: jax.Array, cell: np.ndarray) -> jax.Array:
    """The equivalent positions inside the cell, r = (s mod 1) L with s = x L^{-1}.

    Args:
        x: positions, shape (..., 2), in the units of ``cell``.
        cell: rows L_1, L_2, shape (2, 2).

    Returns:
        Positions in the cell, shape of x, same units.
    """
    return fractional_in_cell(x, cell) @ jnp.asarray(cell)
