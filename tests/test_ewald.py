"""Tests of the 2D Ewald sum (hpcvmc.systems.ewald) against independent truths.

The brute-force reference is a direct real-space lattice sum that needs no Ewald splitting.
In 2D the bare sum of 1/|r + L| with a uniform background is only conditionally convergent,
so each charge is damped by a Gaussian, 1/r -> exp(-eps r^2)/r, together with its share of the
background: the damped background of density 1/A contributes exactly
-(1/A) int d^2x exp(-eps x^2)/|x| = -pi^(3/2) / (A sqrt(eps)). The damped sum converges
absolutely (images out to eps |r + L|^2 = 40 are kept), and by Poisson summation it equals
phi(r) plus an asymptotic series in eps (the damped kernel's Fourier transform is
(2 pi/k)(1 + eps/k^2 + 9/2 (eps/k^2)^2 + ...) and its k = 0 term is removed exactly), with
no term that depends on how the sum is ordered. The limit eps -> 0 is taken by Richardson
(Neville) extrapolation through eps = t / A, t = 0.08, 0.04, ..., 0.005.
"""

import itertools
import math

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from hpcvmc.systems.ewald import Ewald2D  # noqa: E402

A1 = np.array([1.0, 0.0])
A2 = np.array([-0.5, math.sqrt(3.0) / 2])
TRIANGULAR = np.stack([A1, A2])


def moire_supercell(m: list[list[int]]) -> np.ndarray:
    """Supercell rows L_1 = M00 a_1 + M10 a_2, L_2 = M01 a_1 + M11 a_2 (docs/physics.md section 4)."""
    return np.stack([m[0][0] * A1 + m[1][0] * A2, m[0][1] * A1 + m[1][1] * A2])


CELL_27 = moire_supercell([[3, 3], [6, -3]])
CELL_9 = 3 * TRIANGULAR
CELL_3 = moire_supercell([[1, 1], [2, -1]])
SKEWED = np.array([[1.3, 0.2], [2.9, 1.1]])  # oblique, far from reduced (angle ~ 15 degrees)
CELLS = {"moire27": CELL_27, "moire9": CELL_9, "square": np.eye(2) * 2.5, "skewed": SKEWED}


def moire_sites(cell: np.ndarray) -> np.ndarray:
    """Integer coordinates (n1, n2) of the distinct moire sites n1 a_1 + n2 a_2 in a supercell.

    Args:
        cell: (2, 2) supercell made of moire lattice vectors.

    Returns:
        (n_sites, 2) integer array.
    """
    n_sites = round(abs(np.linalg.det(cell)) / abs(np.linalg.det(TRIANGULAR)))
    seen: dict[tuple[int, int], tuple[int, int]] = {}
    for n1, n2 in itertools.product(range(-n_sites, n_sites + 1), repeat=2):
        frac = (n1 * A1 + n2 * A2) @ np.linalg.inv(cell)
        key = tuple(np.rint((frac - np.floor(frac + 1e-9)) * 1e6).astype(int))
        seen.setdefault(key, (n1, n2))
    assert len(seen) == n_sites
    return np.array(sorted(seen.values()))


