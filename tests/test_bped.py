"""Band-projected exact diagonalization (hpcvmc.reference.bped)."""

import math

import numpy as np
import pytest
import scipy.sparse

from hpcvmc.reference import bped
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


def test_sectors_against_jordan_wigner():
    p = params(9, 3, U=1.0)
    bands = supercell_bands(p)
    eps, W = bands.energies[:, 0], bped.interaction_tensor(p, bands)
    exact = np.linalg.eigvalsh(jordan_wigner_hamiltonian(eps, W, 3))
    states = bped.fock_states(9, 3)
    codes = bped.momentum_sectors(states, ml.momentum_labels(p.M, bands.k))
    ranker, ham = bped.StateRanker(9, 3), bped.band_hamiltonian(eps, W)
    spectrum = []
    for code in np.unique(codes):
        H = bped.full_matrix(bped.sector_hamiltonian(states[codes == code], ham, ranker)).toarray()
        np.testing.assert_allclose(H, H.conj().T, atol=1e-14)
        spectrum.extend(np.linalg.eigvalsh(H))
    np.testing.assert_allclose(np.sort(spectrum), exact, atol=1e-12)


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
