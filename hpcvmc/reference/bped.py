"""Exact diagonalization of the Coulomb interaction projected onto the lowest N moire bands.

Spin-polarized electrons in the lowest N bands of the continuum model (`hpcvmc.reference.bands`)
on the n_k = N_sites k-points of the supercell torus (energies in E0, lengths in a_M). The modes
are m = (n, k), n < N, indexed m = n n_k + k (band-major: with N = 1, m is the k-point index):

    H = sum_{n,k} eps_{n,k} n_{n,k} + (1/2A) sum_{q != 0} v(q) :rho_q rho_{-q}: + N_e U xi / 2,

with eps_{n,k} the unshifted band energies (the Bloch states diagonalize the one-body part, so it
has no interband terms), v(q) = 2 pi U / |q|, q over all supercell reciprocal vectors (umklapp
included), rho_q the density projected onto the kept modes and xi the Madelung constant of the
torus (`hpcvmc.reference.hf.madelung_constant`; the normal-ordered operator does not produce it).
This is the continuum Hamiltonian restricted to the Fock space of the kept orbitals, so its lowest
eigenvalue is a rigorous upper bound to the exact ground-state energy, and it decreases
monotonically with N (the Fock spaces are nested).

In second quantization (c_m annihilates the Bloch state psi_m, periodic gauge psi_{k+G} = psi_k):

    H_int = 1/2 sum W[m1, m2, m3, m4] c+_m1 c+_m2 c_m3 c_m4,
    W[m1, m2, m3, m4] = (1/A) sum_{g: q != 0} v(q) Lambda[m1, m4, g] Lambda[m2, m3, delta - g],
    q = k1 - k4 + g,  delta = k3 + k4 - k1 - k2 (a moire reciprocal vector),
    Lambda[(n', k'), (n, k), g] = <psi_{n'k'}| exp(i (k' - k + g).r) |psi_{nk}>
                                = sum_G c_{k',n'}(G + g)^* c_{k,n}(G).

Many-body states are bit strings over the modes (bit m = occupation of mode m; fermionic order
c+_0 c+_1 ... so c_m carries the sign (-1)^(number of occupied j < m)). The Hamiltonian conserves
the total crystal momentum; each sector is built as a sparse matrix with vectorized bit operations
and its lowest state is found by Lanczos (ARPACK). The memory of the largest sector is estimated
before anything is built (`hpcvmc.reference.fock_budget`).
"""

from __future__ import annotations

