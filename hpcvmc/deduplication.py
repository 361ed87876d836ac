"""Evaluate a step's samples once per distinct configuration or symmetry orbit.

A Markov chain of |psi|^2 on a small lattice revisits configurations, and for a wave function
projected onto the trivial representation of a group G (psi(g x) = psi(x)) whose Hamiltonian
commutes with G, every member of an orbit {g x} has the same local energy E_L and the same row
O(x) = d log psi(x) / d theta. Then the N samples x_s of a step, grouped into U distinct
classes r with multiplicities m_r (sum_r m_r = N), give

    <E_L> = (1/N) sum_s E_L(x_s) = sum_r (m_r / N) E_L(r),
    O~^H O~ = sum_r (m_r / N) (O_r - <O>)^* (O_r - <O>),   O~^H eps~ likewise,

so the rows sqrt(m_r / N) (O_r - <O>) (the weighted path of
:func:`hpcvmc.optim.jacobian.centred_scaled`) give exactly the minSR / SPRING update of the N
rows (phi = (O~^T O~ + lambda)^(-1) (O~^T eps~ + lambda mu phi_prev) depends on O~ only through
these sums). (The J1-J2 Hamiltonian with the Marshall sign, M H M, commutes with G in the
Sz = 0 sector: M(g x) = c_g M(x) with a sign c_g that depends on g only.) Only the U classes are
evaluated: the local energy and the Jacobian cost U / N of the full batch, and the minSR kernel
is built from the leading rows only (:func:`solve_on_leading_rows`). On the 4 x 4 lattice the
whole Sz = 0 sector has 107 orbits of the space group x spin flip, so a step of 512 samples
evaluates at most 107 configurations (41 on average near the ground state, bench/README.md); on
6 x 6 and larger lattices samples rarely repeat and nothing is gained (the
classification costs |G| n_sites integer operations per sample).

A configuration's class is an integer code: sum_s [x_s = +1] 2^s of x itself
(``"configurations"``) or the smallest code over its images g x (``"orbits"``), so at most 62
sites. Each rank classifies its own samples; the shapes stay those of the full batch (the U
classes first, then zero-weight padding rows that are not evaluated), so one compiled step
serves every U.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple, TypeVar

import jax
import jax.numpy as jnp
import numpy as np

from hpcvmc.chunking import map_leading_chunks
from hpcvmc.parallel import Comm
from hpcvmc.square_lattice import space_group_with_spin_flip

MAX_SITES = 62
"""Sites of the largest configuration whose code fits an int64."""

ROW_CHUNK = 16
"""Classes per call of the local energy and the Jacobian: U is rounded up to a multiple."""

MODES = ("none", "configurations", "orbits")

T = TypeVar("T")


class Classes(NamedTuple):
    """The distinct classes of a batch of n rows (arrays padded to length n).

    Attributes:
        first: index of the first sample of each class, shape (n,); entries from ``count`` on
            are padding (any valid index).
        inverse: class of every sample, shape (n,).
        multiplicity: samples in each class, float shape (n,); 0 for padding.
        count: U, the number of classes (int scalar).
    """

    first: jax.Array
    inverse: jax.Array
    multiplicity: jax.Array
    count: jax.Array


@dataclass(frozen=True, eq=False)
class Deduplication:
    """Groups samples that have the same local energy and Jacobian row.

    Attributes:
        perms: site permutations of the group elements, shape (|G|, n_sites); image g of x is
            ``flips[g] * x[perms[g]]`` (the identity alone for ``"configurations"``).
        flips: spin signs of the group elements, shape (|G|,).
    """

    perms: np.ndarray
    flips: np.ndarray

    @staticmethod
    def build(mode: str, n_sites: int, L: int | None = None) -> "Deduplication | None":
        """The grouping of ``sampler.deduplicate = mode`` (None for ``"none"``).

        Args:
            mode: one of ``MODES``; ``"orbits"`` uses the space group x spin flip of the
                periodic L x L square lattice (:func:`space_group_with_spin_flip`).
            n_sites: sites per configuration (at most ``MAX_SITES``).
            L: linear size of the square lattice (``"orbits"`` only).
        """
        if mode == "none":
            return None
        if n_sites > MAX_SITES:
            raise ValueError(f"deduplication codes hold at most {MAX_SITES} sites, not {n_sites}")
        if mode == "orbits":
            perms, flips = space_group_with_spin_flip(L)
        else:
            perms, flips = np.arange(n_sites)[None], np.ones(1)
        return Deduplication(perms.astype(np.int32), flips)

    def codes(self, x: jax.Array) -> jax.Array:
        """Class code of every row: min over g of sum_s [(g x)_s = +1] 2^s, int64 shape (n,).

        Args:
            x: configurations of +-1, shape (n, n_sites).
        """
        powers = jnp.asarray(2 ** np.arange(x.shape[1], dtype=np.int64))
        perms, flips = jnp.asarray(self.perms), jnp.asarray(self.flips, x.dtype)

        def smaller(g: jax.Array, best: jax.Array) -> jax.Array:
            up = flips[g] * x[:, perms[g]] > 0
            return jnp.minimum(best, jnp.sum(jnp.where(up, powers, 0), axis=1))

        start = jnp.full(x.shape[0], np.iinfo(np.int64).max, jnp.int64)
        return jax.lax.fori_loop(0, len(self.perms), smaller, start)

    def classes(self, x: jax.Array) -> Classes:
        """The distinct classes of the rows of x (jittable, fixed shapes).

        Args:
            x: configurations of +-1, shape (n, n_sites).
        """
        n = x.shape[0]
        _, first, inverse, counts = jnp.unique(
            self.codes(x), size=n, fill_value=np.iinfo(np.int64).max,
            return_index=True, return_inverse=True, return_counts=True)
        count = jnp.sum(counts > 0)
        return Classes(first, inverse.reshape(n), counts.astype(x.dtype), count)


def grouped_local_energy(local_energy: Callable[[jax.Array], jax.Array], x: jax.Array,
                         grouping: Deduplication | None) -> tuple[jax.Array, Classes | None]:
    """E_L of every row of x, evaluated once per class when a grouping is given.

    Args:
        local_energy: rows -> their local energies (jittable, row-wise).
        x: configurations, shape (n, n_sites).
        grouping: the classes to evaluate once each, or None (every row).

    Returns:
        ``(e_loc, classes)``: the local energy of every row, shape (n,), and the classes of the
        rows (None without a grouping); the class representatives are ``x[classes.first]``.
    """
    if grouping is None:
        return local_energy(x), None
    classes = grouping.classes(x)
    per_class = map_leading_chunks(local_energy, x[classes.first], classes.count, ROW_CHUNK)
    return per_class[classes.inverse], classes


def solver_row_counts(n: int) -> tuple[int, ...]:
    """Row counts the solver is compiled for when only leading rows are nonzero: 2 ROW_CHUNK,
    doubling while below n, then n itself."""
    sizes, rows = [], 2 * ROW_CHUNK
    while rows < n:
        sizes.append(rows)
        rows *= 2
    return (*sizes, n)


def solve_on_leading_rows(update: Callable[[jax.Array, jax.Array, int], T], O: jax.Array,
                          eps: jax.Array, count: jax.Array, comm: Comm) -> T:
    """``update(O[:b], eps[:b], b)`` for the smallest b of :func:`solver_row_counts` that holds
    every rank's ``count`` nonzero leading rows (a ``lax.switch``: one compiled branch per b,
    the same branch on every rank).

    Rows from ``count`` on are zero (weight 0) and add nothing to O^H O or O^H eps, the sums the
    update depends on: the minSR / SPRING update on the leading b rows equals that on all n, at
    (b / n)^2 of the cost of building the kernel O O^H and (b / n)^3 of its solve.

    Args:
        update: the solver on b rows (its collectives run on every rank alike).
        O: this rank's centred, scaled rows, shape (n, P); zero from row ``count`` on.
        eps: this rank's centred, scaled local energies, shape (n,); likewise zero.
        count: this rank's nonzero leading rows (traced int).
        comm: the communicator (the largest count decides b).

    Returns:
        What ``update`` returns (the same structure for every b).
    """
    sizes = solver_row_counts(O.shape[0])
    branch = jnp.searchsorted(jnp.asarray(sizes), comm.max(count))
    branches = [lambda O, eps, rows=rows: update(O[:rows], eps[:rows], rows) for rows in sizes]
    return jax.lax.switch(branch, branches, O, eps)
