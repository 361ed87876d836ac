"""The spin-1/2 J1-J2 Heisenberg model on the L x L periodic square lattice.

H = J1 sum_<ij> S_i . S_j + J2 sum_<<ij>> S_i . S_j with S = sigma / 2, every bond counted once,
in the total Sz = 0 sector. Energies are in the unit of the couplings (J1 = 1 by default) and are
totals for the lattice (not per site).

Configurations are float arrays of +-1 (spin up = +1), site s = row * L + col.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from hpcvmc.config import REQUIRED, InputError, option
from hpcvmc.progress import format_energy
from hpcvmc.registry import Component, register

LogPsi = Callable[[object, jax.Array], jax.Array]
"""log psi(params, x): x of shape (batch, n_sites) -> complex log psi of shape (batch,)."""


def square_bonds(L: int) -> tuple[np.ndarray, np.ndarray]:
    """Nearest and next-nearest neighbour bonds of the periodic L x L lattice, each once.

    Returns:
        (nn, nnn): int arrays of shape (n_bonds, 2) of site pairs. For L = 2 the periodic
        images coincide; duplicate pairs are kept once, as in a graph.
    """

    def site(r: int, c: int) -> int:
        return (r % L) * L + (c % L)

    def unique(pairs: list[tuple[int, int]]) -> np.ndarray:
        seen = sorted({(min(a, b), max(a, b)) for a, b in pairs if a != b})
        return np.array(seen, dtype=np.int32).reshape(-1, 2)

    nn = [(site(r, c), site(r, c + 1)) for r in range(L) for c in range(L)]
    nn += [(site(r, c), site(r + 1, c)) for r in range(L) for c in range(L)]
    nnn = [(site(r, c), site(r + 1, c + 1)) for r in range(L) for c in range(L)]
    nnn += [(site(r, c), site(r + 1, c - 1)) for r in range(L) for c in range(L)]
    return unique(nn), unique(nnn)


def sublattice_a(L: int) -> np.ndarray:
    """Mask of the A sublattice (row + col even), shape (L*L,)."""
    rows, cols = np.divmod(np.arange(L * L), L)
    return (rows + cols) % 2 == 0


def point_group() -> list[np.ndarray]:
    """The 8 signed 2x2 permutation matrices: the point group C4v of the square lattice."""
    return [
        np.array(sign)[:, None] * np.eye(2, dtype=int)[list(order)]
        for order in itertools.permutations(range(2))
        for sign in itertools.product((1, -1), repeat=2)
    ]


def site_permutation(L: int, matrix: np.ndarray, shift: tuple[int, int]) -> np.ndarray:
    """Permutation ``perm`` with ``(g x)_s = x[perm[s]]`` for ``g(u) = M u + t mod L``.

    Args:
        L: linear lattice size.
        matrix: integer (2, 2) matrix M acting on site coordinates u = (row, col).
        shift: translation t = (row shift, col shift).

    Returns:
        Integer array of shape (L*L,): ``perm[g(u)] = u``.
    """
    coords = np.stack(np.divmod(np.arange(L * L), L))
    image = (matrix @ coords + np.array(shift)[:, None]) % L
    perm = np.empty(L * L, dtype=int)
    perm[image[0] * L + image[1]] = np.arange(L * L)
    return perm


def space_group_with_spin_flip(L: int) -> tuple[np.ndarray, np.ndarray]:
    """All 16 L^2 elements g of (L^2 translations x C4v about site 0) x {1, spin flip}.

    Element g acts as ``(g x)_s = flips[g] * x[perms[g, s]]``.

    Returns:
        ``(perms, flips)`` of shapes (16 L^2, L^2) (integer) and (16 L^2,) (+-1.0).
    """
    perms = np.array([site_permutation(L, matrix, shift)
                      for matrix in point_group() for shift in np.ndindex(L, L)])
    return np.concatenate([perms, perms]), np.repeat([1.0, -1.0], len(perms))


def symmetry_orbits(L: int) -> tuple[np.ndarray, np.ndarray]:
    """The Sz = 0 configurations grouped into orbits of the space group x spin flip.

    The group G has 16 L^2 elements: the L^2 translations, the 8 point-group operations C4v
    about site 0, and the global spin flip x -> -x. A wave function invariant under G (and a
    Hamiltonian that commutes with G) takes the same value and the same local energy on every
    configuration of an orbit, so a sum over the sector is a sum over orbits weighted by their
    sizes: sum_x f(x) = sum_r |orbit(r)| f(r).

    Each orbit is represented by its member with the smallest bit code
    sum_s [x_s = +1] 2^s.

    Args:
        L: linear lattice size (the sector must be small enough to enumerate).

    Returns:
        ``(representatives, sizes)``: shape (n_orbits, L*L) of +-1 floats, and the orbit sizes
        (int, summing to C(L^2, L^2/2)).
    """
    states = sz0_configurations(L * L)
    powers = 2 ** np.arange(L * L, dtype=np.int64)
    smallest = np.full(len(states), np.iinfo(np.int64).max)
    for perm, flip in zip(*space_group_with_spin_flip(L)):
        smallest = np.minimum(smallest, (flip * states[:, perm] > 0) @ powers)
    codes, sizes = np.unique(smallest, return_counts=True)
    representatives = np.where((codes[:, None] >> np.arange(L * L)) & 1, 1.0, -1.0)
    return representatives, sizes


def sz0_configurations(n_sites: int) -> np.ndarray:
    """All configurations with total Sz = 0, shape (C(n, n/2), n_sites), entries +-1 (float)."""
    n_up = n_sites // 2
    count = math.comb(n_sites, n_up)
    out = -np.ones((count, n_sites))
    for row, ups in enumerate(itertools.combinations(range(n_sites), n_up)):
        out[row, list(ups)] = 1.0
    return out


@dataclass(frozen=True)
class J1J2:
    """The J1-J2 system: bonds, couplings and the jitted local energy.

    Attributes:
        L: linear size.
        J1, J2: couplings of nearest and next-nearest bonds.
        marshall_sign: the wave function is psi(s) = M(s) psi_model(s) with the Marshall sign
            M(s) = (-1)^(number of up spins on sublattice A).
        chunk_size: configurations per call of the network in the local energy.
    """

    L: int
    J1: float = 1.0
    J2: float = 0.0
    marshall_sign: bool = True
    chunk_size: int = 256

    @property
    def n_sites(self) -> int:
        """Number of sites L^2."""
        return self.L * self.L

    @property
    def config_shape(self) -> tuple[int, ...]:
        """Shape of one configuration: (n_sites,) spins +-1."""
        return (self.n_sites,)

    energy_unit = "J1 (total of the lattice, spin operators S = sigma/2)"

    def progress_energy(self, mean: float, error: float) -> str:
        """The energy of the progress line: the total in J1."""
        return format_energy(mean, error)

    def format_energy(self, mean: float, error: float) -> str:
        """'E = <total> +- <err> J1 total = <per site> +- <err> per site'."""
        n = self.n_sites
        return (f"E = {mean:.8f} +- {error:.2e} J1 total"
                f" = {mean / n:.8f} +- {error / n:.2e} J1 per site")

    def bonds(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All bonds with a non-zero coupling.

        Returns:
            pairs (n_b, 2) int, couplings J_b (n_b,), off-diagonal signs s_b (n_b,): -1 on
            nearest-neighbour bonds when the Marshall sign is used (they connect the two
            sublattices, so an exchange flips M), else +1.
        """
        nn, nnn = square_bonds(self.L)
        pairs, couplings, signs = [], [], []
        for bonds, coupling, sign in ((nn, self.J1, -1.0 if self.marshall_sign else 1.0),
                                      (nnn, self.J2, 1.0)):
            if coupling != 0.0 and len(bonds):
                pairs.append(bonds)
                couplings.append(np.full(len(bonds), coupling))
                signs.append(np.full(len(bonds), sign))
        return np.concatenate(pairs), np.concatenate(couplings), np.concatenate(signs)

    def exchange_pairs(self) -> np.ndarray:
        """Pairs used by the exchange sampler's moves: every nearest and next-nearest pair."""
        nn, nnn = square_bonds(self.L)
        return np.concatenate([nn, nnn])

    def all_configurations(self) -> np.ndarray:
        """Every configuration of the Sz = 0 sector (the exact sampler's sum), (n_states, n_sites)."""
        return sz0_configurations(self.n_sites)

    def local_energy(self, logpsi: LogPsi, params: object, x: jax.Array) -> jax.Array:
        """Local energy E_L(s) = <s|H|psi> / <s|psi> of every configuration.

        E_L(s) = sum_b J_b [ s_i s_j / 4 + (1 - s_i s_j) / 4 * sign_b * psi(s^{ij}) / psi(s) ]
        where s^{ij} exchanges the spins of bond b = (i, j). Only the non-zero off-diagonal
        terms are evaluated: the (sample, bond) pairs with antiparallel spins (about half of
        all pairs; a parallel pair gives s^{ij} = s) are compacted into one list, and
        ``logpsi`` runs over their connected configurations in batches of ``chunk_size``
        configurations (this bounds the memory; on a CPU batches of 64-256 are also the
        fastest, bench/README.md), as many batches as the samples need.

        Args:
            logpsi: the model's log psi(params, x) (without the Marshall sign).
            params: model parameters.
            x: configurations, shape (n, n_sites), entries +-1.

        Returns:
            Complex local energies, shape (n,), in units of J1 (total, not per site).
        """
        pairs, couplings, signs = (jnp.asarray(a) for a in self.bonds())
        si_sj = x[:, pairs[:, 0]] * x[:, pairs[:, 1]]  # (n, n_bonds)
        diagonal = si_sj @ couplings / 4.0
        batch = self.chunk_size
        logpsi_x = map_in_chunks(lambda xc: logpsi(params, xc), x, batch)
        flippable = si_sj < 0
        rows, bond = jnp.nonzero(flippable, size=flippable.size, fill_value=0)
        log_conn = connected_logpsi(logpsi, params, x, rows, bond, self.swaps(),
                                    jnp.sum(flippable), batch)
        used = jnp.arange(rows.shape[0]) < jnp.sum(flippable)
        ratio = jnp.where(used, jnp.exp(log_conn - logpsi_x[rows]), 0.0)
        off_diagonal = jax.ops.segment_sum(
            couplings[bond] * signs[bond] / 2.0 * ratio, rows, num_segments=x.shape[0]
        )
        return diagonal + off_diagonal

    def swaps(self) -> jax.Array:
        """Site permutation of every bond's exchange: ``x[swaps[b]]`` is ``x`` with the spins
        of bond b exchanged; int array (n_bonds, n_sites), rows in the order of :meth:`bonds`."""
        pairs = self.bonds()[0]
        swap = np.tile(np.arange(self.n_sites), (len(pairs), 1))
        rows = np.arange(len(pairs))
        swap[rows, pairs[:, 0]], swap[rows, pairs[:, 1]] = pairs[:, 1], pairs[:, 0]
        return jnp.asarray(swap)