def random_positions(cell: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 2) positions uniform in the cell, with every pair at least 0.05 cell apart."""
    while True:
        frac = rng.uniform(size=(n, 2))
        d = frac[:, None] - frac[None]
        d -= np.round(d)
        if n == 1 or np.min(np.linalg.norm(d, axis=-1) + np.eye(n)) > 0.05:
            return frac @ cell


def direct_damped(cell: np.ndarray, r: np.ndarray | None, eps: float) -> float:
    """Gaussian-damped direct lattice sum with its background, no Ewald splitting.

    phi_eps(r) = sum_L exp(-eps |r+L|^2)/|r+L| - pi^(3/2)/(A sqrt(eps)); for r = None the
    self term xi_eps = sum_{L != 0} exp(-eps |L|^2)/|L| - pi^(3/2)/(A sqrt(eps)).

    Args:
        cell: (2, 2) supercell (rows).
        r: (2,) displacement (not a lattice vector), or None for xi.
        eps: damping (1/length^2).

    Returns:
        phi_eps(r) or xi_eps, in 1/length.
    """
    area = abs(np.linalg.det(cell))
    radius = math.sqrt(40.0 / eps)
    shift = np.zeros(2) if r is None else r - np.round(r @ np.linalg.inv(cell)) @ cell
    heights = area / np.linalg.norm(cell, axis=1)
    n1, n2 = (int(radius / h) + 2 for h in heights[::-1])
    grid = np.stack(np.meshgrid(np.arange(-n1, n1 + 1), np.arange(-n2, n2 + 1)), -1).reshape(-1, 2)
    d = np.linalg.norm(grid @ cell + shift, axis=1)
    d = d[(d <= radius) & (d > 0)] if r is None else d[d <= radius]
    return float(np.sum(np.exp(-eps * d * d) / d) - math.pi**1.5 / (area * math.sqrt(eps)))


def extrapolate(cell: np.ndarray, r: np.ndarray | None) -> float:
    """Neville extrapolation of ``direct_damped`` to eps -> 0 (polynomial in eps)."""
    area = abs(np.linalg.det(cell))
    eps = [t / area for t in (0.08, 0.04, 0.02, 0.01, 0.005)]
    table = [direct_damped(cell, r, e) for e in eps]
    for k in range(1, len(eps)):
        table = [
            (eps[i] * table[i + 1] - eps[i + k] * table[i]) / (eps[i] - eps[i + k])
            for i in range(len(table) - 1)
        ]
    return table[0]


def test_matches_brute_force_direct_sum() -> None:
    """phi, xi and E equal the Ewald-free damped direct sum on a small oblique cell."""
    cell = np.array([[1.7, 0.0], [0.6, 1.4]])
    ewald = Ewald2D(cell)
    positions = random_positions(cell, 3, np.random.default_rng(1))
    xi_direct = extrapolate(cell, None)
    np.testing.assert_allclose(ewald.madelung, xi_direct, rtol=0, atol=1e-10)
    pairs = [positions[i] - positions[j] for i, j in ((0, 1), (0, 2), (1, 2))]
    phi_direct = np.array([extrapolate(cell, d) for d in pairs])
    np.testing.assert_allclose(ewald.potential(jnp.array(pairs)), phi_direct, rtol=0, atol=1e-10)
    energy_direct = phi_direct.sum() + 1.5 * xi_direct
    np.testing.assert_allclose(ewald.energy(positions), energy_direct, rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", list(CELLS))
def test_independent_of_alpha(name: str) -> None:
    """xi, phi(r) and E agree for alpha = (0.6 ... 2.5) sqrt(pi/A), each with its own cut-offs."""
    cell = CELLS[name]
    rng = np.random.default_rng(2)
    rs = rng.uniform(size=(64, 2)) @ cell + 3.0 * cell[0]  # also exercises the minimum image
    positions = random_positions(cell, 18, rng)
    xis, phis, energies = [], [], []
    for factor in (0.6, 1.0, 1.5, 2.5):
        xis.append(Ewald2D(cell, alpha_factor=factor).madelung)
        phis.append(np.asarray(Ewald2D(cell, alpha_factor=factor).potential(rs)))
        # E has N(N-1)/2 pair terms each within tol: tighten tol so that E is within 1e-10.
        energies.append(float(Ewald2D(cell, tol=1e-13, alpha_factor=factor).energy(positions)))
    np.testing.assert_allclose(xis, xis[0], rtol=0, atol=1e-10)
    for phi in phis:
        np.testing.assert_allclose(phi, phis[0], rtol=0, atol=1e-10)
    np.testing.assert_allclose(energies, energies[0], rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", list(CELLS))
def test_truncation_error_below_tol(name: str) -> None:
    """The stated bound holds: phi at tol = 1e-8 is within 1e-8 of phi at tol = 1e-14."""
    cell = CELLS[name]
    rs = np.random.default_rng(3).uniform(size=(256, 2)) @ cell
    coarse, fine = Ewald2D(cell, tol=1e-8), Ewald2D(cell, tol=1e-14)
    n_coarse = len(coarse.lattice_vectors) + len(coarse.reciprocal_vectors)
    assert n_coarse < len(fine.lattice_vectors) + len(fine.reciprocal_vectors)
    np.testing.assert_allclose(coarse.potential(rs), fine.potential(rs), rtol=0, atol=1e-8)
    np.testing.assert_allclose(coarse.madelung, fine.madelung, rtol=0, atol=1e-8)


def test_wigner_crystal_madelung_energies() -> None:
    """Bonsall & Maradudin (1977): xi/2 in units of e^2/(eps a_ws), a_ws = (A/pi)^(1/2)."""
    for cell, expected in ((TRIANGULAR, -1.1061026), (np.eye(2), -1.1002444)):
        ewald = Ewald2D(cell)
        a_ws = math.sqrt(ewald.area / math.pi)
        np.testing.assert_allclose(ewald.madelung / 2 * a_ws, expected, rtol=0, atol=1e-6)
        np.testing.assert_allclose(ewald.energy(np.zeros((1, 2))), ewald.madelung / 2, atol=1e-14)


def test_moire_lattice_energies() -> None:
    """Energies per electron (1/a_M) at nu = 1, 1/3, 2/3 and the supercells' xi (docs/physics.md)."""
    np.testing.assert_allclose(Ewald2D(TRIANGULAR).madelung / 2, -2.1067113, atol=1e-6)
    np.testing.assert_allclose(Ewald2D(CELL_3).madelung / 2, -1.2163103, atol=1e-6)
    honeycomb = np.stack([np.zeros(2), A1])  # two of the three sqrt3 x sqrt3 sublattices
    np.testing.assert_allclose(Ewald2D(CELL_3).energy(honeycomb) / 2, -1.6615108, atol=1e-6)
    np.testing.assert_allclose(Ewald2D(CELL_27).madelung, -0.8108736, atol=1e-6)
    np.testing.assert_allclose(Ewald2D(CELL_9).madelung, -1.4044742, atol=1e-6)


