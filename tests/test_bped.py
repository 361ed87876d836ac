"""Band-projected exact diagonalization (hpcvmc.reference.bped)."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse

from hpcvmc.cli import main
from hpcvmc.reference import bped, fock_budget, hf
from hpcvmc.reference.bands import noninteracting_energy, supercell_bands
from hpcvmc.systems import moire_lattice as ml

E0 = ml.energy_unit_meV(0.35, 8.031)


def params(sites, n, U):
    return ml.MoireParameters(
        V_E0=15.0 / E0, phi=np.pi / 4, U=U, E0_meV=E0, M=ml.NAMED_SUPERCELLS[sites],
        n_electrons=n, spin_polarized=True,
    )


@pytest.mark.parametrize("n_modes, n", [(9, 0), (9, 3), (12, 8), (27, 4)])
def test_fock_states_and_rank(n_modes, n):
    states = bped.fock_states(n_modes, n)
    assert len(states) == math.comb(n_modes, n)
    assert np.all(np.diff(states.astype(np.int64)) > 0)
    assert np.all(np.bitwise_count(states) == n)
    ranker = bped.StateRanker(n_modes, n)
    np.testing.assert_array_equal(ranker.rank(states), np.arange(len(states)))


def jordan_wigner_hamiltonian(eps, W, n):
    """sum eps n + 1/2 sum W c+ c+ c c with explicit Jordan-Wigner matrices, N-particle block."""
    n_k = len(eps)
    eye, z = scipy.sparse.identity(2), scipy.sparse.diags([1.0, -1.0])
    lower = scipy.sparse.csr_matrix(np.array([[0.0, 1.0], [0.0, 0.0]]))
    c = []
    for i in range(n_k):
        op = scipy.sparse.identity(1)
        for j in range(n_k):
            op = scipy.sparse.kron(op, z if j < i else (lower if j == i else eye), format="csr")
        c.append(op)
    cd = [op.conj().T for op in c]
    H = sum(eps[i] * cd[i] @ c[i] for i in range(n_k))
    for p1, p2, p3, p4 in zip(*np.nonzero(W)):
        H = H + 0.5 * W[p1, p2, p3, p4] * (cd[p1] @ cd[p2] @ c[p3] @ c[p4])
    number = sum(cd[i] @ c[i] for i in range(n_k)).diagonal().real
    keep = np.abs(number - n) < 0.5
    return H.toarray()[np.ix_(keep, keep)]


@pytest.mark.parametrize("sites, n_bands, n", [(9, 1, 3), (3, 3, 3)])
def test_sectors_against_jordan_wigner(sites, n_bands, n):
    p = params(sites, n, U=1.0)
    bands = supercell_bands(p, n_bands)
    eps, W = bped.mode_energies(bands), bped.interaction_tensor(p, bands)
    n_modes = len(eps)
    exact = np.linalg.eigvalsh(jordan_wigner_hamiltonian(eps, W, n))
    states = bped.fock_states(n_modes, n)
    labels = ml.momentum_labels(p.M, bands.k)[bped.mode_k_index(n_modes, sites)]
    codes = bped.momentum_sectors(states, labels, sites)
    ranker, ham = bped.StateRanker(n_modes, n), bped.band_hamiltonian(eps, W)
    spectrum = []
    for code in np.unique(codes):
        H = bped.full_matrix(bped.sector_hamiltonian(states[codes == code], ham, ranker)).toarray()
        spectrum.extend(np.linalg.eigvalsh(H))
    np.testing.assert_allclose(np.sort(spectrum), exact, atol=1e-12)


def test_sector_matrices_hermitian():
    """Every hop built independently in both directions (no triangle): H = H^H, = L + L^H - D."""
    p = params(9, 3, U=ml.coulomb_strength(0.35, 8.031, 5.0))
    bands = supercell_bands(p, 2)
    eps = bped.mode_energies(bands)
    ham = bped.band_hamiltonian(eps, bped.interaction_tensor(p, bands))
    states = bped.fock_states(18, 3)
    codes = bped.momentum_sectors(states, ml.momentum_labels(p.M, bands.k)[np.arange(18) % 9], 9)
    ranker = bped.StateRanker(18, 3)
    for code in np.unique(codes):
        sector = states[codes == code]
        whole = bped.sector_hamiltonian(sector, ham, ranker, lower_only=False).toarray()
        assert np.abs(whole - whole.conj().T).max() < 1e-13
        assert np.abs(whole).max() > 1.0
        lower = bped.full_matrix(bped.sector_hamiltonian(sector, ham, ranker)).toarray()
        np.testing.assert_allclose(lower, whole, atol=1e-13)


@pytest.mark.parametrize("eps, energy, sector", [(10.0, -56.1477085298813, 2),
                                                 (5.0, -103.33434363885672, 8)])
def test_one_band_reproduces_single_band_bped(eps, energy, sector):
    """N = 1 gives the numbers of the single-band code this replaced (9 sites, 6 electrons)."""
    result = bped.run_bped(params(9, 6, U=ml.coulomb_strength(0.35, 8.031, eps)), n_bands=1)
    assert result["energy_E0"] == pytest.approx(energy, abs=1e-9)
    assert result["ground_sector"] == sector
    assert [s["dimension"] for s in result["sectors"]] == [12] + [9] * 8


def _hf_density(p, bands, occupied, basis):
    """P[Q, Q'] of the determinant of the Bloch orbitals (n, k) in `occupied`, on the plane waves
    Q = k + G of the Hartree-Fock supercell basis."""
    index = {tuple(q): i for i, q in enumerate(basis.Q_int.tolist())}
    to_int = np.linalg.inv(ml.supercell_reciprocal(p.M))
    G = bands.G_int @ ml.moire_reciprocal_basis()
    P = np.zeros((len(basis.Q), len(basis.Q)), complex)
    for n, k in occupied:
        rows = [index[tuple(q)] for q in np.rint((bands.k[k] + G) @ to_int).astype(int).tolist()]
        phi = np.zeros(len(basis.Q), complex)
        phi[rows] = bands.coefficients[k, n]
        P += np.outer(phi, phi.conj())
    return P


@pytest.mark.parametrize("sites, occupied", [
    (3, [(1, 0), (2, 1), (1, 2)]),
    (9, [(0, 0), (1, 3), (2, 3), (3, 5), (1, 7)]),
])
def test_diagonal_element_equals_continuum_hartree_fock_energy(sites, occupied):
    """<D|H|D> of a determinant of band orbitals (bands 2-4, several per k) from the multi-band
    Hamiltonian equals the Hartree-Fock energy functional of the same orbitals evaluated in the
    supercell plane-wave basis directly from the continuum Hamiltonian (kinetic + moire potential
    + Ewald Coulomb with the Madelung term; `hf`, an FFT exchange): checks the interband form
    factors, the umklapp sum, the normal ordering and the constant."""
    n_bands = 1 + max(n for n, _ in occupied)
    p = params(sites, len(occupied), U=ml.coulomb_strength(0.35, 8.031, 5.0))
    bands = supercell_bands(p, n_bands, g_max=2.0)
    eps = bped.mode_energies(bands)
    ham = bped.band_hamiltonian(eps, bped.interaction_tensor(p, bands))
    modes = np.array([n * sites + k for n, k in occupied])
    state = np.array([np.sum(np.uint64(1) << modes.astype(np.uint64))], dtype=np.uint64)
    constant = 0.5 * len(modes) * p.U * hf.madelung_constant(p.cell)
    bped_energy = bped.diagonal_elements(state, ham)[0] + constant
    basis = hf.supercell_basis(p, q_max=3.0)
    builder = hf.fock_builder(p, basis)
    P = _hf_density(p, bands, occupied, basis)
    assert np.trace(P).real == pytest.approx(len(modes), abs=1e-12)
    terms = hf.hf_energy_terms(hf.one_body_matrix(p, basis), hf.hartree_matrix(builder, P),
                               hf.exchange_matrix(builder, P), P)
    assert bped_energy == pytest.approx(sum(terms.values()) + constant, abs=1e-10)
    assert abs(terms["exchange"]) > 0.1


def test_more_bands_lower_the_bound():
    """Nested Fock spaces: the lowest eigenvalue decreases with the number of bands."""
    p = params(9, 3, U=ml.coulomb_strength(0.35, 8.031, 5.0))
    energies = [bped.run_bped(p, n_bands=n)["energy_E0"] for n in (1, 2, 3)]
    assert energies[0] > energies[1] + 1e-3 > energies[2] + 2e-3


def test_sector_dimensions_and_memory_estimate():
    """The dynamic-programming dimensions equal the enumerated sectors; the non-zeros per row
    are estimated within [1, 1.5] of the built matrix; the budget refusal happens before any
    band is computed."""
    p = params(9, 4, U=1.0)
    k = ml.supercell_kpoints(p.M)
    labels = np.mod(ml.momentum_labels(p.M, k), 9)
    codes = bped.momentum_sectors(bped.fock_states(18, 4), labels[np.arange(18) % 9], 9)
    dims = fock_budget.sector_dimensions(labels[np.arange(18) % 9], 4, 9)
    np.testing.assert_array_equal(np.bincount(codes, minlength=81), dims)
    estimate, per_sector = bped.plan_memory(p, 2)
    result = bped.run_bped(p, n_bands=2, sectors=[0])
    assert result["sectors"][0]["dimension"] == per_sector[0] == estimate.dimension
    built = result["sectors"][0]["nnz_lower_triangle"] / estimate.dimension
    assert 1.0 <= estimate.nnz_per_row / built <= 1.5
    with pytest.raises(fock_budget.MemoryBudgetError, match="more than the 0.0 GB allowed"):
        bped.run_bped(p, n_bands=2, max_memory_bytes=1e6)


def test_cut_degenerate_shell_reported():
    """Bands 3 and 4 are degenerate at Gamma (a two-dimensional C3 representation)."""
    p = params(9, 3, U=1.0)
    energies = supercell_bands(p, 5).energies
    assert abs(energies[0, 3] - energies[0, 2]) < 1e-8
    assert bped.cut_shells(energies, 3) == [0] and bped.cut_shells(energies, 2) == []


def test_cli_bands_and_memory_refusal(tmp_path, capsys):
    job = str(Path(__file__).parents[1] / "jobs" / "moire_9sites_eps10.toml")
    out = tmp_path / "bped.json"
    assert main(["reference", "bped", "--bands", "2", "--sectors", "0,7", job,
                 "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [s["index"] for s in result["sectors"]] == [0, 7] and result["n_bands"] == 2
    assert main(["reference", "bped", "--bands", "4", "--max-memory-gb", "0.5", job,
                 "--out", str(tmp_path / "no.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hpcvmc: error: ") and "GB" in err[0]
    assert not (tmp_path / "no.json").exists()
    assert main(["reference", "bped", "--sectors", "0,9", job]) == 2


def test_interaction_symmetry():
    """W[p1, p2, p3, p4] = W[p2, p1, p4, p3] and the two-body operator is Hermitian."""
    p = params(9, 3, U=1.0)
    W = bped.interaction_tensor(p, supercell_bands(p))
    np.testing.assert_allclose(W, W.transpose(1, 0, 3, 2), atol=1e-13)
    np.testing.assert_allclose(W, W.transpose(3, 2, 1, 0).conj(), atol=1e-13)


def test_noninteracting_limit():
    p = params(9, 6, U=0.0)
    result = bped.run_bped(p)
    assert result["energy_E0"] == pytest.approx(noninteracting_energy(p), abs=1e-10)
    assert sum(s["dimension"] for s in result["sectors"]) == math.comb(9, 6)


def test_lanczos_matches_dense():
    p = params(27, 4, U=5.0)
    bands = supercell_bands(p)
    states = bped.fock_states(27, 4)
    codes = bped.momentum_sectors(states, ml.momentum_labels(p.M, bands.k))
    ham = bped.band_hamiltonian(bands.energies[:, 0], bped.interaction_tensor(p, bands))
    lower = bped.sector_hamiltonian(states[codes == codes[0]], ham, bped.StateRanker(27, 4))
    assert lower.shape[0] > bped.DENSE_LIMIT
    dense = np.linalg.eigvalsh(bped.full_matrix(lower).toarray())[0]
    assert bped.lowest_eigenvalue(lower) == pytest.approx(dense, abs=1e-9)


def test_twelve_sites_all_sectors_and_time_reversal():
    p = params(12, 8, U=ml.coulomb_strength(0.35, 8.031, 10.0))
    result = bped.run_bped(p)
    sectors = result["sectors"]
    assert len(sectors) == 12
    energies = {tuple(s["label"]): s["energy_E0"] for s in sectors}
    assert result["energy_E0"] == pytest.approx(min(energies.values()))
    for label, energy in energies.items():  # E(K) = E(-K), up to the plane-wave truncation
        minus = tuple(int(x) for x in np.mod(-np.array(label), 12))
        assert energies[minus] == pytest.approx(energy, abs=1e-8)
    assert result["energy_per_electron_meV"] == pytest.approx(result["energy_E0"] * E0 / 8)
