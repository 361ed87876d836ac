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
from typing import Any

import numpy as np
import scipy.fft
import scipy.linalg
import scipy.special

from hpcvmc.reference.bands import potential_fourier
from hpcvmc.systems.moire_lattice import (
    SQRT3,
    MoireParameters,
    moire_sites,
    sqrt3_sublattice,
    supercell_plane_waves,
    supercell_reciprocal,
)

DEFAULT_Q_MAX = 3.0
"""Default plane-wave cut-off |Q| <= 3 |g_1|; see tests/test_hf.py for its convergence."""


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

    independent of alpha (docs/physics.md section 4).

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
    Q_int = supercell_plane_waves(params.M, q_max)
    extent = Q_int.max(axis=0) - Q_int.min(axis=0)
    grid = tuple(scipy.fft.next_fast_len(int(2 * e + 1)) for e in extent)
    pair = Q_int[:, None, :] - Q_int[None, :, :]
    diff_int, inverse = np.unique(pair.reshape(-1, 2), axis=0, return_inverse=True)
    wrapped = np.mod(Q_int, grid)
    return SupercellBasis(
        Q_int=Q_int,
        Q=Q_int @ supercell_reciprocal(params.M),
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
    shift: float
    """U c with c >= -min_r phi(r) (`positivity_shift`), in E0: the kernel U (phi + c) >= 0."""


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
    shift = params.U * positivity_shift(params.cell)
    return FockBuilder(basis, v_diff, _grid_coulomb(params, basis), order, bounds, diffs, shift)


def positivity_shift(cell: np.ndarray, points: int = 48, margin: float = 0.05) -> float:
    """c = (1 + margin) max(0, -min_r phi(r)): the shifted kernel phi + c is non-negative.

    The Ewald potential phi (neutralizing background) is negative far from the charge. The
    Hartree-Fock functional of a density matrix 0 <= P <= 1 (tr P = N) evaluated with phi + c
    instead of phi differs by (c/2)(N - tr P^2) per unit U: nothing for projectors, a penalty for
    fractional occupations. With a non-negative kernel its minimum over all such P is attained
    at a projector (Lieb's variational principle), so a damped SCF that mixes density matrices
    (`run_scf`) cannot settle on a fractionally occupied P below every Slater determinant.

    Args:
        cell: supercell vectors, shape (2, 2), rows L_1, L_2, in a_M.
        points: grid points per cell vector where phi is evaluated (the origin excluded).
        margin: relative safety margin for the grid minimum.

    Returns:
        c in 1/a_M.
    """
    n = np.stack(np.meshgrid(np.arange(points), np.arange(points), indexing="ij"), axis=-1)
    frac = n.reshape(-1, 2)[1:] / points
    phi = ewald_potential(frac @ cell, cell)
    return float((1.0 + margin) * max(0.0, -np.min(phi)))


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
# Self-consistent field
# ------------------------------------------------------------------------------------------------
def _occupied_density(F: np.ndarray, n_occ: int) -> np.ndarray:
    """Aufbau: P = C C^H from the n_occ lowest eigenvectors of F, shape (n, n)."""
    C = scipy.linalg.eigh(F, subset_by_index=[0, n_occ - 1], driver="evr")[1]
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


E_TOL = 1e-8
"""SCF convergence: change of the total energy between Fock builds, in E0."""
COMMUTATOR_TOL = 1e-5
"""SCF convergence: max |F P - P F| (the stationarity condition), in E0."""


@dataclasses.dataclass
class _FockState:
    """A density matrix with its Fock matrix and energy."""

    P: np.ndarray
    F: np.ndarray
    energy: float
    terms: dict[str, float]

    @property
    def commutator(self) -> float:
        """max |F P - P F| in E0."""
        return float(np.max(np.abs(self.F @ self.P - self.P @ self.F)))


def _evaluate(builder: FockBuilder, h: np.ndarray, P: np.ndarray, constant: float) -> _FockState:
    """Fock matrix and energy of the positivity-shifted functional (`positivity_shift`):

    E[P] = tr(hP) + 1/2 tr((J + K) P) + (U c / 2)(N - tr P^2) + N U xi / 2,
    F[P] = h + J[P] + K[P] - U c P,

    equal to E_HF and (on the commutator [F, P]) to the Fock operator for projectors.
    """
    J = hartree_matrix(builder, P)
    K = exchange_matrix(builder, P)
    terms = hf_energy_terms(h, J, K, P)
    n = np.real(np.trace(P))
    terms["positivity_shift"] = 0.5 * builder.shift * float(n - np.real(np.sum(P * P.T)))
    return _FockState(P, h + J + K - builder.shift * P, sum(terms.values()) + constant, terms)


def run_scf(
    params: MoireParameters,
    builder: FockBuilder,
    h: np.ndarray,
    P: np.ndarray,
    e_tol: float = E_TOL,
    max_iter: int = 150,
    diis_size: int = 8,
    commutator_tol: float = COMMUTATOR_TOL,
) -> dict[str, Any]:
    """Self-consistent field from P: DIIS, then the optimal damping algorithm if DIIS stalls.

    DIIS iterates P -> aufbau(extrapolated F) for at most `max_iter` Fock builds. If it has not
    converged, the optimal damping algorithm (ODA) continues from the lowest-energy density
    seen: P <- P + lam (aufbau(F[P]) - P) with lam in [0, 1] minimizing the energy, which is
    quadratic in lam (E(lam) = E(0) + lam tr(F[P] dP) + lam^2 c, c from E(1)); it never raises
    the energy, and its limit is the projector onto the N leading natural orbitals (the
    functional is shifted so that fractional occupations are not favoured, `_evaluate`).
    Converged: the energy changed by less than `e_tol` (E0, total) and max |F P - P F| <
    `commutator_tol` (E0).

    Args:
        params: model parameters.
        builder: precomputed Fock pieces.
        h: one-body matrix, shape (n, n).
        P: initial density matrix, shape (n, n).
        e_tol: energy convergence threshold, in E0.
        max_iter: maximum number of Fock builds of each stage (DIIS, then ODA).
        diis_size: number of stored Fock matrices.
        commutator_tol: stationarity threshold on max |FP - PF|, in E0.

    Returns:
        Dict with the density matrix "P", total energy "energy" (E0, including N U xi / 2), its
        parts "terms", "converged", "iterations" (Fock builds), "commutator" (max |FP - PF|),
        "method" ("diis" or "diis+oda") and "gap" (lowest empty minus highest occupied
        eigenvalue of the Fock matrix, in E0).
    """
    n_occ = params.n_electrons
    constant = 0.5 * n_occ * params.U * madelung_constant(params.cell)
    focks: list[np.ndarray] = []
    errors: list[np.ndarray] = []
    energy_prev = np.inf
    converged = False
    state = _evaluate(builder, h, P, constant)
    best = state
    iterations, method = 1, "diis"
    while True:
        if abs(state.energy - energy_prev) < e_tol and state.commutator < commutator_tol:
            converged = True
            break
        if iterations >= max_iter:
            break
        energy_prev = state.energy
        error = state.F @ state.P - state.P @ state.F
        focks = (focks + [state.F])[-diis_size:]
        errors = (errors + [error])[-diis_size:]
        state = _evaluate(builder, h, _occupied_density(_diis_extrapolate(focks, errors), n_occ),
                          constant)
        iterations += 1
        if state.energy < best.energy:
            best = state
    if not converged:
        method = "diis+oda"
        state, energy_prev = best, np.inf
        for _ in range(max_iter):
            if abs(state.energy - energy_prev) < e_tol and state.commutator < commutator_tol:
                converged = True
                break
            energy_prev = state.energy
            trial = _evaluate(builder, h, _occupied_density(state.F, n_occ), constant)
            iterations += 1
            slope = float(np.real(np.sum(state.F * (trial.P - state.P).T)))
            curvature = trial.energy - state.energy - slope
            lam = 1.0 if curvature <= 0 else min(1.0, max(0.0, -slope / (2.0 * curvature)))
            if lam == 1.0:
                state = trial
            else:
                state = _evaluate(builder, h, state.P + lam * (trial.P - state.P), constant)
                iterations += 1
    if method == "diis+oda":
        natural = np.linalg.eigh(state.P)[1][:, -n_occ:]
        state = _evaluate(builder, h, natural @ natural.conj().T, constant)
        converged = converged and state.commutator < commutator_tol
    levels = scipy.linalg.eigvalsh(state.F, subset_by_index=[0, n_occ], driver="evr")
    return {
        "P": state.P,
        "energy": state.energy,
        "terms": {**state.terms, "madelung": constant},
        "converged": converged,
        "iterations": iterations,
        "commutator": state.commutator,
        "method": method,
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


def classify_state(
    params: MoireParameters,
    sublattice: np.ndarray,
    site_charges: np.ndarray | None = None,
    tol: float = 0.1,
) -> str:
    """Name the state from the charge per site on the three sqrt3 sublattices.

    "honeycomb crystal" (two sublattices equally filled, the third depleted), "triangular crystal"
    (one sublattice filled more than the other two), "uniform" (equal within `tol` per site, and
    so are the sites when `site_charges` are given), "non-sqrt3 order" (equal sublattices but
    site charges differing by `tol` or more, e.g. a stripe), else "other".
    """
    per_site = np.sort(3.0 * sublattice / params.n_sites)
    if per_site[2] - per_site[0] < tol:
        if site_charges is not None and np.ptp(site_charges) >= tol:
            return "non-sqrt3 order"
        return "uniform"
    if per_site[2] - per_site[1] < tol:
        return "honeycomb crystal"
    if per_site[1] - per_site[0] < tol:
        return "triangular crystal"
    return "other"
