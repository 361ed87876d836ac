"""The spin-1/2 Heisenberg model on a periodic triangular lattice, and a complex RBM.

H = J sum_<ij> sigma_i . sigma_j (Pauli matrices, NetKet's convention; every bond once) on the
L1 x L2 triangular lattice, total S^z = 0. The lattice is not bipartite: no Marshall sign, the
signs are learnt by the imaginary part of log psi.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import netket as nk


def hamiltonian(L1: int = 4, L2: int = 4, J: float = 1.0) -> nk.operator.DiscreteJaxOperator:
    """NetKet's Heisenberg operator on nk.graph.Triangular([L1, L2], pbc=True), total_sz = 0."""
    graph = nk.graph.Triangular([L1, L2], pbc=True)
    hilbert = nk.hilbert.Spin(0.5, graph.n_nodes, total_sz=0)
    return nk.operator.Heisenberg(hilbert, graph, J=J)


class ComplexRBM(nn.Module):
    """log psi(x) = sum_j log cosh(a_j + i b_j), a = W_a x + c_a, b = W_b x + c_b,
    ``alpha`` N hidden units, real parameters."""

    alpha: int = 2

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        hidden = self.alpha * x.shape[-1]
        init = nn.initializers.normal(0.05)
        a = nn.Dense(hidden, kernel_init=init, name="real")(x)
        b = nn.Dense(hidden, kernel_init=init, name="imag")(x)
        return jnp.sum(jnp.log(jnp.cosh(a + 1j * b)), axis=-1)
