"""The natural-gradient optimizer on an exact full-sum toy problem, and its settings.

The toy: a 4-spin transverse-field Ising ring, H = -sum_i Z_i Z_{i+1} - h sum_i X_i, with the
tiny complex RBM of ``test_jacobian``; expectations are exact sums over all 16 configurations
weighted by |psi|^2, so there is no Monte Carlo noise.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree
from test_jacobian import logpsi, tiny_params

from hpcvmc.optim import minsr
from hpcvmc.optim.jacobian import centred_scaled, jacobian
from hpcvmc.optim.natural_gradient import NaturalGradient
from hpcvmc.parallel import SERIAL

FIELD = 1.0
CONFIGS = jnp.array(list(itertools.product([-1.0, 1.0], repeat=4)))


def ising_hamiltonian(n_spins: int = 4, field: float = FIELD) -> jax.Array:
    """Dense TFIM ring in the basis CONFIGS (spin value +-1 = Z eigenvalue)."""
    configs = np.asarray(CONFIGS)
    index = {tuple(c): i for i, c in enumerate(configs)}
    hamiltonian = np.zeros((len(configs), len(configs)))
    for i, config in enumerate(configs):
        hamiltonian[i, i] = -np.sum(config * np.roll(config, -1))
        for site in range(n_spins):
            flipped = config.copy()
            flipped[site] *= -1
            hamiltonian[i, index[tuple(flipped)]] -= field
    return jnp.asarray(hamiltonian)


HAMILTONIAN = ising_hamiltonian()


@jax.jit
def exact_energy(params: dict) -> jax.Array:
    """<psi|H|psi> / <psi|psi> by full summation."""
    psi = jnp.exp(logpsi(params, CONFIGS))
    return jnp.real(jnp.vdot(psi, HAMILTONIAN @ psi) / jnp.vdot(psi, psi))


def exact_rows(params: dict) -> tuple[jax.Array, jax.Array]:
    """Centred, |psi|^2-weighted rows of O and eps over all configurations."""
    log_amplitudes = logpsi(params, CONFIGS)
    psi = jnp.exp(log_amplitudes)
    local_energy = (HAMILTONIAN @ psi) / psi
    weights = jnp.exp(2 * log_amplitudes.real)
    o_matrix = jacobian(logpsi, params, CONFIGS, 8)
    return centred_scaled(o_matrix, local_energy, SERIAL, weights)


def test_force_is_half_the_finite_difference_energy_gradient() -> None:
    params = tiny_params()
    o_rows, eps_rows = exact_rows(params)
    force = jnp.real(jnp.conj(o_rows).T @ eps_rows)  # O~^T eps~ = Re(O^H eps)
    flat, unravel = ravel_pytree(params)
    step = 1e-6
    energy_of_flat = jax.vmap(lambda f: exact_energy(unravel(f)))
    shifts = step * jnp.eye(flat.size)
    gradient = (energy_of_flat(flat + shifts) - energy_of_flat(flat - shifts)) / (2 * step)
    np.testing.assert_allclose(2 * force, gradient, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize(("method", "spring_mu"), [("minsr", 0.0), ("sr", 0.0), ("minsr", 0.5)])
def test_natural_gradient_lowers_the_exact_energy(method: str, spring_mu: float) -> None:
    optimizer = NaturalGradient(
        learning_rate=0.05, diag_shift=1e-3, spring_mu=spring_mu, method=method
    )
    params = tiny_params()
    state = optimizer.init(params)
    energies = [float(exact_energy(params))]
    for _ in range(25):
        o_rows, eps_rows = exact_rows(params)
        updates, state, info = optimizer.update(o_rows, eps_rows, state, params, SERIAL)
        params = optax.apply_updates(params, updates)
        energies.append(float(exact_energy(params)))
    ground = float(jnp.linalg.eigvalsh(HAMILTONIAN)[0])
    assert np.all(np.diff(energies) < 0)
    assert energies[-1] - ground < 0.01 * (energies[0] - ground)
    assert int(state.step) == 25
    assert int(info["method"]) == minsr.METHOD_CODES[method]


def test_schedules_set_rate_and_shift_per_step() -> None:
    rate = optax.exponential_decay(0.1, transition_steps=1, decay_rate=0.5)
    shift = optax.linear_schedule(1e-2, 1e-3, transition_steps=4)
    optimizer = NaturalGradient(learning_rate=rate, diag_shift=shift)
    params = tiny_params()
    o_rows, eps_rows = exact_rows(params)
    state = optimizer.init(params)
    for step in range(3):
        updates, state, info = optimizer.update(o_rows, eps_rows, state, params, SERIAL)
        # optax evaluates schedules of the int32 step count in float32
        np.testing.assert_allclose(info["learning_rate"], 0.1 * 0.5**step, rtol=1e-7)
        np.testing.assert_allclose(info["diag_shift"], shift(step), rtol=1e-7)
        direction, _ = minsr.solve(o_rows, eps_rows, info["diag_shift"], SERIAL)
        np.testing.assert_allclose(
            ravel_pytree(updates)[0], -info["learning_rate"] * direction, rtol=1e-12, atol=1e-15
        )


@pytest.mark.parametrize("spring_mu", [0.0, 0.9])
def test_norm_cap_shortens_long_steps_only(spring_mu: float) -> None:
    """max_update_norm c: a step longer than c is scaled to length c along the same direction
    (and the momentum stores the step taken); a cap above the step's length changes nothing."""
    params = tiny_params()
    o_rows, eps_rows = exact_rows(params)
    free = NaturalGradient(learning_rate=0.1, diag_shift=1e-3, spring_mu=spring_mu)
    state = free.init(params)
    state = free.update(o_rows, eps_rows, state, params, SERIAL)[1]  # a non-zero momentum
    updates, _, free_info = free.update(o_rows, eps_rows, state, params, SERIAL)
    step = ravel_pytree(updates)[0]
    length = float(jnp.linalg.norm(step))
    assert float(free_info["update_scale"]) == 1.0
    for cap, expected in ((2 * length, step), (0.25 * length, 0.25 * step)):
        capped = NaturalGradient(learning_rate=0.1, diag_shift=1e-3, spring_mu=spring_mu,
                                 max_update_norm=cap)
        updates, capped_state, info = capped.update(o_rows, eps_rows, state, params, SERIAL)
        np.testing.assert_allclose(ravel_pytree(updates)[0], expected, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(float(info["update_scale"]), min(1.0, cap / length), rtol=1e-12)
        np.testing.assert_allclose(capped_state.momentum * 0.1, -ravel_pytree(updates)[0],
                                   rtol=1e-12, atol=1e-15)


def test_update_is_jittable() -> None:
    optimizer = NaturalGradient(learning_rate=0.1, diag_shift=1e-3, spring_mu=0.9)
    params = tiny_params()
    o_rows, eps_rows = exact_rows(params)
    state = optimizer.init(params)
    eager = optimizer.update(o_rows, eps_rows, state, params, SERIAL)
    jitted = jax.jit(lambda o, e, s, p: optimizer.update(o, e, s, p, SERIAL))(
        o_rows, eps_rows, state, params
    )
    np.testing.assert_allclose(ravel_pytree(jitted[0])[0], ravel_pytree(eager[0])[0], rtol=1e-13)


@pytest.mark.parametrize(("n_params", "expected"), [(9, "sr"), (10, "minsr"), (21, "minsr")])
def test_auto_picks_the_smaller_system(n_params: int, expected: str) -> None:
    rng = np.random.default_rng(0)
    o_matrix = rng.normal(size=(5, n_params)) + 1j * rng.normal(size=(5, n_params))
    _, info = minsr.solve(jnp.asarray(o_matrix), jnp.ones(5, complex), 1e-3, SERIAL)
    assert int(info["method"]) == minsr.METHOD_CODES[expected]  # 10 stacked rows


def test_bad_input_is_reported() -> None:
    with pytest.raises(ValueError, match="unknown solver method"):
        minsr.solve(jnp.ones((3, 4)), jnp.ones(3), 0.1, SERIAL, method="cg")
    with pytest.raises(ValueError, match="rows"):
        minsr.solve(jnp.ones((3, 4)), jnp.ones(2), 0.1, SERIAL)


def test_nan_cholesky_factor_falls_back_to_the_eigendecomposition() -> None:
    # An indefinite matrix with a small claimed trace passes the certification, its Cholesky
    # factor is NaN, and the fallback rebuilds it and drops the negative eigenvalue.
    matrix = jnp.diag(jnp.array([1.0, 2.0, -0.5]))
    rhs = jnp.array([1.0, 1.0, 1.0])
    x, info = minsr._solve_regularised(
        lambda: matrix, jnp.asarray(3.5), rhs, jnp.asarray(0.1), jnp.ones(3, bool), 1e-12
    )
    assert bool(info["fallback"])
    np.testing.assert_allclose(x, [1 / 1.1, 1 / 2.1, 0.0], rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(info["condition"], 2.1 / 1.1, rtol=1e-14)
