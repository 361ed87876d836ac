"""The distributed minSR / SR solver against dense float64 numpy on the full matrix.

Runs under plain ``pytest`` (one rank) and under
``mpirun -n R python -m pytest --with-mpi tests/mpi/test_minsr_mpi.py``: every rank builds the
same global O and eps from a fixed seed and keeps its own rows, so the expected values are the
same for every R. Row splits include N_s not divisible by R and (for R >= 3) a rank without rows.
"""

from __future__ import annotations

import jax
from jax.flatten_util import ravel_pytree
import jax.numpy as jnp
import numpy as np
import pytest

from hpcvmc.optim import minsr
from hpcvmc.optim.jacobian import centred_scaled
from hpcvmc.optim.natural_gradient import NaturalGradient
from hpcvmc.parallel import Comm

RTOL = 1e-10
RAGGED_ROWS = (5, 11, 0, 7)  # rows of rank r: RAGGED_ROWS[r % 4]


def split_counts(n_total: int, size: int) -> list[int]:
    """np.array_split's row counts: the first n_total % size ranks get one row more."""
    return [len(part) for part in np.array_split(np.arange(n_total), size)]


def ragged_counts(size: int) -> list[int]:
    """Deliberately unequal row counts, with an empty rank from R = 3 on."""
    return [RAGGED_ROWS[r % 4] for r in range(size)]


def global_problem(
    counts: list[int], n_params: int, is_complex: bool, seed: int = 7
) -> tuple[np.ndarray, np.ndarray]:
    """The same (N_s, P) matrix O and (N_s,) vector eps on every rank."""
    rng = np.random.default_rng(seed)
    shape = (sum(counts), n_params)
    o_matrix = rng.normal(size=shape)
    eps = rng.normal(size=shape[0])
    if is_complex:
        o_matrix = o_matrix + 1j * rng.normal(size=shape)
        eps = eps + 1j * rng.normal(size=shape[0])
    return o_matrix, eps


def own_rows(array: np.ndarray, counts: list[int], comm: Comm) -> jax.Array:
    """This rank's rows of a globally replicated array."""
    start = sum(counts[: comm.rank])
    return jnp.asarray(array[start : start + counts[comm.rank]])


def stacked(array: np.ndarray) -> np.ndarray:
    """[Re A; Im A] for complex A, A itself for real A (docs/physics.md section 3)."""
    return np.concatenate([array.real, array.imag]) if np.iscomplexobj(array) else array


def dense_minsr(o_matrix: np.ndarray, eps: np.ndarray, shift: float) -> np.ndarray:
    """O~^T (O~ O~^T + lambda I)^(-1) eps~ in float64 numpy."""
    o_t, e_t = stacked(o_matrix), stacked(eps)
    return o_t.T @ np.linalg.solve(o_t @ o_t.T + shift * np.eye(len(e_t)), e_t)


def dense_sr(o_matrix: np.ndarray, eps: np.ndarray, shift: float) -> np.ndarray:
    """(O~^T O~ + lambda I)^(-1) O~^T eps~ in float64 numpy."""
    o_t, e_t = stacked(o_matrix), stacked(eps)
    return np.linalg.solve(o_t.T @ o_t + shift * np.eye(o_t.shape[1]), o_t.T @ e_t)


def assert_replicated(value: jax.Array, comm: Comm) -> None:
    """The array is bitwise identical on every rank."""
    gathered = np.asarray(comm.allgather(value))
    for other in gathered:
        np.testing.assert_array_equal(other, gathered[0])


def relative_error(actual: jax.Array, expected: np.ndarray) -> float:
    """max |actual - expected| / max |expected|."""
    return float(np.max(np.abs(np.asarray(actual) - expected)) / np.max(np.abs(expected)))


