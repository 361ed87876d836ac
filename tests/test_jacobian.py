"""The chunked per-sample Jacobian against forward mode and central finite differences."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from hpcvmc.optim.jacobian import jacobian

N_SPINS, N_HIDDEN = 4, 3


def logpsi(params: dict, x: jax.Array) -> jax.Array:
    """A tiny complex RBM: sum_j log cosh(x . w_j + b_j) with complex w, b; shape (batch,)."""
    weights = params["w_re"] + 1j * params["w_im"]
    theta = x @ weights + params["b"]
    return jnp.sum(jnp.log(jnp.cosh(theta)), axis=-1) + x @ params["a"]


def logpsi_real(params: dict, x: jax.Array) -> jax.Array:
    """The real part of :func:`logpsi` (a real wave function)."""
    return logpsi(params, x).real


def tiny_params(seed: int = 0) -> dict:
    """Small random parameters (real leaves)."""
    keys = jax.random.split(jax.random.PRNGKey(seed), 4)
    return {
        "w_re": 0.3 * jax.random.normal(keys[0], (N_SPINS, N_HIDDEN)),
        "w_im": 0.3 * jax.random.normal(keys[1], (N_SPINS, N_HIDDEN)),
        "b": 0.1 * jax.random.normal(keys[2], (N_HIDDEN,)),
        "a": 0.1 * jax.random.normal(keys[3], (N_SPINS,)),
    }


def spins(n: int, seed: int = 1) -> jax.Array:
    """n random configurations in {-1, 1}^N_SPINS."""
    return jax.random.choice(jax.random.PRNGKey(seed), jnp.array([-1.0, 1.0]), (n, N_SPINS))


def forward_mode_jacobian(fn, params: dict, x: jax.Array) -> jax.Array:
    """Reference: jax.jacfwd of the batch function w.r.t. the flat parameters, (n, P)."""
    flat, unravel = ravel_pytree(params)
    return jax.jacfwd(lambda f: fn(unravel(f), x))(flat)


@pytest.mark.parametrize("chunk_size", [1, 3, 10, 64])
def test_matches_forward_mode_for_every_chunk_size(chunk_size: int) -> None:
    params, x = tiny_params(), spins(10)
    expected = forward_mode_jacobian(logpsi, params, x)
    actual = jacobian(logpsi, params, x, chunk_size)
    assert actual.shape == (10, ravel_pytree(params)[0].size)
    assert jnp.iscomplexobj(actual)
    np.testing.assert_allclose(actual, expected, rtol=1e-13, atol=1e-14)


def test_matches_central_finite_differences() -> None:
    params, x = tiny_params(), spins(6)
    flat, unravel = ravel_pytree(params)
    actual = np.asarray(jacobian(logpsi, params, x, 4))
    step = 1e-6
    values = jax.jit(lambda f: logpsi(unravel(f), x))
    for k in range(flat.size):
        shift = jnp.zeros_like(flat).at[k].set(step)
        central = (values(flat + shift) - values(flat - shift)) / (2 * step)
        np.testing.assert_allclose(actual[:, k], central, rtol=1e-7, atol=1e-8)


def test_real_log_psi_gives_real_rows() -> None:
    params, x = tiny_params(), spins(5)
    actual = jacobian(logpsi_real, params, x, 2)
    assert not jnp.iscomplexobj(actual)
    np.testing.assert_allclose(actual, forward_mode_jacobian(logpsi_real, params, x), rtol=1e-13)


def test_complex_parameters_are_rejected() -> None:
    params = {"w": jnp.ones((N_SPINS,), jnp.complex128)}
    with pytest.raises(ValueError, match="real parameters"):
        jacobian(lambda p, x: x @ p["w"], params, spins(3), 2)


def test_temporary_memory_is_bounded_by_the_chunk_not_the_sample_count() -> None:
    params, x = tiny_params(), spins(4096)
    compiled = jacobian.lower(logpsi, params, x, 8).compile()
    memory = compiled.memory_analysis()
    n_params = ravel_pytree(params)[0].size
    chunk_bytes = 8 * n_params * 16
    assert memory.output_size_in_bytes == 4096 * n_params * 16
    assert memory.temp_size_in_bytes < 64 * chunk_bytes < memory.output_size_in_bytes / 4
