"""Single-particle continuum model of the moire potential in a plane-wave basis.

h = -1/2 nabla^2 - 2 V sum_{n=1..3} cos(g_n . r + phi)   (energies in E0, lengths in a_M).

Bloch states psi_k(r) = A^{-1/2} sum_G c_k(G) exp(i (k + G) . r) with G on the moire reciprocal
lattice, |G| <= g_max |g_1|, sum_G |c_k(G)|^2 = 1 (A the area of the torus). In this basis

    <k + G| h |k + G'> = 1/2 |k + G|^2 delta_{G G'} + V_{G - G'},
    V_{+g_n} = -V exp(+i phi),  V_{-g_n} = -V exp(-i phi),  V = 0 otherwise,

from -2V cos(g.r + phi) = -V (e^{i phi} e^{i g.r} + e^{-i phi} e^{-i g.r}).
Periodic gauge: the state at k + G0 (G0 a moire reciprocal vector) is the state at k,
c_{k+G0}(G) = c_k(G + G0); see `shift_coefficients`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from hpcvmc.systems.moire_lattice import (
    G_NORM,
    MoireParameters,
    lattice_shell,
    moire_reciprocal_basis,
    potential_wave_vectors,
    supercell_kpoints,
)

DEFAULT_G_MAX = 4.0
"""Default plane-wave cut-off |G| <= 4 |g_1| (61 plane waves): the lowest band at the default
parameters (V/E0 = 4.44) is converged to ~1e-8 E0 (1e-5 E0 at 3 |g_1|, 37 plane waves)."""


@dataclasses.dataclass(frozen=True)
class BandStructure:
    """Bands of the continuum model at a set of wave vectors."""

    k: np.ndarray
    """Wave vectors, shape (n_k, 2), in 1/a_M."""
    energies: np.ndarray
    """Band energies in E0, shape (n_k, n_bands), ascending."""
    coefficients: np.ndarray
    """Plane-wave coefficients c_k(G), shape (n_k, n_bands, n_G), unit norm over G."""
    G_int: np.ndarray
    """Moire reciprocal vectors of the basis as integers on (b_1, b_2), shape (n_G, 2)."""


def reciprocal_shell(g_max: float) -> np.ndarray:
    """Moire reciprocal vectors G = m_1 b_1 + m_2 b_2 with |G| <= g_max |g_1|.

    Args:
        g_max: cut-off in units of |g_1| = 4 pi / sqrt3.

    Returns:
        Integers (m_1, m_2), shape (n_G, 2), sorted by |G| (:func:`lattice_shell`, G = 0 first).
    """
    return lattice_shell(moire_reciprocal_basis(), g_max, unit=G_NORM)


def potential_fourier(q: np.ndarray, V_E0: float, phi: float) -> np.ndarray:
    """Fourier coefficients V_q of the moire potential, V(r) = sum_q V_q exp(i q . r).

    V_q = -V exp(i phi) for q = g_n, -V exp(-i phi) for q = -g_n, zero otherwise.

    Args:
        q: wave vectors, shape (..., 2), in 1/a_M.
        V_E0: V / E0.
        phi: phase in radians.

    Returns:
        Complex array of shape (...), in E0.
    """
    q = np.asarray(q, dtype=float)
    out = np.zeros(q.shape[:-1], dtype=complex)
    for g in potential_wave_vectors():
        out[np.all(np.abs(q - g) < 1e-8, axis=-1)] = -V_E0 * np.exp(1j * phi)
        out[np.all(np.abs(q + g) < 1e-8, axis=-1)] = -V_E0 * np.exp(-1j * phi)
    return out


def moire_potential(r: np.ndarray, V_E0: float, phi: float) -> np.ndarray:
    """Moire potential in real space, -2 V sum_n cos(g_n . r + phi).

    Args:
        r: positions, shape (..., 2), in a_M.
        V_E0: V / E0.
        phi: phase in radians.

    Returns:
        Potential in E0, shape (...).
    """
    return -2.0 * V_E0 * np.sum(np.cos(np.asarray(r) @ potential_wave_vectors().T + phi), axis=-1)


def continuum_hamiltonian(k: np.ndarray, G_int: np.ndarray, V_E0: float, phi: float) -> np.ndarray:
    """Plane-wave matrix <k+G|h|k+G'> = 1/2 |k+G|^2 delta_{GG'} + V_{G-G'} (in E0).

    Args:
        k: wave vectors, shape (n_k, 2), in 1/a_M.
        G_int: basis vectors on (b_1, b_2), shape (n_G, 2).
        V_E0: V / E0.
        phi: phase in radians.

    Returns:
        Hermitian matrices, shape (n_k, n_G, n_G).
    """
    G = G_int @ moire_reciprocal_basis()
    potential = potential_fourier(G[:, None, :] - G[None, :, :], V_E0, phi)
    kinetic = 0.5 * np.sum((np.asarray(k)[:, None, :] + G[None, :, :]) ** 2, axis=-1)
    n_g = len(G)
    return potential[None, :, :] + kinetic[:, :, None] * np.eye(n_g)[None, :, :]


def solve_bands(
    k: np.ndarray, V_E0: float, phi: float, n_bands: int = 1, g_max: float = DEFAULT_G_MAX
) -> BandStructure:
    """Diagonalize the continuum model at the given wave vectors.

    Args:
        k: wave vectors, shape (n_k, 2), in 1/a_M.
        V_E0: V / E0.
        phi: phase in radians.
        n_bands: number of lowest bands kept.
        g_max: plane-wave cut-off in units of |g_1|.

    Returns:
        The lowest `n_bands` bands (energies in E0 and plane-wave coefficients).
    """
    k = np.atleast_2d(np.asarray(k, dtype=float))
    G_int = reciprocal_shell(g_max)
    energies, vectors = np.linalg.eigh(continuum_hamiltonian(k, G_int, V_E0, phi))
    coefficients = np.swapaxes(vectors[:, :, :n_bands], 1, 2)
    return BandStructure(
        k=k, energies=energies[:, :n_bands], coefficients=coefficients, G_int=G_int
    )


def supercell_bands(
    params: MoireParameters, n_bands: int = 1, g_max: float = DEFAULT_G_MAX
) -> BandStructure:
    """Bands at the N_sites k-points of the supercell (`supercell_kpoints` order).

    Args:
        params: model parameters (V_E0, phi, M are used).
        n_bands: number of lowest bands kept.
        g_max: plane-wave cut-off in units of |g_1|.

    Returns:
        The band structure on the supercell k-mesh.
    """
    return solve_bands(supercell_kpoints(params.M), params.V_E0, params.phi, n_bands, g_max)


def shift_coefficients(
    coefficients: np.ndarray, G_int: np.ndarray, shift: np.ndarray
) -> np.ndarray:
    """Periodic gauge: coefficients of the state at k + G0 from those at k, c_{k+G0}(G) = c_k(G+G0).

    Components whose G + G0 lies outside the basis are set to zero (negligible when converged).

    Args:
        coefficients: c_k(G), shape (..., n_G).
        G_int: basis vectors on (b_1, b_2), shape (n_G, 2).
        shift: G0 on (b_1, b_2), integers, shape (2,).

    Returns:
        c_{k+G0}(G), shape (..., n_G).
    """
    index = {tuple(g): i for i, g in enumerate(G_int.tolist())}
    source = np.array([index.get((g[0] + shift[0], g[1] + shift[1]), -1) for g in G_int.tolist()])
    out = np.zeros_like(coefficients)
    valid = source >= 0
    out[..., valid] = coefficients[..., source[valid]]
    return out


def noninteracting_energy(params: MoireParameters, g_max: float = DEFAULT_G_MAX) -> float:
    """Ground-state energy of N free electrons on the supercell k-mesh (lowest band only), in E0.

    Sum of the N lowest eps_k (spin-polarized), or of the N/2 lowest counted twice (unpolarized).
    Valid while the filled states stay in the lowest band (N <= N_sites, resp. 2 N_sites).

    Args:
        params: model parameters.
        g_max: plane-wave cut-off in units of |g_1|.

    Returns:
        Total energy in E0.

    Raises:
        ValueError: if the electrons do not fit into the lowest band.
    """
    eps = np.sort(supercell_bands(params, 1, g_max).energies[:, 0])
    per_state = 1 if params.spin_polarized else 2
    if params.n_electrons > per_state * len(eps) or params.n_electrons % per_state:
        raise ValueError(
            f"{params.n_electrons} electrons do not fill whole states of the lowest band "
            f"({len(eps)} k-points, {per_state} per k-point)"
        )
    return float(per_state * np.sum(eps[: params.n_electrons // per_state]))
