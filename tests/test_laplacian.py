"""The Laplacian methods against brute force (trace of jax.hessian), real and complex."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hpcvmc import config as C
from hpcvmc.laplacian import METHODS, laplacian_and_gradient
from hpcvmc.models import slater
from hpcvmc.systems import moire


def _brute_force(f, x):
    """Trace of the full Hessian and the gradient, real and imaginary parts separately."""
    parts = (lambda v: jnp.real(f(v.reshape(x.shape))), lambda v: jnp.imag(f(v.reshape(x.shape))))
    lap = [jnp.trace(jax.hessian(p)(x.reshape(-1))) for p in parts]
    grad = [jax.grad(p)(x.reshape(-1)).reshape(x.shape) for p in parts]
    return lap[0] + 1j * lap[1], grad[0] + 1j * grad[1]


def _smooth(v):
    """A real test function of (4, 2) coordinates with mixed second derivatives."""
    w = jnp.arange(1.0, 9.0).reshape(4, 2) / 5.0
    return jnp.sum(jnp.sin(v * w)) * jnp.exp(-jnp.sum(v**2) / 10.0) + jnp.prod(v[:, 0])


def _complex(v):
    return jnp.log(1.5 + jnp.sum(jnp.cos(v), axis=-1).astype(complex) + 1j * jnp.sum(v**2)).sum()


@pytest.mark.parametrize("method", ["loop", "forward"])
@pytest.mark.parametrize("f", [_smooth, _complex], ids=["real", "complex"])
def test_matches_hessian_trace(f, method):
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 2))
    lap, grad = jax.jit(lambda v: METHODS[method](f, v))(x)
    lap_ref, grad_ref = _brute_force(f, x)
    assert grad.shape == x.shape
    np.testing.assert_allclose(lap, lap_ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(grad, grad_ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("polarized", [True, False])
def test_slater_jastrow_laplacian_matches_hessian(polarized):
    """log psi of a perturbed Slater determinant with Jastrow (complex) on random walkers; the
    plane-wave Jastrow terms with random coefficients."""
    system = moire.from_config(moire.MoireConfig(sites=3, n_electrons=4, spin_polarized=polarized))
    cfg = slater.SlaterConfig(g_max=1.5, init_noise=0.3, jastrow=True, jastrow_shells=3)
    model = slater.from_config(cfg, system)
    params = dict(model.init(jax.random.PRNGKey(1), jnp.ones((1, 4, 2)))["params"])
    params["jastrow_plane_waves"] = 0.1 * jax.random.normal(jax.random.PRNGKey(3), (2, 3))
    walkers = jax.random.uniform(jax.random.PRNGKey(2), (3, 4, 2)) * 2.0

    def f(r):
        return model.apply({"params": params}, r[None])[0]

    lap, grad = jax.jit(jax.vmap(lambda x: laplacian_and_gradient(f, x)))(walkers)
    lap_ref, grad_ref = jax.jit(jax.vmap(lambda x: _brute_force(f, x)))(walkers)
    np.testing.assert_allclose(lap, lap_ref, rtol=1e-10)
    np.testing.assert_allclose(grad, grad_ref, rtol=1e-10, atol=1e-12)
