"""A restricted Boltzmann machine with real parameters and a complex output.

log psi(s) = sum_j log cosh(a_j(s) + i b_j(s)),  a = W_a s + c_a,  b = W_b s + c_b,
with alpha * n_sites hidden units. The imaginary part lets it learn the sign structure on
top of (or instead of) the Marshall sign. A small, honest baseline for the lattice quickstart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from hpcvmc.config import DTYPES, option
from hpcvmc.registry import Component, register


def log_cosh(z: jax.Array) -> jax.Array:
    """Stable log cosh of a complex argument.

    log cosh z = |Re z| + log(1 + exp(-2 z sgn(Re z))) - log 2, using cosh(z) = cosh(-z): the
    exponential then has a non-positive real part and cannot overflow.
    """
    z = jnp.where(z.real < 0, -z, z)
    return z + jnp.log1p(jnp.exp(-2.0 * z)) - jnp.log(2.0)


class RBM(nn.Module):
    """Complex-output RBM.

    Attributes:
        alpha: hidden units per site.
        dtype: compute dtype of the two Dense maps, "float64" or "float32"; the parameters are
            float64 and the sum of log cosh over the hidden units is formed in float64.
    """

    alpha: int = 2
    dtype: str = "float64"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """log psi of configurations x of shape (..., n_sites) with entries +-1 -> (...)."""
        dtype = jnp.dtype(self.dtype)
        n_hidden = self.alpha * x.shape[-1]
        init = nn.initializers.normal(0.01)
        x = x.astype(dtype)
        a, b = (nn.Dense(n_hidden, dtype=dtype, param_dtype=jnp.float64, kernel_init=init,
                         name=name)(x).astype(jnp.float64) for name in ("real", "imag"))
        out = jnp.sum(log_cosh(a + 1j * b), axis=-1)
        return out.astype(jnp.complex128 if jax.config.jax_enable_x64 else jnp.complex64)


@dataclass(frozen=True, kw_only=True)
class RBMConfig:
    """Restricted Boltzmann machine with real parameters and complex output.

    log psi(s) = sum_j log cosh(a_j + i b_j), a = W_a s + c_a, b = W_b s + c_b.
    """

    type: str = option("rbm", "Model type.")
    alpha: int = option(2, "Hidden-unit density: alpha * n_sites hidden units.", positive=True)
    dtype: str = option(
        "float64", "Compute precision of the network (parameters, optimizer state, energies and "
        "the update stay float64).", choices=DTYPES,
    )

    requires: ClassVar[frozenset[str]] = frozenset({"spins"})


def from_config(cfg: RBMConfig, system: Any) -> RBM:
    """Build the model from a validated ``[model] type = "rbm"`` section."""
    return RBM(alpha=cfg.alpha, dtype=cfg.dtype)


register(Component("model", "rbm", RBMConfig, from_config))
