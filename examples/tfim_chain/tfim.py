"""The transverse-field Ising chain at its critical field, and a translation-invariant RBM.

H = -J sum_i sigma^z_i sigma^z_{i+1} - h sum_i sigma^x_i on a periodic chain of N sites (Pauli
matrices), critical at h = J. The ground state is positive (H is stoquastic), so the network
returns a real log psi.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import netket as nk


def hamiltonian(n_sites: int = 16, h: float = 1.0, J: float = 1.0) -> nk.operator.DiscreteJaxOperator:
    """NetKet's Ising operator, H = -h sum sigma^x + J' sum sigma^z sigma^z with J' = -J."""
    hilbert = nk.hilbert.Spin(0.5, n_sites)
    return nk.operator.Ising(hilbert, nk.graph.Chain(n_sites, pbc=True), h=h, J=-J)


class SymmetricRBM(nn.Module):
    """RBM with filters shared over all translations of the ring.

    log psi(x) = a sum_i x_i + sum_f sum_i log cosh(b_f + sum_d W_fd x_{i+d}),
    ``alpha`` filters of the ring's length.
    """

    alpha: int = 2

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        n = x.shape[-1]
        shifts = jnp.stack([jnp.roll(x, -d, axis=-1) for d in range(n)], axis=-1)  # (b, i, d)
        init = nn.initializers.normal(0.05)
        theta = nn.Dense(self.alpha, kernel_init=init, param_dtype=jnp.float64)(shifts)
        a = self.param("a", nn.initializers.zeros, ())
        return a * jnp.sum(x, axis=-1) + jnp.sum(jnp.log(jnp.cosh(theta)), axis=(-2, -1))
