"""Complex log-determinant and log-sum-exp (hpcvmc.logdet) against numpy and LAPACK."""

import jax
import jax.numpy as jnp
import numpy as np

from hpcvmc.logdet import log_det, log_sum_exp


def test_log_det_matches_slogdet_with_derivatives():
    key_re, key_im = jax.random.split(jax.random.PRNGKey(3))
    a = jax.random.normal(key_re, (4, 5, 5)) + 1j * jax.random.normal(key_im, (4, 5, 5))
    a = a.at[0].set(a[0][jnp.array([3, 1, 4, 0, 2])])  # a row permutation: pivoting matters
    sign, logabs = jnp.linalg.slogdet(a)
    ours = log_det(a)
    np.testing.assert_allclose(ours.real, logabs, rtol=1e-12)
    np.testing.assert_allclose(np.exp(1j * ours.imag), sign, rtol=1e-12)
    direction = jnp.ones_like(a) * (0.3 - 0.2j)

    def reference(m):
        s, l = jnp.linalg.slogdet(m)
        return l + jnp.log(s)

    _, tangent = jax.jvp(log_det, (a,), (direction,))
    _, tangent_ref = jax.jvp(reference, (a,), (direction,))
    np.testing.assert_allclose(tangent, tangent_ref, rtol=1e-10)
    grad = jax.grad(lambda m: log_det(m).real.sum())(a.real)
    grad_ref = jax.grad(lambda m: jnp.linalg.slogdet(m)[1].sum())(a.real)
    np.testing.assert_allclose(grad, grad_ref, rtol=1e-10)


def test_log_sum_exp_is_the_log_of_the_sum():
    """Against log sum exp evaluated directly, also with terms whose exp over- or underflows:
    log sum_k exp(c + t_k) = c + log sum_k exp(t_k) for a constant c = +-800."""
    rng = np.random.default_rng(0)
    small = rng.normal(size=(3, 4)) + 1j * rng.normal(size=(3, 4))
    direct = np.log(np.sum(np.exp(small), axis=-1))
    for c in (0.0, 800.0, -800.0):
        ours = np.asarray(log_sum_exp(jnp.asarray(small + c)))
        np.testing.assert_allclose(ours.real - c, direct.real, atol=1e-12)
        np.testing.assert_allclose(np.exp(1j * ours.imag), np.exp(1j * direct.imag), atol=1e-12)
