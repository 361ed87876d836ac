"""Exact diagonalization of the Coulomb interaction projected onto the lowest moire band.

Spin-polarized electrons in the lowest band of the continuum model (`hpcvmc.reference.bands`) on
the N_sites k-points of the supercell torus (energies in E0, lengths in a_M):

    H = sum_k eps_k n_k + (1/2A) sum_{q != 0} v(q) :rho_q rho_{-q}: + N U xi / 2,

with eps_k the unshifted lowest-band energies, v(q) = 2 pi U / |q|, q over all supercell
reciprocal vectors (umklapp included), rho_q the band-projected density and xi the Madelung
constant of the torus (`hpcvmc.reference.hf.madelung_constant`). The constant is the self-energy
of the Ewald sum: with it, energies are on the same scale as VMC and Hartree-Fock.

In second quantization (c_k annihilates the Bloch state psi_k, periodic gauge psi_{k+G} = psi_k):

    H_int = 1/2 sum W[p1, p2, p3, p4] c+_p1 c+_p2 c_p3 c_p4,
    W[p1, p2, p3, p4] = (1/A) sum_{g: q != 0} v(q) Lambda[p1, p4, g] Lambda[p2, p3, delta - g],
    q = p1 - p4 + g,  delta = p3 + p4 - p1 - p2 (a moire reciprocal vector),
    Lambda[p', p, g] = <psi_p'| exp(i (p' - p + g).r) |psi_p> = sum_G c_p'(G + g)^* c_p(G).

Many-body states are bit strings over the k-points (bit i = occupation of k-point i; fermionic
order c+_0 c+_1 ... so c_i carries the sign (-1)^(number of occupied j < i)). The Hamiltonian
conserves the total crystal momentum; each sector is built as a sparse matrix with vectorized bit
operations and its lowest state is found by Lanczos (ARPACK).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterable
from typing import Any

import numpy as np
import scipy.sparse
import scipy.sparse.linalg

from hpcvmc.reference.bands import (
    DEFAULT_G_MAX,
    BandStructure,
    shift_coefficients,
    supercell_bands,
)
from hpcvmc.reference.hf import coulomb_fourier, madelung_constant
from hpcvmc.systems.moire_lattice import (
    MoireParameters,
    moire_coordinates,
    moire_reciprocal_basis,
    momentum_labels,
)

DENSE_LIMIT = 400
"""Sectors up to this dimension are diagonalized densely."""


# ------------------------------------------------------------------------------------------------
# Two-body matrix elements
# ------------------------------------------------------------------------------------------------
def _index_table(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dense lookup table of integer 2-vectors: table[v - offset] = row of v, -1 elsewhere."""
    offset = vectors.min(axis=0)
    table = -np.ones(tuple(vectors.max(axis=0) - offset + 1), dtype=np.int64)
    table[tuple((vectors - offset).T)] = np.arange(len(vectors))
    return table, offset


