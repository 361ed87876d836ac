"""Geometry and units of 2D electrons in a triangular moire potential (docs/physics.md section 4).

Shared by the VMC system and the independent references (`hpcvmc.reference`). Pure numpy.

Conventions:
    * Lengths in units of the moire period a_M, wave vectors in 1/a_M, energies in
      E0 = hbar^2 / (m* a_M^2).
    * Moire lattice a_1 = (1, 0), a_2 = (-1/2, sqrt3/2); potential wave vectors
      g_1 = (4 pi/sqrt3)(0, 1), g_2 = (4 pi/sqrt3)(sin 2pi/3, cos 2pi/3), g_3 = -(g_1 + g_2).
      The moire reciprocal basis dual to (a_1, a_2) is b_1 = g_1 + g_2 = -g_3, b_2 = g_1
      (a_i . b_j = 2 pi delta_ij).
    * Supercell from an integer matrix M: L_1 = M00 a_1 + M10 a_2, L_2 = M01 a_1 + M11 a_2
      (the columns of M are the coordinates of L_1, L_2 on the moire basis), N_sites = |det M|.
    * The supercell reciprocal vectors B_i satisfy B_i . L_j = 2 pi delta_ij. The supercell
      k-points are the N_sites classes of supercell reciprocal vectors modulo the moire reciprocal
      lattice, each represented by its element in the first moire Brillouin zone.

Named supercells (all keep the C3 rotation symmetry and contain the sqrt3 x sqrt3 superlattice):
    3: [[1, 1], [2, -1]] (sqrt3 x sqrt3 R30), 9: [[3, 0], [0, 3]] (3 x 3),
    12: [[2, 2], [4, -2]] (2 sqrt3 x 2 sqrt3 R30), 21: [[5, -1], [1, 4]] (sqrt21 x sqrt21,
    L_1 = 5 a_1 + a_2 and L_2 = -a_1 + 4 a_2 = L_1 rotated by 120 degrees, angle ~10.9 degrees),
    27: [[3, 3], [6, -3]] (3 sqrt3 x 3 sqrt3 R30).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import scipy.constants as const

IntMatrix = tuple[tuple[int, int], tuple[int, int]]

SQRT3 = float(np.sqrt(3.0))
MOIRE_VECTORS = np.array([[1.0, 0.0], [-0.5, SQRT3 / 2.0]])
"""Rows a_1, a_2 of the moire lattice, shape (2, 2), in a_M."""
G_NORM = 4.0 * np.pi / SQRT3
"""|g_n| = 4 pi / sqrt3, the length of the shortest moire reciprocal vectors, in 1/a_M."""

NAMED_SUPERCELLS: dict[int, IntMatrix] = {
    3: ((1, 1), (2, -1)),
    9: ((3, 0), (0, 3)),
    12: ((2, 2), (4, -2)),
    21: ((5, -1), (1, 4)),
    27: ((3, 3), (6, -3)),
}
"""Supercell matrices M of the named sizes (number of moire sites -> M)."""


def potential_wave_vectors() -> np.ndarray:
    """The three wave vectors g_1, g_2, g_3 of the moire potential.

    Returns:
        Array of shape (3, 2), rows g_n in 1/a_M.
    """
    g1 = G_NORM * np.array([0.0, 1.0])
    g2 = G_NORM * np.array([np.sin(2.0 * np.pi / 3.0), np.cos(2.0 * np.pi / 3.0)])
    return np.stack([g1, g2, -(g1 + g2)])


def moire_reciprocal_basis() -> np.ndarray:
    """Basis b_1, b_2 of the moire reciprocal lattice, dual to a_1, a_2 (a_i . b_j = 2 pi delta_ij).

    Returns:
        Array of shape (2, 2), rows b_1 = g_1 + g_2, b_2 = g_1, in 1/a_M.
    """
    return 2.0 * np.pi * np.linalg.inv(MOIRE_VECTORS).T


def supercell_matrix(sites: int) -> IntMatrix:
    """The supercell matrix M of a named size.

    Args:
        sites: number of moire sites, one of `NAMED_SUPERCELLS`.

    Returns:
        M as a tuple of two rows.

    Raises:
        ValueError: if `sites` is not a named size.
    """
    if sites not in NAMED_SUPERCELLS:
        raise ValueError(
            f"no named moire supercell with {sites} sites: choose one of "
            f"{sorted(NAMED_SUPERCELLS)} or give the integer matrix M explicitly"
        )
    return NAMED_SUPERCELLS[sites]


def as_int_matrix(M: Any) -> IntMatrix:
    """Validate a 2 x 2 integer matrix and return it as a tuple of two row tuples.

    Args:
        M: nested sequence [[M00, M01], [M10, M11]] of integers.

    Returns:
        M as ((M00, M01), (M10, M11)).

    Raises:
        ValueError: if M is not a non-singular 2 x 2 integer matrix.
    """
    arr = np.asarray(M)
    if arr.shape != (2, 2) or not np.all(np.equal(np.mod(arr, 1), 0)):
        raise ValueError(f"supercell matrix must be 2 x 2 integers, got {M!r}")
    rows = tuple(tuple(int(x) for x in row) for row in arr)
    if rows[0][0] * rows[1][1] - rows[0][1] * rows[1][0] == 0:
        raise ValueError(f"supercell matrix {M!r} is singular (zero area)")
    return rows  # type: ignore[return-value]


def n_sites(M: IntMatrix) -> int:
    """Number of moire sites in the supercell, |det M|."""
    return abs(M[0][0] * M[1][1] - M[0][1] * M[1][0])


def supercell_cell(M: IntMatrix) -> np.ndarray:
    """Supercell vectors L_1 = M00 a_1 + M10 a_2, L_2 = M01 a_1 + M11 a_2.

    Args:
        M: supercell matrix.

    Returns:
        Array of shape (2, 2), rows L_1, L_2, in a_M.
    """
    return np.asarray(M, dtype=float).T @ MOIRE_VECTORS


def cell_area(M: IntMatrix) -> float:
    """Supercell area A = |L_1 x L_2| = N_sites sqrt3/2, in a_M^2."""
    return float(abs(np.linalg.det(supercell_cell(M))))


def supercell_reciprocal(M: IntMatrix) -> np.ndarray:
    """Supercell reciprocal vectors B_1, B_2 with B_i . L_j = 2 pi delta_ij.

    Args:
        M: supercell matrix.

    Returns:
        Array of shape (2, 2), rows B_1, B_2, in 1/a_M.
    """
    return 2.0 * np.pi * np.linalg.inv(supercell_cell(M)).T


def lattice_shell(basis: np.ndarray, cutoff: float, unit: float = 1.0) -> np.ndarray:
    """Integer coordinates n of the lattice vectors n_1 v_1 + n_2 v_2 with length <= cutoff.

    Lengths are measured in ``unit`` (|n_1 v_1 + n_2 v_2| / unit), kept up to cutoff + 1e-9
    (rounding on the boundary) and ordered by that length; vectors of equal length keep the
    lexicographic order of (n_1, n_2).

    Args:
        basis: rows v_1, v_2, shape (2, 2).
        cutoff: largest length, in ``unit``.
        unit: the length unit of ``cutoff``, in the units of ``basis``.

    Returns:
        Integers (n_1, n_2), shape (n, 2), the zero vector first.
    """
    r = int(np.ceil(cutoff * unit / np.min(np.linalg.svd(basis, compute_uv=False)))) + 1
    span = np.arange(-r, r + 1)
    n = np.stack(np.meshgrid(span, span, indexing="ij"), axis=-1).reshape(-1, 2)
    norm = np.linalg.norm(n @ basis, axis=1) / unit
    keep = norm <= cutoff + 1e-9
    return n[keep][np.argsort(norm[keep], kind="stable")]


def supercell_plane_waves(M: IntMatrix, g_max: float) -> np.ndarray:
    """Supercell reciprocal vectors Q = n_1 B_1 + n_2 B_2 with |Q| <= g_max |g_1|.

    The plane-wave basis exp(i Q . r) of the Hartree-Fock reference and of the Slater and
    Psiformer orbitals: periodic on the supercell torus.

    Args:
        M: supercell matrix.
        g_max: cut-off in units of |g_1| = 4 pi / sqrt3.

    Returns:
        Integers (n_1, n_2), shape (n_Q, 2), sorted by |Q| (:func:`lattice_shell`, Q = 0 first).
    """
    return lattice_shell(supercell_reciprocal(M), g_max * G_NORM)


def moire_coordinates(k: np.ndarray) -> np.ndarray:
    """Coordinates f of wave vectors on the moire reciprocal basis, k = f_1 b_1 + f_2 b_2.

    Args:
        k: wave vectors, shape (..., 2), in 1/a_M.

    Returns:
        f_j = k . a_j / (2 pi), shape (..., 2).
    """
    return np.asarray(k) @ MOIRE_VECTORS.T / (2.0 * np.pi)


def momentum_labels(M: IntMatrix, k: np.ndarray) -> np.ndarray:
    """Integer labels of supercell wave vectors modulo the moire reciprocal lattice.

    Two supercell reciprocal vectors are the same crystal momentum if and only if their labels
    agree; labels add under addition of momenta (mod N_sites).

    Args:
        M: supercell matrix.
        k: supercell reciprocal vectors, shape (..., 2), in 1/a_M.

    Returns:
        Integer array (..., 2): round(N_sites f) mod N_sites with f the moire coordinates of k.
    """
    n = n_sites(M)
    return np.mod(np.rint(n * moire_coordinates(k)).astype(np.int64), n)


def fold_to_brillouin_zone(k: np.ndarray) -> np.ndarray:
    """Map wave vectors to their equivalent in the first moire Brillouin zone (hexagon).

    Among k - G (G a moire reciprocal vector) the shortest is kept; on the zone boundary the tie
    is broken by the smallest polar angle in [0, 2 pi), which makes the choice deterministic.

    Args:
        k: wave vectors, shape (n, 2), in 1/a_M.

    Returns:
        Folded wave vectors, shape (n, 2).
    """
    k = np.asarray(k, dtype=float)
    b = moire_reciprocal_basis()
    base = k - np.floor(moire_coordinates(k)) @ b
    shifts = np.array([(i, j) for i in range(-2, 3) for j in range(-2, 3)]) @ b
    cand = base[:, None, :] - shifts[None, :, :]
    norm = np.round(np.linalg.norm(cand, axis=-1), 9)
    angle = np.round(np.mod(np.arctan2(cand[..., 1], cand[..., 0]), 2.0 * np.pi), 9)
    angle = np.where(norm < 1e-9, 0.0, angle)
    best = np.lexsort((angle, norm), axis=-1)[:, 0]
    return cand[np.arange(len(k)), best]


def supercell_kpoints(M: IntMatrix) -> np.ndarray:
    """The N_sites crystal momenta of the supercell torus, folded into the first moire BZ.

    k = n_1 B_1 + n_2 B_2 modulo the moire reciprocal lattice, ordered by |k| then polar angle
    (Gamma first).

    Args:
        M: supercell matrix.

    Returns:
        Array of shape (N_sites, 2), in 1/a_M.
    """
    n = n_sites(M)
    grid = np.array([(i, j) for i in range(n) for j in range(n)]) @ supercell_reciprocal(M)
    _, first = np.unique(momentum_labels(M, grid), axis=0, return_index=True)
    k = fold_to_brillouin_zone(grid[np.sort(first)])
    norm = np.round(np.linalg.norm(k, axis=1), 9)
    angle = np.round(np.mod(np.arctan2(k[:, 1], k[:, 0]), 2.0 * np.pi), 9)
    return k[np.lexsort((angle, norm))]


def moire_sites(M: IntMatrix) -> tuple[np.ndarray, np.ndarray]:
    """The moire lattice points R = n_1 a_1 + n_2 a_2 inside the supercell.

    For V > 0 and |phi| < 60 degrees they are the minima of -2V sum_n cos(g_n . r + phi).

    Args:
        M: supercell matrix.

    Returns:
        positions: shape (N_sites, 2), Cartesian in a_M, fractional supercell coordinates
            in [0, 1).
        integer: shape (N_sites, 2), the integers (n_1, n_2).
    """
    cell = supercell_cell(M)
    n = n_sites(M)
    span = np.arange(-2 * n, 2 * n + 1)
    nn = np.stack(np.meshgrid(span, span, indexing="ij"), axis=-1).reshape(-1, 2)
    frac = (nn @ MOIRE_VECTORS) @ np.linalg.inv(cell)
    inside = np.all((frac > -1e-9) & (frac < 1.0 - 1e-9), axis=1)
    return nn[inside] @ MOIRE_VECTORS, nn[inside]


def sqrt3_sublattice(integer_sites: np.ndarray) -> np.ndarray:
    """Label of the sqrt3 x sqrt3 sublattice of moire sites, (n_1 + n_2) mod 3.

    The sqrt3 x sqrt3 R30 superlattice is spanned by a_1 - a_2 and a_1 + 2 a_2; its three cosets
    are the three sublattices. The honeycomb crystal at nu = 2/3 occupies two of them.

    Args:
        integer_sites: moire-basis integers (n_1, n_2), shape (n, 2).

    Returns:
        Sublattice index in {0, 1, 2}, shape (n,).
    """
    return np.mod(np.sum(integer_sites, axis=1), 3)


def supports_sqrt3(M: IntMatrix) -> bool:
    """Whether the cell fits sqrt3 x sqrt3 order (L_1, L_2 in the sqrt3 superlattice)."""
    return bool(np.all(sqrt3_sublattice(np.asarray(M).T) == 0))


def energy_unit_meV(m_star: float, a_M: float) -> float:
    """E0 = hbar^2 / (m* a_M^2) in meV.

    Args:
        m_star: effective mass in units of the electron mass.
        a_M: moire period in nm.
    """
    joule = const.hbar**2 / (m_star * const.m_e * (a_M * 1e-9) ** 2)
    return joule / const.e * 1e3


def coulomb_strength(m_star: float, a_M: float, epsilon: float) -> float:
    """U = a_M / a_B* with the effective Bohr radius a_B* = a_0 epsilon / (m*/m_e) (dimensionless).

    In units of E0, the Coulomb energy e^2 / (4 pi eps_0 epsilon r) is U / r with r in a_M.

    Args:
        m_star: effective mass in units of the electron mass.
        a_M: moire period in nm.
        epsilon: dielectric constant.
    """
    a_bohr_nm = const.physical_constants["Bohr radius"][0] * 1e9
    return a_M * m_star / (a_bohr_nm * epsilon)


@dataclasses.dataclass(frozen=True)
class MoireParameters:
    """Dimensionless parameters of the moire Hamiltonian on a supercell torus.

    H / E0 = -1/2 sum_i nabla_i^2 - 2 V_E0 sum_i sum_n cos(g_n . r_i + phi)
             + U sum_{i<j} 1/|r_i - r_j|   (lengths in a_M, Ewald sum on the torus).
    """

    V_E0: float
    """Moire potential amplitude V / E0."""
    phi: float
    """Moire potential phase phi in radians."""
    U: float
    """Coulomb strength U = a_M / a_B* (Coulomb energy U / r in E0, r in a_M)."""
    E0_meV: float
    """Energy unit E0 = hbar^2 / (m* a_M^2) in meV (only used to convert results to meV)."""
    M: IntMatrix
    """Supercell matrix ((M00, M01), (M10, M11))."""
    n_electrons: int
    """Number of electrons N."""
    spin_polarized: bool
    """True: all electrons have the same spin; False: N/2 up and N/2 down."""

    @classmethod
    def from_config(cls, system: Any) -> MoireParameters:
        """Build from the `system` section of the run configuration.

        Reads m_star (m_e), a_M (nm), V (meV), phi (degrees), epsilon, V_E0 (None or override of
        V / E0), U (None or override of U), sites (named size), supercell (None or a 2 x 2
        integer matrix that overrides sites), n_electrons, spin_polarized.

        Args:
            system: object with the attributes above (e.g. `hpcvmc.config.MoireConfig`).

        Returns:
            The parameters.
        """
        e0 = energy_unit_meV(system.m_star, system.a_M)
        v_e0 = system.V / e0 if system.V_E0 is None else float(system.V_E0)
        u = (
            coulomb_strength(system.m_star, system.a_M, system.epsilon)
            if system.U is None
            else float(system.U)
        )
        if system.supercell is not None:
            M = as_int_matrix(system.supercell)
        else:
            M = supercell_matrix(system.sites)
        return cls(
            V_E0=float(v_e0),
            phi=float(np.deg2rad(system.phi)),
            U=float(u),
            E0_meV=float(e0),
            M=M,
            n_electrons=int(system.n_electrons),
            spin_polarized=bool(system.spin_polarized),
        )

    @property
    def n_sites(self) -> int:
        """Number of moire sites in the supercell."""
        return n_sites(self.M)

    @property
    def cell(self) -> np.ndarray:
        """Supercell vectors, shape (2, 2), rows L_1, L_2 in a_M."""
        return supercell_cell(self.M)

    @property
    def area(self) -> float:
        """Supercell area in a_M^2."""
        return cell_area(self.M)

    @property
    def filling(self) -> float:
        """Filling nu = N / N_sites."""
        return self.n_electrons / self.n_sites
