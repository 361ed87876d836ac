"""The spin-1/2 Heisenberg model on a periodic triangular lattice, and an RBM on top of the
classical 120-degree phases.

H = J sum_<ij> sigma_i . sigma_j (Pauli matrices, NetKet's convention; every bond once) on the
L1 x L2 triangular lattice of nk.graph.Triangular, total S^z = 0. The lattice is not bipartite:
no Marshall sign. The model starts from the signs of the classical 120-degree order in the xy
plane, prod_i (|up> + exp(i theta_i) |down>) with theta_i = 2 pi c_i / 3 on sublattice
c_i = (n1 - n2) mod 3 of site n1 a1 + n2 a2, and a complex RBM learns the rest:

    log psi(x) = i sum_{i: x_i = -1} theta_i + sum_j log cosh(a_j + i b_j),
    a = W_a x + c_a, b = W_b x + c_b  (alpha N hidden units, real parameters).

The three sublattices close around the torus when L1 and L2 are multiples of 3.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import netket as nk
import numpy as np


def hamiltonian(L1: int = 6, L2: int = 3, J: float = 1.0) -> nk.operator.DiscreteJaxOperator:
    """NetKet's Heisenberg operator on nk.graph.Triangular([L1, L2], pbc=True), total_sz = 0."""
    graph = nk.graph.Triangular([L1, L2], pbc=True)
    hilbert = nk.hilbert.Spin(0.5, graph.n_nodes, total_sz=0)
    return nk.operator.Heisenberg(hilbert, graph, J=J)


def sublattice_angles(L1: int, L2: int) -> np.ndarray:
    """theta_i = 2 pi ((n1 - n2) mod 3) / 3 of every site, in NetKet's site order."""
    if L1 % 3 or L2 % 3:
        raise ValueError(f"L1 = {L1} and L2 = {L2} must be multiples of 3 (three sublattices)")
    cells = nk.graph.Triangular([L1, L2], pbc=True).basis_coords
    return 2 * np.pi * ((cells[:, 0] - cells[:, 1]) % 3) / 3


class RBM120(nn.Module):
    """Complex RBM times the 120-degree phases (module docstring)."""

    L1: int = 6
    L2: int = 3
    alpha: int = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        theta = jnp.asarray(sublattice_angles(self.L1, self.L2))
        hidden = self.alpha * x.shape[-1]
        init = nn.initializers.normal(0.01)
        a = nn.Dense(hidden, kernel_init=init, param_dtype=jnp.float64, name="real")(x)
        b = nn.Dense(hidden, kernel_init=init, param_dtype=jnp.float64, name="imag")(x)
        phase = jnp.sum(jnp.where(x < 0, theta, 0.0), axis=-1)
        return 1j * phase + jnp.sum(jnp.log(jnp.cosh(a + 1j * b)), axis=-1)
