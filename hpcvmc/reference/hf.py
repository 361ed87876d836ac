"""Unrestricted (spin-polarized) Hartree-Fock for moire electrons on a supercell torus.

Hamiltonian (energies in E0, lengths in a_M; `hpcvmc.reference.bands` for h):

    H = sum_i h(r_i) + U [ 1/2 sum_{i != j} phi(r_i - r_j) + N xi / 2 ],

the Ewald energy of N electrons with a uniform neutralizing background on the torus of area A,
phi(r) = (1/A) sum_{q != 0} (2 pi / |q|) exp(i q.r) and xi its Madelung constant
(`madelung_constant`). This is exactly the convention of the VMC local energy, so HF totals are
directly comparable to VMC totals.

Orbitals are expanded in the plane waves exp(i Q.r)/sqrt(A) of the supercell reciprocal lattice,
|Q| <= q_max |g_1| (this contains k + G for every supercell k-point k and moire vector G, so any
translation-symmetry breaking compatible with the torus is allowed). With the one-body density
matrix P[Q, Q'] = <c+_Q' c_Q> and v(q) = 2 pi U / |q| (q != 0, the q = 0 term cancels against the
background):

    E_HF = tr(h P) + 1/2 tr((J + K) P) + N U xi / 2,
    J[a, b] = (1/A) v(a - b) rho(a - b),        rho(p) = sum_{Q - Q' = p} P[Q, Q'],
    K[a, b] = -(1/A) sum_{q != 0} v(q) P[a - q, b - q].

The self-exchange cancels the self-Hartree energy, so the constant N U xi / 2 is all that remains
of the Ewald self-energy. The exchange is a convolution along each diagonal d = a - b of P and is
computed with FFTs on a grid large enough to exclude aliasing.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.fft
import scipy.special

from hpcvmc.reference.bands import potential_fourier
from hpcvmc.systems.moire_lattice import (
    G_NORM,
    SQRT3,
    MoireParameters,
    moire_sites,
    sqrt3_sublattice,
    supercell_reciprocal,
    supports_sqrt3,
)

DEFAULT_Q_MAX = 3.0
"""Default plane-wave cut-off |Q| <= 3 |g_1|; see tests/test_hf.py for its convergence."""
DEFAULT_GUESSES = ("fermi_liquid", "honeycomb", "random")


# ------------------------------------------------------------------------------------------------
# Coulomb on the torus
# ------------------------------------------------------------------------------------------------
def _lattice_points(basis: np.ndarray, radius: float) -> np.ndarray:
    """All n_1 v_1 + n_2 v_2 with norm <= radius (basis rows v_i), shape (n, 2)."""
    n_max = int(np.ceil(radius / np.min(np.abs(np.linalg.svd(basis, compute_uv=False))))) + 1
    span = np.arange(-n_max, n_max + 1)
    n = np.stack(np.meshgrid(span, span, indexing="ij"), axis=-1).reshape(-1, 2)
    points = n @ basis
    return points[np.linalg.norm(points, axis=1) <= radius]


def _ewald_alpha(cell: np.ndarray) -> float:
    """Splitting parameter alpha = sqrt(pi / A) balancing the real- and reciprocal-space sums."""
    return float(np.sqrt(np.pi / abs(np.linalg.det(cell))))


def madelung_constant(cell: np.ndarray, alpha: float | None = None, tol: float = 1e-16) -> float:
    """Madelung constant xi of the torus (self-interaction of a charge with its images), in 1/a_M.

    xi = sum_{L != 0} erfc(alpha|L|)/|L| + (2 pi/A) sum_{G != 0} erfc(|G|/(2 alpha))/|G|
         - 2 sqrt(pi)/(alpha A) - 2 alpha/sqrt(pi),

    independent of alpha (PHYSICS.md section 3).

    Args:
        cell: supercell vectors, shape (2, 2), rows L_1, L_2, in a_M.
        alpha: Ewald splitting parameter in 1/a_M (default sqrt(pi / A)).
        tol: truncation of both sums where erfc falls below `tol`.

    Returns:
        xi in 1/a_M.
    """
    area = abs(np.linalg.det(cell))
    alpha = _ewald_alpha(cell) if alpha is None else alpha
    x_cut = float(scipy.special.erfcinv(tol))
    L = _lattice_points(cell, x_cut / alpha)
    L = np.linalg.norm(L, axis=1)
    L = L[L > 1e-12]
    G = _lattice_points(2.0 * np.pi * np.linalg.inv(cell).T, 2.0 * alpha * x_cut)
    G = np.linalg.norm(G, axis=1)
    G = G[G > 1e-12]
    real = np.sum(scipy.special.erfc(alpha * L) / L)
    recip = 2.0 * np.pi / area * np.sum(scipy.special.erfc(G / (2.0 * alpha)) / G)
    background = 2.0 * np.sqrt(np.pi) / (alpha * area)
    return float(real + recip - background - 2.0 * alpha / np.sqrt(np.pi))


def ewald_potential(
    r: np.ndarray, cell: np.ndarray, alpha: float | None = None, tol: float = 1e-16
) -> np.ndarray:
    """Periodic Coulomb potential with neutralizing background, phi(r) (in 1/a_M).

    phi(r) = sum_L erfc(alpha|r+L|)/|r+L| + (2 pi/A) sum_{G != 0} cos(G.r) erfc(|G|/(2 alpha))/|G|
             - 2 sqrt(pi)/(alpha A).

    Args:
        r: separations, shape (n, 2), in a_M, not on a lattice point.
        cell: supercell vectors, shape (2, 2), rows L_1, L_2.
        alpha: Ewald splitting parameter (default sqrt(pi / A)).
        tol: truncation of both sums.

    Returns:
        phi(r), shape (n,).
    """
    r = np.atleast_2d(r)
    area = abs(np.linalg.det(cell))
    alpha = _ewald_alpha(cell) if alpha is None else alpha
    x_cut = float(scipy.special.erfcinv(tol))
    frac = r @ np.linalg.inv(cell)
    r = (frac - np.round(frac)) @ cell
    L = _lattice_points(cell, x_cut / alpha + np.max(np.linalg.norm(cell, axis=1)))
    d = np.linalg.norm(r[:, None, :] + L[None, :, :], axis=-1)
    real = np.sum(scipy.special.erfc(alpha * d) / d, axis=1)
    G = _lattice_points(2.0 * np.pi * np.linalg.inv(cell).T, 2.0 * alpha * x_cut)
    G = G[np.linalg.norm(G, axis=1) > 1e-12]
    g = np.linalg.norm(G, axis=1)
    recip = 2.0 * np.pi / area * (np.cos(r @ G.T) @ (scipy.special.erfc(g / (2.0 * alpha)) / g))
    return real + recip - 2.0 * np.sqrt(np.pi) / (alpha * area)


def coulomb_fourier(q: np.ndarray, U: float) -> np.ndarray:
    """2D Coulomb kernel v(q) = 2 pi U / |q|, set to 0 at q = 0 (cancelled by the background).

    Args:
        q: wave vectors, shape (..., 2), in 1/a_M.
        U: Coulomb strength a_M / a_B*.

    Returns:
        v(q) in E0 a_M^2, shape (...).
    """
    norm = np.linalg.norm(q, axis=-1)
    safe = np.where(norm > 1e-12, norm, 1.0)
    return np.where(norm > 1e-12, 2.0 * np.pi * U / safe, 0.0)


# ------------------------------------------------------------------------------------------------
# Plane-wave basis of the supercell and the Fock operator
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SupercellBasis:
    """Plane waves exp(i Q.r)/sqrt(A) of the supercell and the index maps of the Fock build."""

    Q_int: np.ndarray
    """Q on the supercell reciprocal basis (B_1, B_2), integers, shape (n, 2)."""
    Q: np.ndarray
    """Cartesian Q, shape (n, 2), in 1/a_M."""
    area: float
    """Supercell area A in a_M^2."""
    grid: tuple[int, int]
    """FFT grid (n_1, n_2) for the exchange convolution, n_i > 2 (max - min of Q_int[:, i])."""
    diff_int: np.ndarray
    """The distinct differences d = a - b, integers, shape (n_d, 2)."""
    diff_index: np.ndarray
    """Index of a - b into `diff_int` for every pair, shape (n, n)."""
    flat_pos: np.ndarray
    """Flattened FFT-grid position of each Q (Q_int mod grid), shape (n,)."""


def supercell_basis(params: MoireParameters, q_max: float = DEFAULT_Q_MAX) -> SupercellBasis:
    """Supercell reciprocal vectors with |Q| <= q_max |g_1| and the index maps for the Fock build.

    Args:
        params: model parameters (M is used).
        q_max: cut-off in units of |g_1| = 4 pi / sqrt3.

    Returns:
        The basis, sorted by |Q|.
    """
    B = supercell_reciprocal(params.M)
    r = int(np.ceil(q_max * G_NORM / np.min(np.linalg.svd(B, compute_uv=False)))) + 1
    span = np.arange(-r, r + 1)
    n = np.stack(np.meshgrid(span, span, indexing="ij"), axis=-1).reshape(-1, 2)
    norm = np.linalg.norm(n @ B, axis=1)
    keep = norm <= q_max * G_NORM + 1e-9
    Q_int = n[keep][np.argsort(norm[keep], kind="stable")]
    extent = Q_int.max(axis=0) - Q_int.min(axis=0)
    grid = tuple(scipy.fft.next_fast_len(int(2 * e + 1)) for e in extent)
    pair = Q_int[:, None, :] - Q_int[None, :, :]
    diff_int, inverse = np.unique(pair.reshape(-1, 2), axis=0, return_inverse=True)
    wrapped = np.mod(Q_int, grid)
    return SupercellBasis(
        Q_int=Q_int,
        Q=Q_int @ B,
        area=params.area,
        grid=grid,  # type: ignore[arg-type]
        diff_int=diff_int,
        diff_index=inverse.reshape(len(Q_int), len(Q_int)),
        flat_pos=wrapped[:, 0] * grid[1] + wrapped[:, 1],
    )


def one_body_matrix(params: MoireParameters, basis: SupercellBasis) -> np.ndarray:
    """h[a, b] = 1/2 |Q_a|^2 delta_ab + V_{Q_a - Q_b} (in E0), shape (n, n)."""
    p = basis.diff_int @ supercell_reciprocal(params.M)
    potential = potential_fourier(p, params.V_E0, params.phi)[basis.diff_index]
    return potential + np.diag(0.5 * np.sum(basis.Q**2, axis=1))


def _grid_coulomb(params: MoireParameters, basis: SupercellBasis) -> np.ndarray:
    """FFT of v(q)/A on the exchange grid (q in the principal domain), shape grid."""
    n1, n2 = basis.grid
    q1 = np.fft.fftfreq(n1, 1.0 / n1)
    q2 = np.fft.fftfreq(n2, 1.0 / n2)
    q_int = np.stack(np.meshgrid(q1, q2, indexing="ij"), axis=-1)
    v = coulomb_fourier(q_int @ supercell_reciprocal(params.M), params.U) / basis.area
    return scipy.fft.fft2(v)


@dataclasses.dataclass(frozen=True)
class FockBuilder:
    """Precomputed pieces of J[P] and K[P] for one basis (see the module docstring)."""

    basis: SupercellBasis
    v_diff: np.ndarray
    """v(d)/A for every difference in `basis.diff_int`, shape (n_d,)."""
    v_hat: np.ndarray
    """FFT of v(q)/A on the exchange grid, shape grid."""
    pair_order: np.ndarray
    """Flat indices a * n + b of the pairs on the computed diagonals (index(a - b) >= the index
    of d = 0; the others follow from K = K^H), sorted by difference index, shape (n_pairs,)."""
    chunk_bounds: np.ndarray
    """Start of each block of diagonals in `pair_order`, shape (n_chunks + 1,)."""
    chunk_diffs: np.ndarray
    """First difference index of each block, shape (n_chunks + 1,)."""


def fock_builder(
    params: MoireParameters, basis: SupercellBasis, chunk_bytes: float = 64e6
) -> FockBuilder:
    """Precompute the Coulomb kernel on the basis differences and the exchange-chunk layout.

    Args:
        params: model parameters.
        basis: the plane-wave basis.
        chunk_bytes: memory of one block of diagonals in the exchange FFT.

    Returns:
        The Fock builder.
    """
    B = supercell_reciprocal(params.M)
    v_diff = coulomb_fourier(basis.diff_int @ B, params.U) / basis.area
    flat_diff = basis.diff_index.ravel()
    n_d = len(basis.diff_int)
    first = (n_d - 1) // 2  # diff_int is sorted and symmetric: d = 0 is in the middle
    order = np.nonzero(flat_diff >= first)[0]
    order = order[np.argsort(flat_diff[order], kind="stable")]
    per_chunk = max(1, int(chunk_bytes // (16 * basis.grid[0] * basis.grid[1])))
    diffs = np.append(np.arange(first, n_d, per_chunk), n_d)
    bounds = np.searchsorted(flat_diff[order], diffs)
    return FockBuilder(basis, v_diff, _grid_coulomb(params, basis), order, bounds, diffs)


def _difference_sum(basis: SupercellBasis, P: np.ndarray) -> np.ndarray:
    """rho(p) = sum_{Q - Q' = p} P[Q, Q'] for every p in `basis.diff_int`, shape (n_d,)."""
    index = basis.diff_index.ravel()
    n_d = len(basis.diff_int)
    return np.bincount(index, P.real.ravel(), n_d) + 1j * np.bincount(index, P.imag.ravel(), n_d)


def hartree_matrix(builder: FockBuilder, P: np.ndarray) -> np.ndarray:
    """J[a, b] = (1/A) v(a - b) rho(a - b), rho(p) = sum_{Q - Q' = p} P[Q, Q'] (in E0).

    Args:
        builder: precomputed Fock pieces.
        P: density matrix, shape (n, n).

    Returns:
        J, shape (n, n).
    """
    return (builder.v_diff * _difference_sum(builder.basis, P))[builder.basis.diff_index]


def exchange_matrix(builder: FockBuilder, P: np.ndarray) -> np.ndarray:
    """K[a, b] = -(1/A) sum_{q != 0} v(q) P[a - q, b - q] (in E0) for Hermitian P.

    For each diagonal d = a - b, D_d(c) = P[c + d, c] is convolved with v on the FFT grid,
    K[b + d, b] = -(v/A * D_d)(b); half of the diagonals are computed, the rest is K^H.

    Args:
        builder: precomputed Fock pieces.
        P: Hermitian density matrix, shape (n, n).

    Returns:
        K, shape (n, n), Hermitian.
    """
    basis = builder.basis
    n = len(basis.Q_int)
    n_grid = basis.grid[0] * basis.grid[1]
    column = builder.pair_order % n
    values = P.ravel()[builder.pair_order]
    flat_diff = basis.diff_index.ravel()[builder.pair_order]
    out = np.zeros(n * n, dtype=complex)
    for i in range(len(builder.chunk_diffs) - 1):
        lo, hi = builder.chunk_bounds[i], builder.chunk_bounds[i + 1]
        d0, d1 = builder.chunk_diffs[i], builder.chunk_diffs[i + 1]
        D = np.zeros((d1 - d0, n_grid), dtype=complex)
        slot = (flat_diff[lo:hi] - d0, basis.flat_pos[column[lo:hi]])
        D[slot] = values[lo:hi]
        D = D.reshape(d1 - d0, *basis.grid)
        conv = scipy.fft.ifft2(scipy.fft.fft2(D) * builder.v_hat).reshape(d1 - d0, n_grid)
        out[builder.pair_order[lo:hi]] = -conv[slot]
    K = out.reshape(n, n)
    computed = basis.diff_index >= builder.chunk_diffs[0]
    return np.where(computed, K, K.conj().T)


def hf_energy_terms(h: np.ndarray, J: np.ndarray, K: np.ndarray, P: np.ndarray) -> dict[str, float]:
    """One-body, Hartree and exchange energies tr(hP), tr(JP)/2, tr(KP)/2 (in E0).

    Hartree and exchange each contain the (periodic) self-interaction, which cancels in the sum.
    """
    return {
        "one_body": float(np.real(np.sum(h * P.T))),
        "hartree": float(0.5 * np.real(np.sum(J * P.T))),
        "exchange": float(0.5 * np.real(np.sum(K * P.T))),
    }


# ------------------------------------------------------------------------------------------------
# Initial guesses
# ------------------------------------------------------------------------------------------------
def site_potential(
    params: MoireParameters, basis: SupercellBasis, amplitudes: np.ndarray, width: float = 0.25
) -> np.ndarray:
    """Matrix of W(r) = sum_R w_R sum_L exp(-|r - R - L|^2/(2 sigma^2)) over the moire sites R.

    <a|W|b> = W_{Q_a - Q_b}, W_p = (2 pi sigma^2 / A) exp(-sigma^2 p^2/2) sum_R w_R exp(-i p.R).

    Args:
        params: model parameters.
        basis: the plane-wave basis.
        amplitudes: w_R in E0 for each site of `moire_sites(params.M)`, shape (N_sites,).
        width: sigma in a_M.

    Returns:
        Hermitian matrix, shape (n, n), in E0.
    """
    sites, _ = moire_sites(params.M)
    p = basis.diff_int @ supercell_reciprocal(params.M)
    structure = np.exp(-1j * p @ sites.T) @ amplitudes
    gauss = np.exp(-0.5 * width**2 * np.sum(p**2, axis=-1))
    return (2.0 * np.pi * width**2 / basis.area * gauss * structure)[basis.diff_index]


def guess_potential(
    params: MoireParameters, basis: SupercellBasis, name: str, seed: int
) -> np.ndarray:
    """Symmetry-breaking seed potential of an initial guess (switched off after the first step).

    Args:
        params: model parameters.
        basis: the plane-wave basis.
        name: "fermi_liquid" (none), "honeycomb" (repel from sqrt3 sublattice 0: electrons on
            sublattices 1 and 2), "triangular" (attract to sublattice 0), "random" (random
            Gaussian wells on the moire sites).
        seed: random seed of "random".

    Returns:
        Matrix of the seed potential, shape (n, n), in E0.

    Raises:
        ValueError: for an unknown name, or a sqrt3 guess on a cell without sqrt3 order.
    """
    n_sites = params.n_sites
    strength = 10.0 * max(params.V_E0, 1.0)
    if name == "fermi_liquid":
        return np.zeros((len(basis.Q), len(basis.Q)), dtype=complex)
    if name == "random":
        rng = np.random.default_rng(seed)
        return site_potential(params, basis, strength * rng.normal(size=n_sites))
    if name in ("honeycomb", "triangular"):
        if not supports_sqrt3(params.M):
            raise ValueError(f"supercell {params.M} does not fit sqrt3 x sqrt3 order")
        on_zero = sqrt3_sublattice(moire_sites(params.M)[1]) == 0
        sign = 1.0 if name == "honeycomb" else -1.0
        return site_potential(params, basis, sign * strength * on_zero.astype(float))
    raise ValueError(
        f"unknown Hartree-Fock guess {name!r}: use fermi_liquid, honeycomb, triangular or random"
    )


# ------------------------------------------------------------------------------------------------
# Self-consistent field
# ------------------------------------------------------------------------------------------------
def _occupied_density(F: np.ndarray, n_occ: int) -> np.ndarray:
    """Aufbau: P = C C^H from the n_occ lowest eigenvectors of F, shape (n, n)."""
    C = np.linalg.eigh(F)[1][:, :n_occ]
    return C @ C.conj().T


def _diis_extrapolate(focks: list[np.ndarray], errors: list[np.ndarray]) -> np.ndarray:
    """Pulay DIIS: F = sum_i c_i F_i minimizing |sum_i c_i e_i| with sum_i c_i = 1."""
    m = len(focks)
    B = -np.ones((m + 1, m + 1))
    B[m, m] = 0.0
    for i in range(m):
        for j in range(m):
            B[i, j] = np.real(np.vdot(errors[i], errors[j]))
    rhs = np.zeros(m + 1)
    rhs[m] = -1.0
    coeff = np.linalg.lstsq(B, rhs, rcond=None)[0][:m]
    return sum(c * f for c, f in zip(coeff, focks))


def run_scf(
    params: MoireParameters,
    builder: FockBuilder,
    h: np.ndarray,
    P: np.ndarray,
    e_tol: float = 1e-8,
    max_iter: int = 300,
    diis_size: int = 8,
) -> dict[str, Any]:
    """Iterate P -> F[P] = h + J[P] + K[P] -> aufbau P with DIIS until |dE| < e_tol (E0, total).

    Args:
        params: model parameters.
        builder: precomputed Fock pieces.
        h: one-body matrix, shape (n, n).
        P: initial density matrix, shape (n, n).
        e_tol: convergence threshold on the change of the total energy, in E0; the commutator
            max|FP - PF| must also fall below sqrt(e_tol).
        max_iter: maximum number of Fock builds.
        diis_size: number of stored Fock matrices.

    Returns:
        Dict with the converged density matrix "P", total energy "energy" (E0, including
        N U xi / 2), its parts, "converged", "iterations" and "gap" (lowest empty minus highest
        occupied eigenvalue of the last Fock matrix, in E0).
    """
    n_occ = params.n_electrons
    constant = 0.5 * n_occ * params.U * madelung_constant(params.cell)
    focks: list[np.ndarray] = []
    errors: list[np.ndarray] = []
    energy_prev = np.inf
    converged = False
    for iteration in range(1, max_iter + 1):
        J = hartree_matrix(builder, P)
        K = exchange_matrix(builder, P)
        F = h + J + K
        terms = hf_energy_terms(h, J, K, P)
        energy = sum(terms.values()) + constant
        error = F @ P - P @ F
        if abs(energy - energy_prev) < e_tol and np.max(np.abs(error)) < np.sqrt(e_tol):
            converged = True
            break
        energy_prev = energy
        focks = (focks + [F])[-diis_size:]
        errors = (errors + [error])[-diis_size:]
        P = _occupied_density(_diis_extrapolate(focks, errors), n_occ)
    levels = np.linalg.eigvalsh(F)
    return {
        "P": P,
        "energy": energy,
        "terms": {**terms, "madelung": constant},
        "converged": converged,
        "iterations": iteration,
        "gap": float(levels[n_occ] - levels[n_occ - 1]),
    }


# ------------------------------------------------------------------------------------------------
# Analysis
# ------------------------------------------------------------------------------------------------
def density_on_grid(
    params: MoireParameters, basis: SupercellBasis, P: np.ndarray, points_per_aM: float = 12.0
) -> np.ndarray:
    """Electron density rho(r) = (1/A) sum_{a,b} P[a, b] exp(i (Q_a - Q_b).r) on a uniform grid.

    The grid points are r_ij = (i / m_1) L_1 + (j / m_2) L_2; values are exact (FFT with a
    grid larger than the spectrum).

    Args:
        params: model parameters.
        basis: plane-wave basis.
        P: density matrix, shape (n, n).
        points_per_aM: grid points per a_M along each cell vector (at least the alias-free size).

    Returns:
        Density in 1/a_M^2, shape (m_1, m_2), real.
    """
    lengths = np.linalg.norm(params.cell, axis=1)
    shape = tuple(max(g, int(np.ceil(points_per_aM * x))) for g, x in zip(basis.grid, lengths))
    rho_p = _difference_sum(basis, P)
    spectrum = np.zeros(shape, dtype=complex)
    wrapped = np.mod(basis.diff_int, shape)
    spectrum[wrapped[:, 0], wrapped[:, 1]] = rho_p
    return np.real(scipy.fft.ifft2(spectrum)) * (shape[0] * shape[1]) / basis.area


def hexagon_quadrature(n_points: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre rule on the Wigner-Seitz hexagon of the moire lattice (centred at 0).

    The hexagon (vertices at distance 1/sqrt3 from the centre) is split into six triangles, each
    mapped from the unit square by the collapsed (Duffy) map r = u (v_i + w (v_{i+1} - v_i)).

    Args:
        n_points: Gauss-Legendre points per direction and triangle.

    Returns:
        nodes: shape (6 n_points^2, 2), in a_M.
        weights: shape (6 n_points^2,), summing to the cell area sqrt3/2.
    """
    x, w = np.polynomial.legendre.leggauss(n_points)
    x, w = 0.5 * (x + 1.0), 0.5 * w
    angles = np.pi / 6.0 + np.arange(7) * np.pi / 3.0
    vertices = np.stack([np.cos(angles), np.sin(angles)], axis=1) / SQRT3
    u, t = np.meshgrid(x, x, indexing="ij")
    wu, wt = np.meshgrid(w, w, indexing="ij")
    nodes, weights = [], []
    for v0, v1 in zip(vertices[:-1], vertices[1:]):
        jac = abs(v0[0] * v1[1] - v0[1] * v1[0])
        nodes.append(u.reshape(-1, 1) * (v0 + t.reshape(-1, 1) * (v1 - v0)))
        weights.append((wu * wt * u).ravel() * jac)
    return np.concatenate(nodes), np.concatenate(weights)


