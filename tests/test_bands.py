"""Plane-wave continuum model of the moire potential (hpcvmc.reference.bands)."""

import numpy as np
import pytest

from hpcvmc.reference import bands
from hpcvmc.systems import moire_lattice as ml

E0 = ml.energy_unit_meV(0.35, 8.031)
V_E0 = 15.0 / E0
PHI = np.pi / 4
K_POINT = np.array([4 * np.pi / 3, 0.0])


def test_lowest_band_against_physics_md():
    """-11.99 meV at Gamma, about 14.2 meV wide (maximum at K)."""
    e = bands.solve_bands(np.array([[0.0, 0.0], K_POINT]), V_E0, PHI).energies[:, 0] * E0
    assert e[0] == pytest.approx(-11.99, abs=5e-3)
    assert e[1] - e[0] == pytest.approx(14.2, abs=0.05)
    f = np.linspace(0, 1, 13)[:-1]
    grid = np.stack(np.meshgrid(f, f, indexing="ij"), -1).reshape(-1, 2) @ ml.moire_reciprocal_basis()
    band = bands.solve_bands(ml.fold_to_brillouin_zone(grid), V_E0, PHI).energies[:, 0] * E0
    assert band.min() >= e[0] - 1e-4 and band.max() <= e[1] + 1e-4


def test_cutoff_convergence():
    k = np.array([[0.0, 0.0], K_POINT, [1.0, 0.5]])
    e4 = bands.solve_bands(k, V_E0, PHI, n_bands=2, g_max=bands.DEFAULT_G_MAX).energies
    e6 = bands.solve_bands(k, V_E0, PHI, n_bands=2, g_max=6.0).energies
    np.testing.assert_allclose(e4[:, 0], e6[:, 0], atol=1e-6)


def test_potential_fourier_matches_real_space():
    """V_q from the plane-wave matrix equals the FFT of -2V sum cos(g.r + phi) (sign check)."""
    n = 12
    f = np.arange(n) / n
    frac = np.stack(np.meshgrid(f, f, indexing="ij"), -1)
    potential = bands.moire_potential(frac @ ml.MOIRE_VECTORS, V_E0, PHI)
    coeff = np.fft.fft2(potential) / n**2  # [m1, m2]: coefficient of exp(2 pi i m.f) = exp(i q.r)
    m = bands.reciprocal_shell(1.0)
    q = m @ ml.moire_reciprocal_basis()
    expected = bands.potential_fourier(q, V_E0, PHI)
    np.testing.assert_allclose(coeff[m[:, 0] % n, m[:, 1] % n], expected, atol=1e-12)
    assert np.count_nonzero(np.abs(expected) > 0) == 6


def test_periodic_gauge():
    """c_{k+G0}(G) = c_k(G + G0) is an eigenvector of h(k + G0) with the same energy."""
    k = np.array([[0.7, -0.3]])
    bs = bands.solve_bands(k, V_E0, PHI, g_max=7.0)
    shift = np.array([1, -1])
    c = bands.shift_coefficients(bs.coefficients[0, 0], bs.G_int, shift)
    h = bands.continuum_hamiltonian(k + shift @ ml.moire_reciprocal_basis(), bs.G_int, V_E0, PHI)[0]
    np.testing.assert_allclose(h @ c, bs.energies[0, 0] * c, atol=1e-8)


def test_noninteracting_energy_spin():
    base = dict(V_E0=V_E0, phi=PHI, U=0.0, E0_meV=E0, M=ml.NAMED_SUPERCELLS[9])
    pol = ml.MoireParameters(**base, n_electrons=6, spin_polarized=True)
    unpol = ml.MoireParameters(**base, n_electrons=6, spin_polarized=False)
    eps = np.sort(bands.supercell_bands(pol).energies[:, 0])
    assert bands.noninteracting_energy(pol) == pytest.approx(eps[:6].sum())
    assert bands.noninteracting_energy(unpol) == pytest.approx(2 * eps[:3].sum())