@pytest.mark.parametrize("is_complex", [False, True], ids=["real", "complex"])
@pytest.mark.parametrize("layout", ["split", "ragged"])
@pytest.mark.parametrize(
    ("method", "n_params", "column_chunk"),
    [("minsr", 37, 3), ("auto", 90, 1024), ("sr", 9, 1024)],
)
def test_solve_matches_dense(
    comm: Comm, is_complex: bool, layout: str, method: str, n_params: int, column_chunk: int
) -> None:
    counts = split_counts(23, comm.size) if layout == "split" else ragged_counts(comm.size)
    o_matrix, eps = global_problem(counts, n_params, is_complex)
    shift = 1e-2
    delta, info = minsr.solve(
        own_rows(o_matrix, counts, comm),
        own_rows(eps, counts, comm),
        shift,
        comm,
        method=method,
        column_chunk=column_chunk,
    )
    n_rows = len(stacked(eps))
    expected_method = method if method != "auto" else ("sr" if n_params < n_rows else "minsr")
    assert int(info["method"]) == minsr.METHOD_CODES[expected_method]
    assert not bool(info["fallback"])
    assert float(info["residual"]) < 1e-12
    assert relative_error(delta, dense_minsr(o_matrix, eps, shift)) < RTOL
    assert relative_error(delta, dense_sr(o_matrix, eps, shift)) < RTOL
    np.testing.assert_allclose(float(info["update_norm"]), np.linalg.norm(delta), rtol=1e-14)
    assert_replicated(delta, comm)


@pytest.mark.parametrize("is_complex", [False, True], ids=["real", "complex"])
@pytest.mark.parametrize(("method", "n_params"), [("minsr", 40), ("sr", 12)])
def test_rank_deficient_falls_back_to_minimum_norm(
    comm: Comm, is_complex: bool, method: str, n_params: int
) -> None:
    counts = split_counts(17, comm.size)
    rng = np.random.default_rng(3)
    o_matrix, eps = global_problem(counts, n_params, is_complex)
    o_matrix = o_matrix[:, :3] @ rng.normal(size=(3, n_params))  # rank <= 3 (6 stacked)
    delta, info = minsr.solve(
        own_rows(o_matrix, counts, comm), own_rows(eps, counts, comm), 0.0, comm, method=method
    )
    expected = np.linalg.lstsq(stacked(o_matrix), stacked(eps), rcond=1e-10)[0]
    assert bool(info["fallback"])
    assert relative_error(delta, expected) < RTOL
    assert_replicated(delta, comm)


def test_fallback_reports_finite_condition_for_tiny_shift(comm: Comm) -> None:
    counts = split_counts(12, comm.size)
    o_matrix, eps = global_problem(counts, 30, is_complex=False)
    o_matrix[:, :] = o_matrix[:, :1]  # rank 1: T has one non-zero eigenvalue
    _, info = minsr.solve(
        own_rows(o_matrix, counts, comm), own_rows(eps, counts, comm), 1e-14, comm
    )
    assert bool(info["fallback"])
    assert np.isfinite(float(info["condition"]))


def test_inside_jit_with_row_bound(comm: Comm) -> None:
    counts = split_counts(10, comm.size)
    o_matrix, eps = global_problem(counts, 25, is_complex=True)
    rows_max = max(counts)

    @jax.jit
    def step(o_local: jax.Array, eps_local: jax.Array) -> jax.Array:
        return minsr.solve(o_local, eps_local, 1e-3, comm, n_rows_max=rows_max)[0]

    delta = step(own_rows(o_matrix, counts, comm), own_rows(eps, counts, comm))
    assert relative_error(delta, dense_minsr(o_matrix, eps, 1e-3)) < RTOL


def test_inside_jit_without_row_bound_is_an_error_on_several_ranks(comm: Comm) -> None:
    if comm.size == 1:
        pytest.skip("one rank needs no row bound")
    counts = split_counts(10, comm.size)
    o_matrix, eps = global_problem(counts, 25, is_complex=False)
    solve = jax.jit(lambda o, e: minsr.solve(o, e, 1e-3, comm)[0])
    with pytest.raises(ValueError, match="n_rows_max"):
        solve(own_rows(o_matrix, counts, comm), own_rows(eps, counts, comm))


