"""Geometry and units of the moire system (hpcvmc.systems.moire_lattice)."""

import types

import numpy as np
import pytest

from hpcvmc.systems import moire_lattice as ml


def system(**overrides):
    """A stand-in for the lead's `system` config section (docs/physics.md defaults)."""
    values = dict(
        m_star=0.35, a_M=8.031, V=15.0, phi=45.0, epsilon=10.0, V_E0=None, U=None, sites=27,
        supercell=None, n_electrons=18, spin_polarized=True,
    )
    values.update(overrides)
    return types.SimpleNamespace(**values)


def test_units_reproduce_physics_md():
    assert ml.energy_unit_meV(0.35, 8.031) == pytest.approx(3.37556, abs=5e-6)
    assert 15.0 / ml.energy_unit_meV(0.35, 8.031) == pytest.approx(4.44371, abs=5e-6)
    assert ml.coulomb_strength(0.35, 8.031, 5.0) == pytest.approx(10.6235, abs=5e-5)
    assert ml.coulomb_strength(0.35, 8.031, 10.0) == pytest.approx(5.31174, abs=5e-6)


def test_from_config_and_overrides():
    p = ml.MoireParameters.from_config(system())
    assert p.V_E0 == pytest.approx(4.44371, abs=5e-6)
    assert p.U == pytest.approx(5.31174, abs=5e-6)
    assert p.phi == pytest.approx(np.pi / 4)
    assert p.M == ((3, 3), (6, -3)) and p.n_sites == 27 and p.filling == pytest.approx(2 / 3)
    q = ml.MoireParameters.from_config(system(V_E0=2.0, U=1.5, supercell=[[3, 0], [0, 3]]))
    assert (q.V_E0, q.U, q.M, q.n_sites) == (2.0, 1.5, ((3, 0), (0, 3)), 9)
    with pytest.raises(ValueError, match="named"):
        ml.MoireParameters.from_config(system(sites=7))
    with pytest.raises(ValueError, match="singular"):
        ml.MoireParameters.from_config(system(supercell=[[1, 2], [2, 4]]))


def test_reciprocal_vectors():
    g = ml.potential_wave_vectors()
    np.testing.assert_allclose(np.linalg.norm(g, axis=1), 4 * np.pi / np.sqrt(3))
    np.testing.assert_allclose(g.sum(axis=0), 0.0, atol=1e-12)
    b = ml.moire_reciprocal_basis()
    np.testing.assert_allclose(ml.MOIRE_VECTORS @ b.T, 2 * np.pi * np.eye(2), atol=1e-12)
    np.testing.assert_allclose(b, [g[0] + g[1], g[0]], atol=1e-12)


@pytest.mark.parametrize("sites", sorted(ml.NAMED_SUPERCELLS))
def test_named_supercells(sites):
    M = ml.NAMED_SUPERCELLS[sites]
    cell = ml.supercell_cell(M)
    assert ml.n_sites(M) == sites
    assert ml.cell_area(M) == pytest.approx(sites * np.sqrt(3) / 2)
    # C3-symmetric cell: |L_1| = |L_2| at 120 degrees, and it contains the sqrt3 x sqrt3 lattice
    lengths = np.linalg.norm(cell, axis=1)
    assert lengths[0] == pytest.approx(lengths[1])
    assert cell[0] @ cell[1] == pytest.approx(-0.5 * lengths[0] ** 2)
    assert ml.supports_sqrt3(M)
    B = ml.supercell_reciprocal(M)
    np.testing.assert_allclose(B @ cell.T, 2 * np.pi * np.eye(2), atol=1e-12)