def site_charges(params: MoireParameters, basis: SupercellBasis, P: np.ndarray) -> np.ndarray:
    """Charge in the Wigner-Seitz hexagon of each moire site R (exact up to quadrature error).

    n_R = (1/A) sum_p rho(p) exp(i p.R) H(p), H(p) = int_hexagon exp(i p.r) d^2r.

    Args:
        params: model parameters.
        basis: plane-wave basis.
        P: density matrix, shape (n, n).

    Returns:
        Charges, shape (N_sites,), in the order of `moire_sites(params.M)`; they sum to N.
    """
    p = basis.diff_int @ supercell_reciprocal(params.M)
    n_d = len(p)
    rho_p = _difference_sum(basis, P)
    nodes, weights = hexagon_quadrature()
    sites, _ = moire_sites(params.M)
    charges = np.zeros(len(sites))
    for chunk in np.array_split(np.arange(n_d), max(1, n_d // 512)):
        hexagon = np.exp(1j * p[chunk] @ nodes.T) @ weights
        charges += np.real(np.exp(1j * sites @ p[chunk].T) @ (rho_p[chunk] * hexagon))
    return charges / basis.area


def sublattice_charges(params: MoireParameters, charges: np.ndarray) -> np.ndarray:
    """Total charge on each sqrt3 x sqrt3 sublattice (label (n_1 + n_2) mod 3), shape (3,)."""
    return np.bincount(sqrt3_sublattice(moire_sites(params.M)[1]), charges, 3)


def classify_state(params: MoireParameters, sublattice: np.ndarray, tol: float = 0.1) -> str:
    """Name the state from the charge per site on the three sqrt3 sublattices.

    "honeycomb crystal" (two sublattices equally filled, the third depleted), "triangular crystal"
    (one sublattice filled more than the other two), "uniform" (equal within `tol` per site), else
    "other".
    """
    per_site = np.sort(3.0 * sublattice / params.n_sites)
    if per_site[2] - per_site[0] < tol:
        return "uniform"
    if per_site[2] - per_site[1] < tol:
        return "honeycomb crystal"
    if per_site[1] - per_site[0] < tol:
        return "triangular crystal"
    return "other"


# ------------------------------------------------------------------------------------------------
# Driver
# ------------------------------------------------------------------------------------------------
def _guess_list(
    params: MoireParameters, guesses: Sequence[str], n_random: int, seed: int
) -> list[tuple[str, str, int]]:
    """(label, guess name, seed) of every SCF start: "random" n_random times, sqrt3 guesses only
    on cells that fit sqrt3 order."""
    out = []
    for name in guesses:
        if name == "random":
            out += [(f"random_{r}", name, seed + r) for r in range(n_random)]
        elif name not in ("honeycomb", "triangular") or supports_sqrt3(params.M):
            out.append((name, name, seed))
    return out


def run_hf(
    params: MoireParameters,
    q_max: float = DEFAULT_Q_MAX,
    guesses: Sequence[str] = DEFAULT_GUESSES,
    n_random: int = 2,
    e_tol: float = 1e-8,
    max_iter: int = 300,
    seed: int = 0,
    density_points_per_aM: float = 12.0,
) -> dict[str, Any]:
    """Unrestricted HF from several initial guesses; the lowest converged state is reported.

    Args:
        params: model parameters (spin-polarized only).
        q_max: plane-wave cut-off in units of |g_1|.
        guesses: initial guesses (see `guess_potential`); sqrt3 guesses are skipped on cells
            without sqrt3 order; "random" is repeated `n_random` times with different seeds.
        n_random: number of random guesses.
        e_tol: energy convergence in E0 (total).
        max_iter: maximum SCF iterations per guess.
        seed: base random seed.
        density_points_per_aM: resolution of the returned density.

    Returns:
        JSON-able dict: "energy_E0", "energy_meV", "energy_per_electron_E0",
        "energy_per_electron_meV" (lowest state, totals include N U xi / 2), "terms_E0",
        "madelung_xi", "state" (guess, classification, site and sublattice charges),
        "fock_gap_meV", "density" (rho in 1/a_M^2 at r_ij = (i/m_1) L_1 + (j/m_2) L_2),
        "guesses" (energy in E0, convergence and iterations of each), "basis_size", "q_max",
        "wall_s".

    Raises:
        NotImplementedError: for an unpolarized system.
    """
    if not params.spin_polarized:
        raise NotImplementedError(
            "run_hf supports spin-polarized systems only (set spin_polarized = true)"
        )
    start = time.perf_counter()
    basis = supercell_basis(params, q_max)
    builder = fock_builder(params, basis)
    h = one_body_matrix(params, basis)
    runs: list[tuple[str, dict[str, Any]]] = []
    for label, name, guess_seed in _guess_list(params, guesses, n_random, seed):
        seeded = h + guess_potential(params, basis, name, guess_seed)
        P0 = _occupied_density(seeded, params.n_electrons)
        runs.append((label, run_scf(params, builder, h, P0, e_tol, max_iter)))
    pool = [run for run in runs if run[1]["converged"]] or runs
    best_label, best = min(pool, key=lambda run: run[1]["energy"])
    rho = density_on_grid(params, basis, best["P"], density_points_per_aM)
    charges = site_charges(params, basis, best["P"])
    sub = sublattice_charges(params, charges)
    n = params.n_electrons
    return {
        "method": "unrestricted Hartree-Fock (spin-polarized)",
        "energy_E0": best["energy"],
        "energy_meV": best["energy"] * params.E0_meV,
        "energy_per_electron_E0": best["energy"] / n,
        "energy_per_electron_meV": best["energy"] * params.E0_meV / n,
        "terms_E0": best["terms"],
        "madelung_xi": madelung_constant(params.cell),
        "converged": best["converged"],
        "iterations": best["iterations"],
        "fock_gap_meV": best["gap"] * params.E0_meV,
        "state": {
            "guess": best_label,
            "classification": classify_state(params, sub),
            "sublattice_charges": sub.tolist(),
            "site_charges": charges.tolist(),
            "sites": moire_sites(params.M)[0].tolist(),
        },
        "density": {"cell": params.cell.tolist(), "rho": rho.tolist()},
        "guesses": {
            label: {
                "energy_E0": run["energy"],
                "converged": run["converged"],
                "iterations": run["iterations"],
            }
            for label, run in runs
        },
        "basis_size": len(basis.Q),
        "q_max": q_max,
        "wall_s": time.perf_counter() - start,
    }