import dataclasses
import math
import resource
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
from hpcvmc.reference.fock_budget import (
    MemoryBudgetError,
    MemoryEstimate,
    available_memory_bytes,
    estimate_memory,
    sector_dimensions,
)
from hpcvmc.reference.hf import coulomb_fourier, madelung_constant
from hpcvmc.systems.moire_lattice import (
    MoireParameters,
    moire_coordinates,
    moire_reciprocal_basis,
    momentum_labels,
    supercell_kpoints,
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


def mode_k_index(n_modes: int, n_k: int) -> np.ndarray:
    """k-point index of each mode m = n n_k + k (band-major order), shape (n_modes,)."""
    return np.arange(n_modes) % n_k


def mode_energies(bands: BandStructure) -> np.ndarray:
    """Band energies eps_{n,k} in mode order m = n n_k + k, shape (n_bands n_k,), in E0."""
    return bands.energies.T.ravel()


def form_factors(bands: BandStructure) -> tuple[np.ndarray, np.ndarray]:
    """Lambda[(n', p'), (n, p), g] = sum_G c_{p',n'}(G + g)^* c_{p,n}(G) for all kept bands.

    Modes are ordered m = n n_k + k (band-major), so with one band m is the k-point index.

    Args:
        bands: band structure on the supercell k-points (all its bands are used).

    Returns:
        Lambda: shape (n_modes, n_modes, n_g), dimensionless.
        g_int: the shifts g on the moire reciprocal basis, integers, shape (n_g, 2).
    """
    G = bands.G_int
    c = np.swapaxes(bands.coefficients, 0, 1).reshape(-1, len(G))
    g_int = np.unique((G[:, None, :] - G[None, :, :]).reshape(-1, 2), axis=0)
    lam = np.zeros((len(c), len(c), len(g_int)), dtype=complex)
    for n, g in enumerate(g_int):
        lam[:, :, n] = shift_coefficients(c, G, g).conj() @ c.T
    return lam, g_int


def interaction_tensor(params: MoireParameters, bands: BandStructure) -> np.ndarray:
    """Band-projected Coulomb matrix elements W[m1, m2, m3, m4] (module docstring), in E0.

    Args:
        params: model parameters (U and the supercell are used).
        bands: the kept bands on the supercell k-points, in `supercell_kpoints` order; modes
            m = n n_k + k.

    Returns:
        W, shape (n_modes,) * 4, zero unless k1 + k2 = k3 + k4 modulo the moire lattice.
    """
    k = bands.k
    n_k, n_bands = bands.energies.shape
    n_modes = n_k * n_bands
    kk = mode_k_index(n_modes, n_k)
    lam, g_int = form_factors(bands)
    g_cart = g_int @ moire_reciprocal_basis()
    table, offset = _index_table(g_int)
    lookup = _momentum_lookup(params, k)
    labels = momentum_labels(params.M, k)
    m2, m3 = (a.ravel() for a in np.meshgrid(np.arange(n_modes), np.arange(n_modes), indexing="ij"))
    W = np.zeros((n_modes,) * 4, dtype=complex)
    for m1 in range(n_modes):
        k4 = lookup[_code(labels[kk[m1]] + labels[kk[m2]] - labels[kk[m3]], n_k)]
        delta = np.rint(moire_coordinates(k[kk[m3]] + k[k4] - k[kk[m1]] - k[kk[m2]]))
        other = _lookup(table, offset, delta.astype(np.int64)[:, None, :] - g_int[None, :, :])
        second = np.where(other >= 0, lam[m2[:, None], m3[:, None], other], 0.0)
        v = coulomb_fourier((k[kk[m1]] - k[k4])[:, None, :] + g_cart[None, :, :], params.U)
        for n4 in range(n_bands):
            m4 = n4 * n_k + k4
            W[m1, m2, m3, m4] = np.sum(v * lam[m1, m4] * second, axis=1) / params.area
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


def momentum_sectors(states: np.ndarray, labels: np.ndarray, n_k: int | None = None) -> np.ndarray:
    """Code of the total crystal momentum (sum of occupied labels mod n_k) of each state.

    Args:
        states: bit strings, shape (n_states,).
        labels: momentum labels of the modes, shape (n_modes, 2), integers mod n_k.
        n_k: number of k-points of the torus (default n_modes: one band).

    Returns:
        Codes l_1 n_k + l_2, shape (n_states,).
    """
    n_k = len(labels) if n_k is None else n_k
    total = np.zeros((len(states), 2), dtype=np.int64)
    for mode in range(len(labels)):
        occupied = ((states >> np.uint64(mode)) & np.uint64(1)).astype(np.int64)
        total += occupied[:, None] * labels[mode]
    return _code(total, n_k)


def _parity(x: np.ndarray) -> np.ndarray:
    """Parity (0 or 1) of the number of set bits, as int8."""
    return (np.bitwise_count(x) & 1).astype(np.int8)


def diagonal_elements(states: np.ndarray, ham: BandHamiltonian) -> np.ndarray:
    """<s|H|s> = sum_m eps_m n_m + sum_{m<m'} E_pair[m, m'] n_m n_m' (E0, without N U xi / 2).

    Args:
        states: bit strings, shape (D,).
        ham: the projected Hamiltonian.

    Returns:
        Real array, shape (D,).
    """
    modes = np.arange(len(ham.eps), dtype=np.uint64)
    occupation = ((states[:, None] >> modes[None, :]) & np.uint64(1)).astype(float)
    return occupation @ ham.eps + np.sum((occupation @ ham.pair_energy) * occupation, axis=1)


def sector_hamiltonian(
    states: np.ndarray, ham: BandHamiltonian, ranker: StateRanker, lower_only: bool = True
) -> scipy.sparse.csr_matrix:
    """Lower triangle (with diagonal) of the projected Hamiltonian on one momentum sector.

    H[new, old] = A * sign for every term that maps |old> to |new>; only new > old is kept
    (the basis is sorted, so this is the strict lower triangle); see `full_matrix`.

    Args:
        states: ascending bit strings of the sector, shape (D,).
        ham: the projected Hamiltonian.
        ranker: colex ranker of the full Fock space of the same n_modes, N.
        lower_only: keep only new > old (the default); False keeps every term, giving the whole
            matrix (twice the memory; used to check its Hermiticity).

    Returns:
        CSR matrix L, shape (D, D), in E0 (without the constant N U xi / 2).
    """
    dim = len(states)
    local = np.full(math.comb(len(ham.eps), ranker.n_particles), -1, np.int32)
    local[ranker.rank(states)] = np.arange(dim, dtype=np.int32)
    rows, cols = [np.arange(dim, dtype=np.int32)], [np.arange(dim, dtype=np.int32)]
    vals = [diagonal_elements(states, ham).astype(complex)]
    for term in ham.terms:
        hit = np.nonzero((states & term.removed) == term.removed)[0].astype(np.int32)
        removed = states[hit] ^ term.removed
        i, j = np.nonzero((removed[:, None] & term.created[None, :]) == 0)
        new = removed[i] | term.created[j]
        if lower_only:
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
DEGENERACY_TOL = 1e-6
"""Bands n and n + 1 closer than this (E0) at some k count as one degenerate shell."""


def cut_shells(energies: np.ndarray, n_bands: int, tol: float = DEGENERACY_TOL) -> list[int]:
    """k-points where the band count cuts a degenerate shell: |eps_{N+1,k} - eps_{N,k}| < tol.

    Args:
        energies: band energies, shape (n_k, at least n_bands + 1), ascending per k.
        n_bands: number of kept bands N.
        tol: degeneracy tolerance in E0.

    Returns:
        Indices of those k-points.
    """
    gap = energies[:, n_bands] - energies[:, n_bands - 1]
    return [int(i) for i in np.nonzero(gap < tol)[0]]


def plan_memory(
    params: MoireParameters, n_bands: int, sectors: Iterable[int] | None = None
) -> tuple[MemoryEstimate, np.ndarray]:
    """Sector dimensions and the memory estimate of the largest requested sector.

    Args:
        params: model parameters.
        n_bands: number of kept bands.
        sectors: total-momentum indices (into `supercell_kpoints`); all if None.

    Returns:
        The estimate and the dimension of every sector in `supercell_kpoints` order.
    """
    k = supercell_kpoints(params.M)
    n_k = len(k)
    labels = np.mod(momentum_labels(params.M, k), n_k)
    mode_labels = labels[mode_k_index(n_bands * n_k, n_k)]
    codes = _code(labels, n_k)
    dims = sector_dimensions(mode_labels, params.n_electrons, n_k)[codes]
    pairs = sector_dimensions(mode_labels, 2, n_k)
    targets = float(np.sum(pairs * (pairs - 1)) / max(1, np.sum(pairs)))
    chosen = range(n_k) if sectors is None else list(sectors)
    largest = max((int(dims[s]) for s in chosen), default=0)
    return estimate_memory(n_bands * n_k, params.n_electrons, largest, targets), dims


def run_bped(
    params: MoireParameters,
    n_bands: int = 1,
    g_max: float = DEFAULT_G_MAX,
    sectors: Iterable[int] | None = None,
    tol: float = 1e-12,
    max_memory_bytes: float | None = None,
) -> dict[str, Any]:
    """Band-projected ED in the lowest `n_bands` bands: lowest energy of every momentum sector.

    Args:
        params: model parameters (spin-polarized only).
        n_bands: number of lowest bands kept (the modes are (n, k), n < n_bands).
        g_max: plane-wave cut-off of the Bloch states, in units of |g_1|.
        sectors: indices of the total momenta (into `supercell_kpoints`) to solve; all if None.
        tol: ARPACK relative tolerance.
        max_memory_bytes: memory budget; the free physical memory if None.

    Returns:
        JSON-able dict: "energy_E0", "energy_meV", "energy_per_electron_E0",
        "energy_per_electron_meV" (lowest over the solved sectors, including N U xi / 2),
        "ground_sector", "sectors" (per non-empty sector: index, k, label, dimension,
        nnz_lower_triangle, energy_E0, energy_per_electron_meV, wall_s), "n_bands",
        "cut_degenerate_shells" (k-point indices where band N + 1 is degenerate with band N),
        "memory_estimate_gb", "peak_rss_gb", "eps_nk_E0", "madelung_xi", "g_max", "wall_s".

    Raises:
        NotImplementedError: for an unpolarized system.
        ValueError: if N exceeds the number of modes, or a sector index is out of range.
        MemoryBudgetError: if the estimated memory exceeds the budget (checked before building).
    """
    if not params.spin_polarized:
        raise NotImplementedError("run_bped supports spin-polarized systems only")
    start = time.perf_counter()
    n = params.n_electrons
    n_k = params.n_sites
    n_modes = n_bands * n_k
    if n_bands < 1 or n > n_modes or n_modes > 63:
        raise ValueError(f"{n} electrons in {n_bands} bands of {n_k} k-points: need "
                         f"N <= n_bands x n_k <= 63")
    if sectors is not None:
        sectors = sorted(set(int(s) for s in sectors))
        if any(s < 0 or s >= n_k for s in sectors):
            raise ValueError(f"momentum sectors must lie in 0..{n_k - 1}, got {sectors}")
    estimate, dims = plan_memory(params, n_bands, sectors)
    budget = available_memory_bytes() if max_memory_bytes is None else max_memory_bytes
    if estimate.total_bytes > budget:
        raise MemoryBudgetError(
            f"{n_bands} bands: sector dimension {estimate.dimension:,} x "
            f"~{estimate.nnz_per_row:.0f} non-zeros per row needs ~"
            f"{estimate.total_bytes / 1e9:.1f} GB, more than the {budget / 1e9:.1f} GB allowed")
    all_bands = supercell_bands(params, n_bands + 1, g_max)
    cut = cut_shells(all_bands.energies, n_bands)
    bands = dataclasses.replace(
        all_bands, energies=all_bands.energies[:, :n_bands],
        coefficients=all_bands.coefficients[:, :n_bands],
    )
    eps = mode_energies(bands)
    ham = band_hamiltonian(eps, interaction_tensor(params, bands))
    xi = madelung_constant(params.cell)
    constant = 0.5 * n * params.U * xi
    labels = momentum_labels(params.M, bands.k)
    states = fock_states(n_modes, n)
    codes = momentum_sectors(states, labels[mode_k_index(n_modes, n_k)], n_k)
    ranker = StateRanker(n_modes, n)
    results = []
    for index in range(n_k) if sectors is None else sectors:
        if dims[index] == 0:
            continue
        t0 = time.perf_counter()
        sector = states[codes == _code(labels[index], n_k)]
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
        "method": f"band-projected exact diagonalization ({n_bands} lowest bands, spin-polarized)",
        "energy_E0": e,
        "energy_meV": e * params.E0_meV,
        "energy_per_electron_E0": e / n,
        "energy_per_electron_meV": e * params.E0_meV / n,
        "ground_sector": ground["index"],
        "sectors": results,
        "n_bands": n_bands,
        "cut_degenerate_shells": cut,
        "memory_estimate_gb": estimate.total_bytes / 1e9,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9,
        "eps_nk_E0": bands.energies.tolist(),
        "madelung_xi": xi,
        "g_max": g_max,
        "wall_s": time.perf_counter() - start,
    }