def gwc_positions() -> np.ndarray:
    """(18, 2) nu = 2/3 honeycomb crystal in the 27-site cell: sites with n1 + n2 != 0 mod 3."""
    sites = moire_sites(CELL_27)
    occupied = sites[(sites[:, 0] + sites[:, 1]) % 3 != 0]
    return occupied[:, :1] * A1 + occupied[:, 1:] * A2


def test_supercell_crystal_energy_and_zero_force() -> None:
    """The honeycomb crystal in the 27-site cell has the sqrt3 cell's energy and no forces."""
    ewald = Ewald2D(CELL_27)
    positions = gwc_positions()
    np.testing.assert_allclose(ewald.energy(positions) / 18, -1.6615108, atol=1e-6)
    np.testing.assert_allclose(
        ewald.energy(positions) / 18, Ewald2D(CELL_3).energy(positions[:2]) / 2, atol=1e-10
    )
    np.testing.assert_allclose(jax.grad(ewald.energy)(jnp.asarray(positions)), 0.0, atol=1e-9)


def test_symmetries() -> None:
    """E is invariant under a global shift, lattice shifts of single electrons, relabelling and
    a change of basis of the supercell; phi is even and periodic."""
    rng = np.random.default_rng(4)
    ewald = Ewald2D(SKEWED)
    positions = random_positions(SKEWED, 7, rng)
    reference = float(ewald.energy(positions))
    shifted = positions + rng.normal(size=2)
    shifted[0] += 2 * SKEWED[0] - 3 * SKEWED[1]
    other_basis = np.array([[2, 1], [5, 3]]) @ SKEWED  # unimodular: the same lattice
    variants = [
        ewald.energy(shifted),
        ewald.energy(positions[::-1]),
        Ewald2D(other_basis).energy(positions),
    ]
    np.testing.assert_allclose(variants, reference, rtol=0, atol=1e-10)
    np.testing.assert_allclose(Ewald2D(other_basis).madelung, ewald.madelung, atol=1e-12)
    rs = rng.normal(size=(16, 2))
    np.testing.assert_allclose(ewald.potential(-rs), ewald.potential(rs), atol=1e-12)
    np.testing.assert_allclose(
        ewald.potential(rs + SKEWED[1] - 4 * SKEWED[0]), ewald.potential(rs), atol=1e-12
    )


def test_jit_vmap_and_gradient() -> None:
    """jit(vmap(energy)) equals the loop; jax.grad is finite and equals central differences."""
    ewald = Ewald2D(CELL_27)
    rng = np.random.default_rng(5)
    walkers = np.stack([random_positions(CELL_27, 18, rng) for _ in range(6)])
    batched = jax.jit(jax.vmap(ewald.energy))(jnp.asarray(walkers))
    looped = np.array([float(ewald.energy(w)) for w in walkers])
    np.testing.assert_allclose(batched, looped, rtol=1e-13, atol=1e-12)

    energy = jax.jit(ewald.energy)
    forces = np.asarray(jax.jit(jax.vmap(jax.grad(ewald.energy)))(jnp.asarray(walkers)))
    assert np.all(np.isfinite(forces))
    h = 1e-5
    for w, grad in zip(walkers[:2], forces[:2]):
        for i, k in ((0, 0), (5, 1), (17, 0)):
            step = np.zeros_like(w)
            step[i, k] = h
            fd = (float(energy(w + step)) - float(energy(w - step))) / (2 * h)
            np.testing.assert_allclose(grad[i, k], fd, rtol=1e-6, atol=1e-7)


def test_rejects_bad_input() -> None:
    """A singular cell or a non-positive tolerance is an error that says what is wrong."""
    with pytest.raises(ValueError, match="singular"):
        Ewald2D(np.array([[1.0, 2.0], [2.0, 4.0]]))
    with pytest.raises(ValueError, match="tol"):
        Ewald2D(np.eye(2), tol=0.0)
    with pytest.raises(ValueError, match=r"\(2, 2\)"):
        Ewald2D(np.eye(3))