@pytest.mark.parametrize("weighted", [False, True])
def test_centred_scaled_uses_global_statistics(comm: Comm, weighted: bool) -> None:
    counts = split_counts(13, comm.size)
    o_matrix, eps = global_problem(counts, 6, is_complex=True)
    weights = np.random.default_rng(5).uniform(0.1, 1.0, size=len(eps)) if weighted else None
    o_local, eps_local = centred_scaled(
        own_rows(o_matrix, counts, comm),
        own_rows(eps, counts, comm),
        comm,
        None if weights is None else own_rows(weights, counts, comm),
    )
    p = np.full(len(eps), 1.0 / len(eps)) if weights is None else weights / weights.sum()
    expected_o = np.sqrt(p)[:, None] * (o_matrix - p @ o_matrix)
    expected_eps = np.sqrt(p) * (eps - p @ eps)
    start = sum(counts[: comm.rank])
    rows = slice(start, start + counts[comm.rank])
    np.testing.assert_allclose(o_local, expected_o[rows], rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(eps_local, expected_eps[rows], rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("method", ["minsr", "sr"])
def test_spring_matches_dense_and_reduces_to_minsr(comm: Comm, method: str) -> None:
    counts = split_counts(15, comm.size)
    n_params = 33 if method == "minsr" else 8
    shift, mu, rate = 1e-2, 0.9, 0.1
    params = {"w": jnp.zeros((n_params - 3,)), "b": jnp.zeros((3,))}
    problems = [global_problem(counts, n_params, True, seed) for seed in (11, 12)]
    spring = NaturalGradient(rate, shift, spring_mu=mu, method=method)
    plain = NaturalGradient(rate, shift, spring_mu=0.0, method=method)
    state, plain_state = spring.init(params), plain.init(params)
    previous = np.zeros(n_params)
    for o_matrix, eps in problems:
        rows = (own_rows(o_matrix, counts, comm), own_rows(eps, counts, comm))
        updates, state, _ = spring.update(*rows, state, params, comm)
        plain_updates, plain_state, _ = plain.update(*rows, plain_state, params, comm)
        prior = mu * previous
        expected = prior + dense_minsr(o_matrix, eps - o_matrix @ prior, shift)
        flat_update = ravel_pytree(updates)[0]
        assert relative_error(flat_update, -rate * expected) < RTOL
        plain_flat = ravel_pytree(plain_updates)[0]
        assert relative_error(plain_flat, -rate * dense_minsr(o_matrix, eps, shift)) < RTOL
        previous = expected
    assert int(state.step) == 2
    assert_replicated(state.momentum, comm)


def test_norm_cap_matches_dense_and_is_replicated(comm: Comm) -> None:
    """max_update_norm on R ranks: the dense minSR step scaled to the cap, the same on every rank."""
    counts = split_counts(15, comm.size)
    n_params, shift, rate = 33, 1e-2, 0.1
    params = {"w": jnp.zeros((n_params - 3,)), "b": jnp.zeros((3,))}
    o_matrix, eps = global_problem(counts, n_params, True, 11)
    free_step = -rate * dense_minsr(o_matrix, eps, shift)
    capped = NaturalGradient(rate, shift, max_update_norm=0.3 * np.linalg.norm(free_step))
    rows = (own_rows(o_matrix, counts, comm), own_rows(eps, counts, comm))
    updates, _, info = capped.update(*rows, capped.init(params), params, comm)
    flat_update = ravel_pytree(updates)[0]
    assert relative_error(flat_update, 0.3 * free_step) < RTOL
    assert abs(float(info["update_scale"]) - 0.3) < 1e-10
    assert_replicated(flat_update, comm)