@pytest.mark.parametrize("sites", sorted(ml.NAMED_SUPERCELLS))
def test_kpoints(sites):
    M = ml.NAMED_SUPERCELLS[sites]
    k = ml.supercell_kpoints(M)
    assert k.shape == (sites, 2)
    np.testing.assert_allclose(k[0], 0.0, atol=1e-12)
    # supercell reciprocal vectors: k . L_j in 2 pi Z
    phase = k @ ml.supercell_cell(M).T / (2 * np.pi)
    np.testing.assert_allclose(phase, np.round(phase), atol=1e-9)
    # distinct modulo the moire reciprocal lattice
    assert len(np.unique(ml.momentum_labels(M, k), axis=0)) == sites
    # inside the first Brillouin zone: not longer than any k - G
    b = ml.moire_reciprocal_basis()
    shifts = np.array([(i, j) for i in (-1, 0, 1) for j in (-1, 0, 1)]) @ b
    norms = np.linalg.norm(k[:, None, :] - shifts[None], axis=-1)
    assert np.all(np.linalg.norm(k, axis=1) <= norms.min(axis=1) + 1e-9)


def test_sites_and_sublattices():
    M = ml.NAMED_SUPERCELLS[27]
    positions, integers = ml.moire_sites(M)
    assert len(positions) == 27
    frac = positions @ np.linalg.inv(ml.supercell_cell(M))
    assert np.all((frac > -1e-9) & (frac < 1))
    np.testing.assert_array_equal(np.bincount(ml.sqrt3_sublattice(integers)), [9, 9, 9])
    assert not ml.supports_sqrt3(((2, 0), (0, 2)))


@pytest.mark.parametrize("g_max, count", [(0.5, 1), (1.0, 7), (np.sqrt(3.0), 13), (2.0, 19),
                                          (4.0, 61)])
def test_moire_reciprocal_shells_count_the_triangular_lattice(g_max, count):
    """Shells of the triangular lattice: 1 + 6 (|g_1|) + 6 (sqrt3) + 6 (2) ... vectors."""
    n = ml.lattice_shell(ml.moire_reciprocal_basis(), g_max, unit=ml.G_NORM)
    assert len(n) == count


@pytest.mark.parametrize("basis", [ml.supercell_reciprocal(ml.NAMED_SUPERCELLS[21]),
                                   np.array([[1.0, 0.2], [0.3, 2.5]])])
def test_lattice_shell_against_a_brute_force_box(basis):
    """Every vector of a large box within the cut-off, once, by length, ties lexicographic."""
    cutoff = 3.1 * np.linalg.norm(basis[1])
    span = np.arange(-40, 41)
    box = np.stack(np.meshgrid(span, span, indexing="ij"), axis=-1).reshape(-1, 2)
    lengths = np.linalg.norm(box @ basis, axis=1)
    inside = box[lengths <= cutoff]
    ours = ml.lattice_shell(basis, cutoff)
    assert sorted(map(tuple, ours.tolist())) == sorted(map(tuple, inside.tolist()))
    ours_lengths = np.linalg.norm(ours @ basis, axis=1)
    assert np.all(np.diff(ours_lengths) >= 0) and not ours[0].any()
    ties = np.nonzero(np.diff(ours_lengths) == 0)[0]
    assert all(tuple(ours[i]) < tuple(ours[i + 1]) for i in ties)


def test_supercell_plane_waves_are_the_supercell_reciprocal_lattice_in_the_cutoff():
    M = ml.NAMED_SUPERCELLS[27]
    n = ml.supercell_plane_waves(M, 1.0)
    Q = n @ ml.supercell_reciprocal(M)
    assert np.all(np.linalg.norm(Q, axis=1) <= ml.G_NORM + 1e-9)
    np.testing.assert_allclose(np.mod(Q @ ml.supercell_cell(M).T / (2 * np.pi) + 0.5, 1), 0.5,
                               atol=1e-9)  # Q . L in 2 pi Z
    # the supercell reciprocal lattice is triangular with |g_1| / sqrt27 spacing: the points
    # a^2 + ab + b^2 = n <= 27, r(n) of them for n = 0, 1, 3, 4, 7, 9, 12, 13, 16, 19, 21, 25, 27
    assert len(n) == 1 + 6 + 6 + 6 + 12 + 6 + 6 + 12 + 6 + 12 + 12 + 6 + 6
