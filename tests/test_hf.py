"""Unrestricted Hartree-Fock and the Ewald constants (hpcvmc.reference.hf)."""

import numpy as np
import pytest

from hpcvmc.reference import hf, hf_search
from hpcvmc.reference.bands import noninteracting_energy
from hpcvmc.reference.bped import run_bped
from hpcvmc.reference.hf_search import SearchSettings as Settings
from hpcvmc.systems import moire_lattice as ml

E0 = ml.energy_unit_meV(0.35, 8.031)


def params(sites, n, U, V=15.0):
    return ml.MoireParameters(
        V_E0=V / E0, phi=np.pi / 4, U=U, E0_meV=E0, M=ml.NAMED_SUPERCELLS[sites],
        n_electrons=n, spin_polarized=True,
    )


@pytest.mark.parametrize("sites, xi", [(9, -1.4044742), (27, -0.8108736)])
def test_madelung_constant_physics_md(sites, xi):
    cell = ml.supercell_cell(ml.NAMED_SUPERCELLS[sites])
    assert hf.madelung_constant(cell) == pytest.approx(xi, abs=5e-8)
    for alpha in (0.5, 1.0, 2.0):
        assert hf.madelung_constant(cell, alpha) == pytest.approx(hf.madelung_constant(cell), abs=1e-12)


def test_wigner_crystal_madelung_energies():
    """Bonsall-Maradudin triangular lattice and the moire honeycomb crystal (docs/physics.md)."""
    triangular = ml.MOIRE_VECTORS  # one electron per moire cell
    a_ws = (np.sqrt(3) / 2 / np.pi) ** 0.5
    assert hf.madelung_constant(triangular) / 2 * a_ws == pytest.approx(-1.1061026, abs=5e-8)
    M = ml.NAMED_SUPERCELLS[3]
    cell = ml.supercell_cell(M)
    sites, integers = ml.moire_sites(M)
    honeycomb = sites[ml.sqrt3_sublattice(integers) != 0]
    pair = hf.ewald_potential(honeycomb[:1] - honeycomb[1:], cell)[0]
    energy = pair + len(honeycomb) * hf.madelung_constant(cell) / 2
    assert energy / len(honeycomb) == pytest.approx(-1.6615108, abs=5e-8)


def test_fock_matrices_against_brute_force():
    p = params(3, 2, U=2.0)
    basis = hf.supercell_basis(p, 1.5)
    builder = hf.fock_builder(p, basis)
    n = len(basis.Q)
    rng = np.random.default_rng(1)
    C = np.linalg.qr(rng.normal(size=(n, 2)) + 1j * rng.normal(size=(n, 2)))[0]
    P = C @ C.conj().T
    index = {tuple(q): i for i, q in enumerate(basis.Q_int.tolist())}
    B = ml.supercell_reciprocal(p.M)
    K = np.zeros((n, n), complex)
    J = np.zeros((n, n), complex)
    for a in range(n):
        for b in range(n):
            for c in range(n):  # K[a, b] = -(1/A) sum_q v(q) P[a - q, b - q], q = Q_a - Q_c
                q = basis.Q_int[a] - basis.Q_int[c]
                j = index.get(tuple(basis.Q_int[b] - q))
                if j is not None and q.any():
                    K[a, b] -= 2 * np.pi * p.U / np.linalg.norm(q @ B) / p.area * P[c, j]
            d = basis.Q_int[a] - basis.Q_int[b]
            if d.any():
                rho = sum(P[i, index[tuple(x - d)]] for i, x in enumerate(basis.Q_int) if tuple(x - d) in index)
                J[a, b] = 2 * np.pi * p.U / np.linalg.norm(d @ B) / p.area * rho
    np.testing.assert_allclose(hf.exchange_matrix(builder, P), K, atol=1e-12)
    np.testing.assert_allclose(hf.hartree_matrix(builder, P), J, atol=1e-12)


def test_noninteracting_limit():
    p = params(9, 6, U=0.0)
    result = hf_search.run_hf(p, Settings(families=("fermi_liquid",), n_random=0))
    assert result["converged"]
    # different plane-wave sets (HF: |Q| <= 3 |g|, bands: |G| <= 4 |g|): 2e-5 E0 apart
    assert result["energy_E0"] == pytest.approx(noninteracting_energy(p), abs=1e-4)
    rho = np.asarray(result["density"]["rho"])
    assert rho.mean() * p.area == pytest.approx(6.0, abs=1e-10)
    assert sum(result["state"]["sublattice_charges"]) == pytest.approx(6.0, abs=1e-6)