def connected_logpsi(logpsi: LogPsi, params: object, x: jax.Array, rows: jax.Array,
                     moves: jax.Array, perms: jax.Array, count: jax.Array,
                     batch: int) -> jax.Array:
    """log psi of the configurations ``x[rows[k], perms[moves[k]]]``, the first ``count``.

    Runs ``ceil(count / batch)`` calls of ``logpsi`` on ``batch`` configurations each (a
    ``while_loop`` with a traced trip count); entries from ``count`` on are left at 0.

    Args:
        logpsi: log psi(params, x_batch).
        params: model parameters.
        x: configurations, shape (n, n_sites).
        rows: which configuration each entry starts from, shape (m,).
        moves: which permutation each entry applies, shape (m,).
        perms: the site permutations, shape (n_moves, n_sites).
        count: number of valid leading entries (traced scalar, <= m).
        batch: configurations per call.

    Returns:
        Complex log psi, shape (m,).
    """
    m = rows.shape[0]
    batch = min(batch, m)
    n_batches = -(-m // batch)
    pad = n_batches * batch - m
    rows, moves = jnp.pad(rows, (0, pad)), jnp.pad(moves, (0, pad))
    out_dtype = jax.eval_shape(lambda xs: logpsi(params, xs), x[:1]).dtype
    out = jnp.zeros(n_batches * batch, out_dtype)

    def body(k: jax.Array, out: jax.Array) -> jax.Array:
        start = k * batch
        r = jax.lax.dynamic_slice_in_dim(rows, start, batch)
        b = jax.lax.dynamic_slice_in_dim(moves, start, batch)
        configs = jnp.take_along_axis(x[r], perms[b], axis=1)
        return jax.lax.dynamic_update_slice_in_dim(out, logpsi(params, configs), start, 0)

    out = jax.lax.fori_loop(0, (count + batch - 1) // batch, body, out)
    return out[:m]


def map_in_chunks(fn: Callable[[jax.Array], jax.Array], x: jax.Array, chunk: int) -> jax.Array:
    """Apply ``fn`` (batch -> batch) to ``x`` in sequential chunks of at most ``chunk`` rows.

    The rows are padded (with copies of the first row) to a multiple of the chunk and the
    padding is dropped from the result. With ``n <= chunk`` this is a single call.
    """
    n = x.shape[0]
    if n <= chunk:
        return fn(x)
    n_chunks = -(-n // chunk)
    pad = n_chunks * chunk - n
    xp = jnp.concatenate([x, jnp.repeat(x[:1], pad, axis=0)]) if pad else x
    out = jax.lax.map(fn, xp.reshape((n_chunks, chunk) + x.shape[1:]))
    return out.reshape((n_chunks * chunk,) + out.shape[2:])[:n]


def marshall_log_sign(L: int, x: jax.Array) -> jax.Array:
    """log of the Marshall sign: i pi * (number of up spins on sublattice A), shape x.shape[:-1]."""
    n_up_a = jnp.sum((x[..., sublattice_a(L)] > 0), axis=-1)
    return 1j * jnp.pi * (n_up_a % 2)


def from_config(cfg: object) -> J1J2:
    """Build the system from a validated ``[system] type = "j1j2"`` section."""
    return J1J2(L=cfg.L, J1=cfg.J1, J2=cfg.J2, marshall_sign=cfg.marshall_sign,
                chunk_size=cfg.chunk_size)


@dataclass(frozen=True, kw_only=True)
class J1J2Config:
    """Spin 1/2 J1-J2 Heisenberg model on the L x L periodic square lattice, total Sz = 0."""

    type: str = option("j1j2", "System type.")
    L: int = option(REQUIRED, "Linear size of the L x L periodic lattice (sites).", minimum=2)
    J1: float = option(1.0, "Nearest-neighbour coupling (energy unit).")
    J2: float = option(0.0, "Next-nearest-neighbour (diagonal) coupling, in units of J1.")
    marshall_sign: bool = option(
        True, "Multiply the wave function by the Marshall sign (-1)^(N_up on sublattice A)."
    )
    chunk_size: int = option(
        256, "Configurations per network call in the local energy (bounds the memory; "
        "divided by the number of terms of a symmetrized ViT; 64-256 are fastest on a CPU, a "
        "GPU wants thousands).",
        positive=True, numerical=True,
    )

    capabilities: ClassVar[frozenset[str]] = frozenset(
        {"spins", "fixed_magnetization", "square_lattice", "enumerable"})
    exact_solver: ClassVar[str] = "hpcvmc.reference.lattice_ed:exact_energy"
    """``hpcvmc exact``: Lanczos in the Sz = 0 sector (:mod:`hpcvmc.reference.lattice_ed`)."""

    def validate(self, cfg: Any) -> None:
        """Cross-key checks."""
        if (self.L * self.L) % 2:
            raise InputError(
                f"system.L = {self.L} gives {self.L ** 2} sites: total Sz = 0 needs an even "
                "number of sites"
            )

    @property
    def n_sites(self) -> int:
        """Number of lattice sites."""
        return self.L * self.L

    @property
    def memory_footprint(self) -> tuple[int, int, str]:
        """Bytes of one sample's local-energy data (the walker, the spin products and the
        compacted connected configurations: 8 N + 32 n_bonds), network passes per element of
        a local-energy chunk (1) and the key of the system size (:mod:`hpcvmc.resources`)."""
        n_bonds = 2 * self.n_sites * ((self.J1 != 0) + (self.J2 != 0))
        return 8 * self.n_sites + 32 * n_bonds, 1, "system.L"

    @property
    def n_states(self) -> int:
        """Number of basis states of the Sz = 0 sector, C(n_sites, n_sites / 2)."""
        return math.comb(self.n_sites, self.n_sites // 2)


register(Component("system", "j1j2", J1J2Config, from_config))