def _lookup(table: np.ndarray, offset: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Rows of integer 2-vectors (..., 2) in an `_index_table`, -1 where absent, shape (...)."""
    pos = vectors - offset
    inside = np.all((pos >= 0) & (pos < np.array(table.shape)), axis=-1)
    pos = np.where(inside[..., None], pos, 0)
    return np.where(inside, table[pos[..., 0], pos[..., 1]], -1)


def form_factors(bands: BandStructure) -> tuple[np.ndarray, np.ndarray]:
    """Lambda[p', p, g] = sum_G c_p'(G + g)^* c_p(G) for the lowest band, every g in G - G.

    Args:
        bands: band structure on the supercell k-points (band 0 is used).

    Returns:
        Lambda: shape (n_k, n_k, n_g), dimensionless.
        g_int: the shifts g on the moire reciprocal basis, integers, shape (n_g, 2).
    """
    G = bands.G_int
    c = bands.coefficients[:, 0, :]
    g_int = np.unique((G[:, None, :] - G[None, :, :]).reshape(-1, 2), axis=0)
    lam = np.zeros((len(c), len(c), len(g_int)), dtype=complex)
    for n, g in enumerate(g_int):
        lam[:, :, n] = shift_coefficients(c, G, g).conj() @ c.T
    return lam, g_int


def interaction_tensor(params: MoireParameters, bands: BandStructure) -> np.ndarray:
    """Band-projected Coulomb matrix elements W[p1, p2, p3, p4] (module docstring), in E0.

    Args:
        params: model parameters (U and the supercell are used).
        bands: lowest band on the supercell k-points, in `supercell_kpoints` order.

    Returns:
        W, shape (n_k, n_k, n_k, n_k), zero unless p1 + p2 = p3 + p4 modulo the moire lattice.
    """
    k = bands.k
    n_k = len(k)
    lam, g_int = form_factors(bands)
    g_cart = g_int @ moire_reciprocal_basis()
    table, offset = _index_table(g_int)
    lookup = _momentum_lookup(params, k)
    labels = momentum_labels(params.M, k)
    p2, p3 = (a.ravel() for a in np.meshgrid(np.arange(n_k), np.arange(n_k), indexing="ij"))
    W = np.zeros((n_k,) * 4, dtype=complex)
    for p1 in range(n_k):
        p4 = lookup[_code(labels[p1] + labels[p2] - labels[p3], n_k)]
        delta = np.rint(moire_coordinates(k[p3] + k[p4] - k[p1] - k[p2])).astype(np.int64)
        other = _lookup(table, offset, delta[:, None, :] - g_int[None, :, :])
        second = np.where(other >= 0, lam[p2[:, None], p3[:, None], other], 0.0)
        v = coulomb_fourier((k[p1] - k[p4])[:, None, :] + g_cart[None, :, :], params.U)
        W[p1, p2, p3, p4] = np.sum(v * lam[p1, p4] * second, axis=1) / params.area
    return W


def _code(labels: np.ndarray, n: int) -> np.ndarray:
    """Integer code l_1 n + l_2 of momentum labels (reduced mod n), shape (...)."""
    labels = np.mod(labels, n)
    return labels[..., 0] * n + labels[..., 1]


def _momentum_lookup(params: MoireParameters, k: np.ndarray) -> np.ndarray:
    """Table code -> index of the k-point with that momentum label, shape (n_k^2,)."""
    n_k = len(k)
    lookup = -np.ones(n_k * n_k, dtype=int)
    lookup[_code(momentum_labels(params.M, k), n_k)] = np.arange(n_k)
    return lookup


@dataclasses.dataclass(frozen=True)
class PairTerm:
    """All two-body terms A c+_p1 c+_p2 c_p3 c_p4 (p1 < p2) that empty one pair p3 < p4.

    Fermionic signs: c_p3 c_p4 on s gives (-1)^popcount(s & bits in [p3, p4)) (p3 itself is
    occupied); c+_p1 c+_p2 on an s' with p1, p2 empty gives (-1)^popcount(s' & bits in [p1, p2)).
    """

    removed: np.uint64
    """Bit mask of p3 and p4."""
    removed_sign: np.uint64
    """Bits p3 <= j < p4."""
    created: np.ndarray
    """Bit masks of the created pairs p1, p2, shape (n_terms,), uint64."""
    created_sign: np.ndarray
    """Bits in [p1, p2) of each created pair, shape (n_terms,), uint64."""
    amplitude: np.ndarray
    """A[p1, p2, p3, p4] in E0, shape (n_terms,)."""


def _mask(lo: np.ndarray | int, hi: np.ndarray | int) -> np.ndarray:
    """uint64 mask of the bits lo <= j < hi."""
    one = np.uint64(1)
    lo, hi = np.asarray(lo, dtype=np.uint64), np.asarray(hi, dtype=np.uint64)
    return ((one << hi) - one) ^ ((one << lo) - one)


@dataclasses.dataclass(frozen=True)
class BandHamiltonian:
    """The projected Hamiltonian split into its diagonal and off-diagonal parts in the Fock basis.

    H = sum_k eps_k n_k + sum_{p<p'} E_pair[p, p'] n_p n_p' + (pair hops in `terms`).
    """

    eps: np.ndarray
    """Lowest-band energies eps_k, shape (n_k,), in E0."""
    pair_energy: np.ndarray
    """E_pair[p, p'] = -A[p, p', p, p'] (Hartree minus exchange of an occupied pair) for p < p',
    zero elsewhere, shape (n_k, n_k), in E0."""
    terms: list[PairTerm]
    """Off-diagonal terms ({p1, p2} != {p3, p4}), grouped by the annihilated pair."""


def band_hamiltonian(eps: np.ndarray, W: np.ndarray, tol: float = 1e-14) -> BandHamiltonian:
    """Antisymmetrize the two-body matrix elements and split off the diagonal.

    H_int = sum_{p1<p2, p3<p4} A[p1, p2, p3, p4] c+_p1 c+_p2 c_p3 c_p4 with
    A = (W[p1,p2,p3,p4] - W[p2,p1,p3,p4] - W[p1,p2,p4,p3] + W[p2,p1,p4,p3]) / 2;
    the terms with (p1, p2) = (p3, p4) are -A n_p3 n_p4.

    Args:
        eps: lowest-band energies, shape (n_k,), in E0.
        W: matrix elements, shape (n_k,) * 4, in E0.
        tol: off-diagonal amplitudes below this magnitude are dropped.

    Returns:
        The Hamiltonian in the form used by `sector_hamiltonian`.
    """
    A = 0.5 * (W - W.transpose(1, 0, 2, 3) - W.transpose(0, 1, 3, 2) + W.transpose(1, 0, 3, 2))
    n_k = W.shape[0]
    c1, c2 = np.triu_indices(n_k, 1)
    pair_energy = np.zeros((n_k, n_k))
    pair_energy[c1, c2] = -A[c1, c2, c1, c2].real
    terms = []
    for p3, p4 in zip(c1, c2):
        amp = A[c1, c2, p3, p4]
        keep = (np.abs(amp) > tol) & ((c1 != p3) | (c2 != p4))
        if np.any(keep):
            terms.append(PairTerm(
                removed=_mask(p3, p3 + 1) | _mask(p4, p4 + 1),
                removed_sign=_mask(p3, p4),
                created=_mask(c1[keep], c1[keep] + 1) | _mask(c2[keep], c2[keep] + 1),
                created_sign=_mask(c1[keep], c2[keep]),
                amplitude=amp[keep],
            ))
    return BandHamiltonian(eps=np.asarray(eps, dtype=float), pair_energy=pair_energy, terms=terms)


# ------------------------------------------------------------------------------------------------
# Many-body basis and sparse sector Hamiltonians
# ------------------------------------------------------------------------------------------------
def fock_states(n_modes: int, n_particles: int) -> np.ndarray:
    """All bit strings of n_modes bits with n_particles set, ascending (= colexicographic order).

    Args:
        n_modes: number of single-particle states (at most 63).
        n_particles: number of electrons.

    Returns:
        uint64 array of length C(n_modes, n_particles).
    """
    by_count = {0: np.zeros(1, dtype=np.uint64)}
    for mode in range(n_modes):
        bit = np.uint64(1) << np.uint64(mode)
        remaining = n_modes - mode - 1
        reachable = range(max(0, n_particles - remaining), min(mode + 1, n_particles) + 1)
        by_count = {
            n: np.concatenate([by_count.get(n, _EMPTY), by_count.get(n - 1, _EMPTY) | bit])
            for n in reachable
        }
    return by_count[n_particles]


_EMPTY = np.zeros(0, dtype=np.uint64)


class StateRanker:
    """Index of a bit string in the ascending list of all C(n_modes, N) strings.

    Colexicographic rank: rank(s) = sum_t C(j_t, t + 1) over the set bits j_0 < j_1 < ...,
    evaluated with one table lookup per 14-bit chunk.
    """

    CHUNK = 14

    def __init__(self, n_modes: int, n_particles: int) -> None:
        """Tabulate the chunk contributions.

        Args:
            n_modes: number of modes.
            n_particles: number of set bits.
        """
        self.n_particles = n_particles
        self.tables = [self._table(start, n_particles) for start in range(0, n_modes, self.CHUNK)]

    def _table(self, start: int, n_particles: int) -> np.ndarray:
        """T[v, m] = sum_t C(start + j_t, m + t + 1) over the set bits j_0 < j_1 < ... of v.

        Returns:
            int64 array, shape (2^CHUNK, N + 1).
        """
        binom = np.zeros((start + self.CHUNK, n_particles + self.CHUNK + 2), dtype=np.int64)
        for n in range(binom.shape[0]):
            binom[n, : n + 1] = [math.comb(n, k) for k in range(n + 1)][: binom.shape[1]]
        values = np.arange(2**self.CHUNK)
        table = np.zeros((len(values), n_particles + 1), dtype=np.int64)
        seen = np.zeros(len(values), dtype=np.int64)
        for j in range(self.CHUNK):
            has = (values >> j) & 1
            for m in range(n_particles + 1):
                table[:, m] += has * binom[start + j, m + seen + 1]
            seen += has
        return table

    def rank(self, states: np.ndarray) -> np.ndarray:
        """Colex ranks of uint64 bit strings with N set bits, shape like states (int64)."""
        rank = np.zeros(len(states), dtype=np.int64)
        below = np.zeros(len(states), dtype=np.intp)
        low = np.uint64(2**self.CHUNK - 1)
        for c, table in enumerate(self.tables):
            chunk = ((states >> np.uint64(c * self.CHUNK)) & low).astype(np.intp)
            rank += table[chunk, below]
            below += np.bitwise_count(chunk.astype(np.uint64))
        return rank


def momentum_sectors(states: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Code of the total crystal momentum (sum of occupied labels mod n_k) of each state.

    Args:
        states: bit strings, shape (n_states,).
        labels: momentum labels of the modes, shape (n_k, 2), integers mod n_k.

    Returns:
        Codes l_1 n_k + l_2, shape (n_states,).
    """
    n_k = len(labels)
    total = np.zeros((len(states), 2), dtype=np.int64)
    for mode in range(n_k):
        occupied = ((states >> np.uint64(mode)) & np.uint64(1)).astype(np.int64)
        total += occupied[:, None] * labels[mode]
    return _code(total, n_k)


def _parity(x: np.ndarray) -> np.ndarray:
    """Parity (0 or 1) of the number of set bits, as int8."""
    return (np.bitwise_count(x) & 1).astype(np.int8)


def sector_hamiltonian(
    states: np.ndarray, ham: BandHamiltonian, ranker: StateRanker
) -> scipy.sparse.csr_matrix:
    """Lower triangle (with diagonal) of the projected Hamiltonian on one momentum sector.

    H[new, old] = A * sign for every term that maps |old> to |new>; only new > old is kept
    (the basis is sorted, so this is the strict lower triangle); see `full_matrix`.

    Args:
        states: ascending bit strings of the sector, shape (D,).
        ham: the projected Hamiltonian.
        ranker: colex ranker of the full Fock space of the same n_modes, N.

    Returns:
        CSR matrix L, shape (D, D), in E0 (without the constant N U xi / 2).
    """
    dim = len(states)
    local = np.full(math.comb(len(ham.eps), ranker.n_particles), -1, np.int32)
    local[ranker.rank(states)] = np.arange(dim, dtype=np.int32)
    modes = np.arange(len(ham.eps), dtype=np.uint64)
    occupation = ((states[:, None] >> modes[None, :]) & np.uint64(1)).astype(float)
    diag = occupation @ ham.eps + np.sum((occupation @ ham.pair_energy) * occupation, axis=1)
    rows, cols = [np.arange(dim, dtype=np.int32)], [np.arange(dim, dtype=np.int32)]
    vals = [diag.astype(complex)]
    del occupation
    for term in ham.terms:
        hit = np.nonzero((states & term.removed) == term.removed)[0].astype(np.int32)
        removed = states[hit] ^ term.removed
        i, j = np.nonzero((removed[:, None] & term.created[None, :]) == 0)
        new = removed[i] | term.created[j]
        lower = new > states[hit[i]]
        i, j, new = i[lower], j[lower], new[lower]
        sign = _parity(removed[i] & term.created_sign[j])
        sign ^= _parity(states[hit[i]] & term.removed_sign)
        rows.append(local[ranker.rank(new)])
        cols.append(hit[i])
        vals.append(term.amplitude[j] * (1 - 2 * sign.astype(np.float64)))
    row, col, val = (np.concatenate(x) for x in (rows, cols, vals))
    del rows, cols, vals
    return scipy.sparse.csr_matrix((val, (row, col)), shape=(dim, dim))


def full_matrix(lower: scipy.sparse.csr_matrix) -> scipy.sparse.csr_matrix:
    """Hermitian matrix H = L + L^H - diag(L) from its lower triangle L."""
    return (lower + lower.conj().T - scipy.sparse.diags(lower.diagonal())).tocsr()


def hermitian_operator(lower: scipy.sparse.csr_matrix) -> scipy.sparse.linalg.LinearOperator:
    """H x = L x + conj(L^T conj(x)) - diag(L) x without forming the upper triangle."""
    diag = lower.diagonal()
    lower_t = lower.T

    def matvec(x: np.ndarray) -> np.ndarray:
        x = np.ravel(x)
        return lower @ x + np.conj(lower_t @ np.conj(x)) - diag * x

    return scipy.sparse.linalg.LinearOperator(lower.shape, matvec=matvec, dtype=complex)


def lowest_eigenvalue(lower: scipy.sparse.csr_matrix, tol: float = 1e-12, seed: int = 0) -> float:
    """Lowest eigenvalue of the Hermitian matrix with lower triangle L (dense if small, else
    Lanczos: ARPACK eigsh with relative tolerance `tol`)."""
    if lower.shape[0] <= DENSE_LIMIT:
        return float(np.linalg.eigvalsh(full_matrix(lower).toarray())[0])
    v0 = np.random.default_rng(seed).normal(size=lower.shape[0]).astype(complex)
    op = hermitian_operator(lower)
    value = scipy.sparse.linalg.eigsh(op, k=1, which="SA", tol=tol, v0=v0,
                                      return_eigenvectors=False)
    return float(value[0])


# ------------------------------------------------------------------------------------------------
# Driver
# ------------------------------------------------------------------------------------------------
def run_bped(
    params: MoireParameters,
    g_max: float = DEFAULT_G_MAX,
    sectors: Iterable[int] | None = None,
    tol: float = 1e-12,
) -> dict[str, Any]:
    """Band-projected ED: lowest energy in every total-momentum sector.

    Args:
        params: model parameters (spin-polarized only).
        g_max: plane-wave cut-off of the Bloch states, in units of |g_1|.
        sectors: indices of the total momenta (into `supercell_kpoints`) to solve; all if None.
        tol: ARPACK relative tolerance.

    Returns:
        JSON-able dict: "energy_E0", "energy_meV", "energy_per_electron_E0",
        "energy_per_electron_meV" (lowest over the solved sectors, including N U xi / 2),
        "ground_sector", "sectors" (per non-empty sector: index, k, label, dimension,
        nnz_lower_triangle, energy_E0, energy_per_electron_meV, wall_s), "eps_k_E0",
        "madelung_xi", "g_max", "wall_s".

    Raises:
        NotImplementedError: for an unpolarized system.
        ValueError: if N exceeds the number of k-points.
    """
    if not params.spin_polarized:
        raise NotImplementedError("run_bped supports spin-polarized systems only")
    start = time.perf_counter()
    n = params.n_electrons
    bands = supercell_bands(params, 1, g_max)
    n_k = len(bands.k)
    if n > n_k:
        raise ValueError(f"{n} electrons do not fit into the lowest band of {n_k} k-points")
    eps = bands.energies[:, 0]
    ham = band_hamiltonian(eps, interaction_tensor(params, bands))
    xi = madelung_constant(params.cell)
    constant = 0.5 * n * params.U * xi
    labels = momentum_labels(params.M, bands.k)
    states = fock_states(n_k, n)
    codes = momentum_sectors(states, labels)
    ranker = StateRanker(n_k, n)
    results = []
    for index in range(n_k) if sectors is None else sectors:
        t0 = time.perf_counter()
        sector = states[codes == _code(labels[index], n_k)]
        if len(sector) == 0:
            continue
        H = sector_hamiltonian(sector, ham, ranker)
        energy = lowest_eigenvalue(H, tol) + constant
        results.append({
            "index": int(index),
            "k": bands.k[index].tolist(),
            "label": labels[index].tolist(),
            "dimension": int(len(sector)),
            "nnz_lower_triangle": int(H.nnz),
            "energy_E0": energy,
            "energy_per_electron_meV": energy * params.E0_meV / n,
            "wall_s": time.perf_counter() - t0,
        })
        del H
    ground = min(results, key=lambda r: r["energy_E0"])
    e = ground["energy_E0"]
    return {
        "method": "band-projected exact diagonalization (lowest band, spin-polarized)",
        "energy_E0": e,
        "energy_meV": e * params.E0_meV,
        "energy_per_electron_E0": e / n,
        "energy_per_electron_meV": e * params.E0_meV / n,
        "ground_sector": ground["index"],
        "sectors": results,
        "eps_k_E0": eps.tolist(),
        "madelung_xi": xi,
        "g_max": g_max,
        "wall_s": time.perf_counter() - start,
    }
