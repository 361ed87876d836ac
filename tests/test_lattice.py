"""The J1-J2 local energy against NetKet's operator, and the lattice exact diagonalization."""

import jax
import jax.numpy as jnp
import netket as nk
import numpy as np
import pytest

from hpcvmc.models.rbm import RBM
from hpcvmc.reference import lattice_ed
from hpcvmc.systems.lattice import J1J2, marshall_log_sign, square_bonds, sz0_configurations


def _netket_hamiltonian(L: int, J2: float):
    """NetKet's J1-J2 Hamiltonian with S = sigma/2 (its Heisenberg uses Pauli matrices)."""
    graph = nk.graph.Square(L, max_neighbor_order=2)
    hilbert = nk.hilbert.Spin(0.5, N=L * L, total_sz=0)
    H = nk.operator.Heisenberg(hilbert, graph, J=[1.0, J2], sign_rule=[False, False])
    return hilbert, H / 4.0


def test_bond_counts():
    nn, nnn = square_bonds(4)
    assert len(nn) == 32 and len(nnn) == 32
    assert len(set(map(tuple, nn)) | set(map(tuple, nnn))) == 64


@pytest.mark.parametrize("J2", [0.0, 0.5])
@pytest.mark.parametrize("marshall", [False, True])
def test_local_energy_matches_netket(J2, marshall):
    """E_L(s) = sum_s' H_{s s'} psi(s') / psi(s) computed by NetKet's operator and by hpcvmc."""
    L = 4
    system = J1J2(L=L, J2=J2, marshall_sign=marshall, chunk_size=7)  # chunking exercised
    model = RBM(alpha=1)
    x = jnp.asarray(sz0_configurations(L * L)[::997])
    params = model.init(jax.random.PRNGKey(3), x)["params"]
    params = jax.tree_util.tree_map(lambda p: p + 0.2 * jax.random.normal(jax.random.PRNGKey(5), p.shape), params)

    def logpsi_model(p, xs):
        return model.apply({"params": p}, xs)

    ours = np.asarray(system.local_energy(logpsi_model, params, x))

    def logpsi_full(xs):  # the wave function the system describes, Marshall sign included
        base = logpsi_model(params, xs)
        return base + marshall_log_sign(L, xs) if marshall else base

    hilbert, H = _netket_hamiltonian(L, J2)
    # NetKet's local states are -1, +1 for spin -1/2, +1/2: the same encoding as hpcvmc.
    xp, mels = H.get_conn_padded(np.asarray(x))
    ratio = np.exp(np.asarray(logpsi_full(jnp.asarray(xp.reshape(-1, L * L)))).reshape(xp.shape[:2])
                   - np.asarray(logpsi_full(x))[:, None])
    reference = np.sum(mels * ratio, axis=1)
    np.testing.assert_allclose(ours, reference, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("J2,expected", [(0.0, -11.228483), (0.5, -8.4579234)])
def test_exact_energy_4x4(J2, expected):
    assert lattice_ed.ground_state_energy(4, 1.0, J2) == pytest.approx(expected, abs=5e-7)  # references are rounded


def test_exact_matches_netket_lanczos():
    hilbert, H = _netket_hamiltonian(4, 0.3)
    reference = nk.exact.lanczos_ed(H, k=1)[0]
    assert lattice_ed.ground_state_energy(4, 1.0, 0.3) == pytest.approx(reference, abs=1e-9)


def test_marshall_sign_is_ground_state_sign_at_j2_0():
    """At J2 = 0 the Marshall sign makes the ground state positive: E_L of psi = M |c| matches."""
    H = lattice_ed.hamiltonian(4, 1.0, 0.0)
    import scipy.sparse.linalg

    _, vec = scipy.sparse.linalg.eigsh(H, k=1, which="SA")
    basis = lattice_ed.sz0_basis(16)
    spins = np.where((basis[:, None] >> np.arange(16)) & 1, 1.0, -1.0)
    sign = np.exp(np.asarray(marshall_log_sign(4, jnp.asarray(spins))).real)  # |.| = 1
    phase = np.cos(np.asarray(marshall_log_sign(4, jnp.asarray(spins))).imag)
    v = vec[:, 0] * phase * np.sign(vec[0, 0] * phase[0])
    assert np.all(v > -1e-10) and np.allclose(sign, 1.0)