def test_second_order_agreement_with_bped():
    """HF and BP-ED share the first order in U (closed shell, 7 electrons on 9 sites)."""
    diff = []
    for U in (0.02, 0.04):
        p = params(9, 7, U=U)
        e_hf = hf_search.run_hf(
            p, Settings(q_max=4.0, families=("fermi_liquid",), n_random=0))["energy_E0"]
        diff.append(e_hf - run_bped(p)["energy_E0"])
    assert abs(diff[0]) < 1e-5
    assert diff[1] / diff[0] == pytest.approx(4.0, rel=0.02)


def test_basis_convergence_and_honeycomb_state():
    """Strong coupling (epsilon = 5), nu = 2/3 on 9 sites: the default cut-off is converged to
    1e-4 E0 per electron against a larger one, and the state is the sqrt3 honeycomb crystal."""
    p = params(9, 6, U=ml.coulomb_strength(0.35, 8.031, 5.0))
    runs = [hf_search.run_hf(p, Settings(q_max=q, families=("honeycomb_0",), n_random=0))
            for q in (hf.DEFAULT_Q_MAX, 3.5)]
    assert all(r["converged"] for r in runs)
    e = [r["energy_per_electron_E0"] for r in runs]
    assert abs(e[0] - e[1]) < 1e-4
    state = runs[0]["state"]
    assert state["classification"] == "honeycomb crystal"
    charges = np.sort(state["sublattice_charges"])
    assert charges.sum() == pytest.approx(6.0, abs=1e-6)
    assert charges[0] < 0.5 and charges[1] == pytest.approx(charges[2], abs=1e-4)


def test_positivity_shift_makes_the_kernel_non_negative():
    """phi + c >= 0 at random points (not the grid of `positivity_shift`); the shift term of the
    functional vanishes on projectors and penalizes fractional occupations."""
    p = params(9, 6, U=2.0)
    c = hf.positivity_shift(p.cell)
    r = np.random.default_rng(3).random((400, 2)) @ p.cell
    assert c > 0 and np.min(hf.ewald_potential(r, p.cell)) + c >= 0
    basis = hf.supercell_basis(p, 1.5)
    builder = hf.fock_builder(p, basis)
    h = hf.one_body_matrix(p, basis)
    C = np.linalg.eigh(h)[1][:, :7]
    projector = hf._evaluate(builder, h, C[:, :6] @ C[:, :6].conj().T, 0.0)
    assert abs(projector.terms["positivity_shift"]) < 1e-12
    half = C[:, :5] @ C[:, :5].conj().T + 0.5 * (C[:, 5:7] @ C[:, 5:7].conj().T)
    shifted = hf._evaluate(builder, h, half, 0.0).terms["positivity_shift"]
    assert shifted == pytest.approx(0.5 * builder.shift * 0.5, rel=1e-10)


def test_robust_search_finds_a_lower_stationary_state():
    """9 sites, nu = 2/3, epsilon = 10 (small basis): the search over the start families finds
    a state below the one the honeycomb start alone converges to, and the lowest
    solution is a Slater determinant (P^2 = P, tr P = N) at which the Fock matrix recomputed from
    P commutes with P."""
    p = params(9, 6, U=ml.coulomb_strength(0.35, 8.031, 10.0))
    _, single, _ = hf_search.search(p, Settings(q_max=1.5, families=("honeycomb_0",)))
    basis, solutions, record = hf_search.search(
        p, Settings(q_max=1.5, families=("fermi_liquid", "honeycomb", "waves", "orbitals"),
                    n_random=1))
    assert len(record) == 1 + 3 + 8 + 1
    energies = [s.energy for s in solutions if s.run["converged"]]
    assert solutions[0].energy == min(energies) and len(energies) >= 2
    assert solutions[0].energy < single[0].energy - 1e-3
    P = solutions[0].run["P"]
    np.testing.assert_allclose(P @ P, P, atol=1e-10)
    assert np.trace(P).real == pytest.approx(6.0, abs=1e-10)
    builder = hf.fock_builder(p, basis)
    F = hf.one_body_matrix(p, basis) + hf.hartree_matrix(builder, P) + hf.exchange_matrix(builder, P)
    assert np.max(np.abs(F @ P - P @ F)) < hf.COMMUTATOR_TOL
    assert solutions[0].run["gap"] > 0


def test_cli_refuses_refine_without_screening(capsys):
    from pathlib import Path

    from hpcvmc.cli import main

    job = str(Path(__file__).parents[1] / "jobs" / "moire_9sites_eps10.toml")
    assert main(["reference", "hf", "--refine", "2", job]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hpcvmc: error: --refine 2")
