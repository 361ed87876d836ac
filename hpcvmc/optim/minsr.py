"""Distributed minSR and SR solvers for the natural-gradient step (no physics inside).

Every rank holds its own rows of the centred, scaled log-derivative matrix O (``n_local x P``)
and of the centred, scaled local energies eps (``n_local``); see :mod:`hpcvmc.optim.jacobian`.
For real parameters and a complex log psi the real and imaginary parts are stacked as rows,

    O~ = [Re O; Im O],    eps~ = [Re eps; Im eps],

so that ``O~^T O~ = Re(O^H O)`` and ``O~^T eps~ = Re(O^H eps)`` (docs/physics.md section 3). The
update, replicated and identical on every rank, is

    minSR:  delta = O~^T (O~ O~^T + lambda I)^(-1) eps~          (kernel space, N x N)
    SR:     delta = (O~^T O~ + lambda I)^(-1) O~^T eps~          (parameter space, P x P)

which are equal by the push-through identity. minSR is the cheap one when P exceeds the number
N of stacked rows (2 N_s for complex O), SR when P < N.

Distribution of minSR (docs/design.md, "Distributed minSR"). The kernel T = O~ O~^T is built without
any rank holding more than its own rows plus one column chunk of all rows: the columns of O are
cut into chunks of ``R * column_chunk``; inside a chunk, column block d goes to rank d through an
``alltoall``, after which rank r holds all N_s rows of its ``column_chunk`` columns and adds their
Gram matrix to its partial kernel. Over all chunks rank r has seen every row of a P/R column block
(block-cyclic rather than contiguous, which changes nothing), and ``T = sum_r T_r`` is one
allreduce. Every rank then solves the same N x N system. The last step differs from docs/design.md
purpose: instead of keeping the column block to form its slice ``O_block^T x`` and allgathering
the slices, rank r forms ``O~_r^T x_r`` from the rows it already holds and an allreduce sums the
P-vectors. The result is the same (``O~^T x = sum_r O~_r^T x_r``), the communication is one
P-vector either way, and the column block never has to be stored. Memory per rank: the input
rows ``N_s P / R`` plus XLA's workspace of 3 N x N buffers (kernel accumulator and product,
allreduce output, Cholesky factor; 3.0 N^2 numbers in ``memory_analysis`` for N = 2048 and 8192
on 2 ranks), which also hold the column chunks (``~3 N column_chunk`` numbers). Work per rank:
``(1 + 1/k) N^2 P / R`` flops for the kernel (only the lower block triangle of each
chunk's Gram matrix is formed, k row blocks, see :func:`_lower_block_products`; a plain
product would take ``2 N^2 P / R``), ``N^3 / 3`` for Cholesky, ``2 N P / R`` for the product.

The small system is solved by Cholesky when the shift guarantees that it is well conditioned;
otherwise (lambda = 0 or tiny, or a NaN factor) by an eigendecomposition with a relative
eigenvalue cutoff ``rcond``, i.e. with the pseudo-inverse. Both paths are traced and
``lax.cond`` picks one at run time, so the solve stays one jitted computation.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.linalg import cho_solve

from hpcvmc.parallel import Comm

Method = Literal["auto", "minsr", "sr"]
Info = dict[str, jax.Array]

METHOD_CODES = {"minsr": 0, "sr": 1}
"""Value of ``info["method"]`` for each path."""

_COMPILED: dict[tuple, tuple[Comm, Callable]] = {}
# Jitted solvers per (communicator, static settings). The Comm is kept in the value so that its
# id, used in the key because an MPI communicator is not hashable, cannot be reused.


def solve(
    O_local: jax.Array,
    eps_local: jax.Array,
    diag_shift: float | jax.Array,
    comm: Comm,
    *,
    method: Method = "auto",
    rcond: float = 1e-12,
    column_chunk: int = 1024,
    n_rows_max: int | None = None,
) -> tuple[jax.Array, Info]:
    """Natural-gradient step ``delta = O~^T (O~ O~^T + lambda I)^(-1) eps~`` over all ranks.

    Ranks may hold different numbers of rows (even none); the kernel is then padded (see
    :func:`_regularised`). Jitted internally; it may also be called inside ``jax.jit``, given
    ``n_rows_max`` on several ranks.

    Args:
        O_local: this rank's rows of O, shape (n_local, P), real or complex, centred with the
            global mean and scaled (by 1/sqrt(N_s) or sqrt(p_s)).
        eps_local: this rank's rows of eps, shape (n_local,), centred and scaled the same way.
            For real O only Re(eps) enters (Im(eps) has no column to act on); for complex O a
            real eps is read as having zero imaginary part.
        diag_shift: lambda >= 0, added to the diagonal of the kernel (minSR) or of S (SR).
        comm: the communicator; every rank must call with the same settings.
        method: "minsr" (kernel space), "sr" (parameter space) or "auto": "sr" when P is
            smaller than the number of stacked kernel rows N, else "minsr".
        rcond: eigenvalues at or below ``rcond * max eigenvalue`` are dropped on the
            eigendecomposition path, which is taken unless ``lambda`` certifies a condition
            number below 1/rcond, i.e. ``lambda > rcond (||O~||_F^2 + lambda)`` (see
            :func:`_solve_regularised`).
        column_chunk: columns per rank per alltoall round (minSR); the chunk buffers hold
            about ``3 * N * column_chunk`` numbers.
        n_rows_max: the largest n_local over ranks (n_local itself for evenly sharded
            walkers). Required inside ``jax.jit`` on several ranks; None finds it with an eager
            ``comm.max``.

    Returns:
        ``(delta, info)``: delta of shape (P,), real, identical on every rank; info, a dict of
        scalars: ``method`` (0 minSR, 1 SR), ``fallback`` (True when the eigendecomposition
        path was used), ``condition`` (a condition-number estimate of the regularised small
        matrix; see :func:`_solve_regularised`), ``residual`` (``||K x - b|| / ||b||`` of the
        small system K x = b) and ``update_norm`` (``||delta||``).

    Raises:
        ValueError: on inconsistent shapes, an unknown method, n_rows_max below n_local, or
            a missing n_rows_max inside a jax transformation on several ranks.
    """
    n_local, n_params = _check_shapes(O_local, eps_local)
    rows_max = _max_rows(n_local, O_local, comm) if n_rows_max is None else n_rows_max
    if n_local > rows_max:
        raise ValueError(f"n_rows_max = {rows_max} is below this rank's {n_local} rows")
    n_kernel = _stacked_rows(O_local.dtype) * comm.size * rows_max
    chosen = _choose_method(method, n_params, n_kernel)
    if chosen == "minsr":
        solver = _compiled(
            comm, _solve_minsr, rows_max=rows_max, rcond=rcond, column_chunk=column_chunk
        )
    else:
        solver = _compiled(comm, _solve_sr, rcond=rcond)
    eps_local = _match_eps(eps_local, O_local.dtype)
    return solver(O_local, eps_local, jnp.asarray(diag_shift, O_local.real.dtype))


def kernel_matrix(
    O_local: jax.Array, comm: Comm, *, rows_max: int, column_chunk: int = 1024
) -> jax.Array:
    """The kernel ``T = O~ O~^T`` (N x N, identical on every rank), rows padded per rank.

    Row order of T: for rank s = 0..R-1 its ``rows_max`` rows (its n_local rows, then zero
    rows), first the real parts of all ranks, then (complex O only) the imaginary parts; N is
    ``R * rows_max`` for real O and twice that for complex O. Jittable.

    Args:
        O_local: this rank's rows, shape (n_local, P), n_local <= rows_max.
        comm: the communicator.
        rows_max: the largest n_local over ranks (the same on every rank).
        column_chunk: columns per rank per alltoall round.

    Returns:
        T of shape (N, N), real, ``T = sum_r sum_chunks B B^T`` with B the (N, column_chunk)
        rows of one column chunk; only the lower block triangle is computed and allreduced,
        the upper one is its transpose (T is exactly symmetric).
    """
    n_kernel = _stacked_rows(O_local.dtype) * comm.size * rows_max
    n_blocks = _gram_row_blocks(n_kernel)

    def gram(columns: jax.Array) -> jax.Array:
        return _lower_block_products(_column_block(columns, comm, rows_max), n_blocks)

    side = n_kernel // n_blocks
    zero = jnp.zeros((n_blocks * (n_blocks + 1) // 2, side, side), O_local.real.dtype)
    lower = _fold_column_chunks(O_local, comm.size * column_chunk, comm.size, gram, zero)
    return _assemble_symmetric(comm.sum(lower), n_blocks)


GRAM_BLOCK_MIN = 256
"""Smallest row block of the symmetric kernel build (smaller ones make slow products)."""


def _gram_row_blocks(n_kernel: int) -> int:
    """Row blocks k of the kernel build: at most 8, blocks of >= GRAM_BLOCK_MIN rows, k | N."""
    for k in (8, 4, 2):
        if n_kernel % k == 0 and n_kernel // k >= GRAM_BLOCK_MIN:
            return k
    return 1


def _lower_block_products(block: jax.Array, n_blocks: int) -> jax.Array:
    """The lower block triangle of ``block @ block.T``: ``B_a B_b^T`` for b <= a.

    With the rows of ``block`` cut into k blocks B_a, the symmetric Gram matrix needs only
    k (k + 1) / 2 of the k^2 block products (56% of the flops for k = 8).

    Args:
        block: shape (N, w), N divisible by ``n_blocks``.
        n_blocks: k.

    Returns:
        Shape (k (k + 1) / 2, N / k, N / k), the products in row-major lower-triangle order.
    """
    parts = jnp.split(block, n_blocks)
    return jnp.stack([parts[a] @ parts[b].T for a in range(n_blocks) for b in range(a + 1)])


def _assemble_symmetric(lower: jax.Array, n_blocks: int) -> jax.Array:
    """The full symmetric (N, N) matrix from its lower block triangle (see above)."""
    index = {pair: i for i, pair in enumerate(
        (a, b) for a in range(n_blocks) for b in range(a + 1))}
    return jnp.block([
        [lower[index[a, b]] if b <= a else lower[index[b, a]].T for b in range(n_blocks)]
        for a in range(n_blocks)
    ])


def _fold_column_chunks(
    O_local: jax.Array,
    width: int,
    multiple: int,
    term: Callable[[jax.Array], jax.Array],
    zero: jax.Array,
) -> jax.Array:
    """``sum_k term(O_local[:, k-th chunk of width columns])``, one chunk in memory at a time.

    Full chunks go through a ``fori_loop`` (dynamic slices of O_local, no copy of O); the last,
    shorter chunk is zero-padded to a multiple of ``multiple`` columns, so ``term`` must give
    the same result for zero columns as without them.

    Args:
        O_local: shape (n_local, P).
        width: columns per chunk.
        multiple: the padded last chunk's width is a multiple of this.
        term: chunk (n_local, w) -> array shaped like ``zero``.
        zero: the initial value of the sum.

    Returns:
        The sum, shaped like ``zero``.
    """
    n_params = O_local.shape[1]
    n_full = n_params // width
    total = zero
    if n_full:
        total = lax.fori_loop(
            0,
            n_full,
            lambda k, total: total + term(lax.dynamic_slice_in_dim(O_local, k * width, width, 1)),
            total,
        )
    n_rest = n_params - n_full * width
    if n_rest:
        rest_width = -(-n_rest // multiple) * multiple
        rest = jnp.pad(O_local[:, n_full * width :], ((0, 0), (0, rest_width - n_rest)))
        total = total + term(rest)
    return total


# ------------------------------------------------------------------------------------------------
# The two solvers (jitted through _compiled).
# ------------------------------------------------------------------------------------------------
def _solve_minsr(
    O_local: jax.Array,
    eps_local: jax.Array,
    diag_shift: jax.Array,
    *,
    comm: Comm,
    rows_max: int,
    rcond: float,
    column_chunk: int,
) -> tuple[jax.Array, Info]:
    """minSR: ``delta = sum_r O~_r^T x_r`` with ``(T + lambda I) x = eps~`` (padded rows inert)."""
    n_local = O_local.shape[0]
    build = partial(kernel_matrix, O_local, comm, rows_max=rows_max, column_chunk=column_chunk)
    pad = (0, rows_max - n_local)
    eps_all = _stack_real(comm.allgather(jnp.pad(eps_local, pad)).reshape(-1))
    valid_local = jnp.arange(rows_max) < n_local
    valid = comm.allgather(valid_local).reshape(-1)
    valid = jnp.tile(valid, _stacked_rows(O_local.dtype))
    trace = comm.sum(_squared_norm(O_local, column_chunk))
    x, info = _solve_regularised(build, trace, eps_all, diag_shift, valid, rcond)
    delta = comm.sum(_rows_transpose_times(O_local, _own_rows(x, comm, rows_max, n_local)))
    return delta, _finish_info(info, "minsr", delta)


def _solve_sr(
    O_local: jax.Array, eps_local: jax.Array, diag_shift: jax.Array, *, comm: Comm, rcond: float
) -> tuple[jax.Array, Info]:
    """SR: ``(S + lambda I) delta = F``, ``S = sum_r O~_r^T O~_r``, ``F = sum_r O~_r^T eps~_r``."""
    stacked = _stack_real(O_local)
    force, trace = comm.sum((stacked.T @ _stack_real(eps_local), jnp.vdot(stacked, stacked)))
    valid = jnp.ones(force.shape, bool)
    delta, info = _solve_regularised(
        lambda: comm.sum(stacked.T @ stacked), trace, force, diag_shift, valid, rcond
    )
    return delta, _finish_info(info, "sr", delta)


# ------------------------------------------------------------------------------------------------
# The small symmetric system.
# ------------------------------------------------------------------------------------------------
def _regularised(matrix: jax.Array, diag_shift: jax.Array, valid: jax.Array) -> jax.Array:
    """``K = M + diag(d)`` with ``d_i = lambda`` on valid rows and ``d_i = c`` on padded rows.

    Padded rows of M (zero rows of O) are zero rows and columns of M = O~ O~^T, and the caller
    puts 0 in the right-hand side there. Ordering valid rows first (a permutation, which commutes
    with everything below), ``K = diag(M_vv + lambda I, c I)`` and ``b = (b_v, 0)``, so any
    solution has ``x = (x_v, 0)`` with ``x_v`` the solution of the unpadded system, and
    ``O~^T x = O~_v^T x_v``: the padding changes nothing. The same holds for the pseudo-inverse,
    which is block diagonal too (its eigenvalue cutoff is unchanged because
    ``c = max_i K_ii <= lambda_max(K_vv)``), and for a degenerate eigenvalue shared by both
    blocks, whose spectral projector does not depend on the basis eigh returns. Choosing
    ``c = max_i (M_ii + lambda)`` rather than 1 keeps K's scale: the padding moves neither the
    largest eigenvalue (the cutoff's reference) nor the bound ``trace(M) + lambda`` on it.

    Args:
        matrix: M, shape (N, N), symmetric positive semi-definite.
        diag_shift: lambda.
        valid: shape (N,), False on padded rows.

    Returns:
        K, shape (N, N).
    """
    pad_value = jnp.max(jnp.diagonal(matrix)) + diag_shift
    shift = jnp.where(valid, diag_shift, pad_value)
    index = jnp.arange(matrix.shape[0])
    return matrix + jnp.where(index[:, None] == index[None, :], shift[:, None], 0.0)


def _solve_regularised(
    build: Callable[[], jax.Array],
    trace: jax.Array,
    rhs: jax.Array,
    diag_shift: jax.Array,
    valid: jax.Array,
    rcond: float,
) -> tuple[jax.Array, Info]:
    """Solve ``K x = b`` with ``K = M + lambda I`` (padded rows: see :func:`_regularised`).

    The path is chosen before M is built, from ``trace(M) = ||O~||_F^2``. M is positive
    semi-definite, so ``lambda <= eigenvalues(K) <= trace(M) + lambda`` and

        kappa(K) <= (trace(M) + lambda) / lambda.

    When that bound is below 1/rcond no eigenvalue can fall under the cutoff, the
    pseudo-inverse is the inverse, and ``K = L L^T`` (Cholesky) is used. Otherwise (lambda zero
    or tiny, e.g. the always-singular kernel of centred rows with lambda = 0)
    ``K = V diag(w) V^T`` and ``x = V diag(1/w_i if w_i > rcond * w_max else 0) V^T b``, the
    minimum-norm least-squares solution with that cutoff. If the Cholesky factor is NaN anyway
    (rounding near the cutoff, or non-finite input), M is built again and solved by the
    eigendecomposition. The Cholesky pivots alone cannot choose the path: a numerically
    singular K can factor with small positive pivots whose ratio is far below its condition
    number, and give a meaningless x.

    The bound needs no N x N matrix to decide, but it is loose by up to a factor N
    (``lambda_max <= trace <= N lambda_max``): with rcond = 1e-12, Cholesky is used when
    ``lambda > 1e-12 (||O~||_F^2 + lambda)``, where ``||O~||_F^2`` is the sum of the
    parameters' variances for inputs scaled by 1/sqrt(N_s).

    Memory: each path builds M itself, inside its branch, so LAPACK can factor K in place (an
    operand of a ``lax.cond`` branch would be copied first) and nothing keeps K alive for a
    fallback; the residual is evaluated through the factor (``L L^T x`` or ``V w V^T x``). On
    the Cholesky path the solve adds no N x N buffer to those of ``build``. LAPACK reads one
    triangle, so K is not symmetrised.

    Args:
        build: returns M, shape (N, N), symmetric positive semi-definite (called once, or
            twice when the Cholesky factor is NaN).
        trace: trace(M).
        rhs: b, shape (N,), zero on padded rows.
        diag_shift: lambda >= 0.
        valid: shape (N,), False on padded rows.
        rcond: relative cutoff.

    Returns:
        ``(x, info)`` with x of shape (N,) and info holding ``fallback`` (eigendecomposition
        used), ``condition`` and ``residual`` ``||K x - b|| / ||b||`` with K as factored (it
        measures the solve and, on the eigen path, what the cutoff dropped). ``condition`` is,
        on the Cholesky path, the pivot ratio ``max L_ii^2 / min L_ii^2`` over valid rows, a
        lower bound on kappa(K) (every pivot lies in [lambda_min, lambda_max]); on the eigen
        path, ``w_max / w_min`` over the kept eigenvalues of the valid block, the condition
        number of what was inverted.
    """

    def by_eigh() -> tuple[jax.Array, ...]:
        kernel = _regularised(build(), diag_shift, valid)
        return (*_pseudo_inverse_solve(kernel, rhs, valid, rcond), jnp.asarray(True))

    def by_cholesky() -> tuple[jax.Array, ...]:
        kernel = _regularised(build(), diag_shift, valid)
        x, condition, residual = _cholesky_solve(kernel, rhs, valid)
        solved = (x, condition, residual, jnp.asarray(False))
        return lax.cond(jnp.isfinite(condition), lambda: solved, by_eigh)

    certified = trace + diag_shift < diag_shift / rcond
    x, condition, residual, fallback = lax.cond(certified, by_cholesky, by_eigh)
    return x, {"fallback": fallback, "condition": condition, "residual": residual}


def _cholesky_solve(
    kernel: jax.Array, rhs: jax.Array, valid: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``x = L^-T L^-1 b`` with ``K = L L^T``; also the pivot ratio and the residual.

    A failed factorization is NaN throughout, and so is then the pivot ratio.
    """
    factor = lax.linalg.cholesky(kernel, symmetrize_input=False)
    pivots = jnp.diagonal(factor) ** 2
    x = cho_solve((factor, True), rhs)
    condition = jnp.max(jnp.where(valid, pivots, 0.0)) / jnp.min(jnp.where(valid, pivots, jnp.inf))
    return x, condition, _relative_residual(factor @ (x @ factor), rhs)


def _pseudo_inverse_solve(
    kernel: jax.Array, rhs: jax.Array, valid: jax.Array, rcond: float
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``x = K^+ b`` with eigenvalues ``w <= rcond * w_max`` dropped; also condition, residual.

    Eigenvectors living on padded rows (weight on valid rows below 1/2) are left out of the
    condition estimate ``w_max / w_min_kept``: their eigenvalue is the padding constant.
    """
    vectors, eigenvalues = lax.linalg.eigh(kernel, symmetrize_input=False)
    largest = eigenvalues[-1]
    kept = eigenvalues > rcond * largest
    inverse = jnp.where(kept, 1.0 / jnp.where(kept, eigenvalues, 1.0), 0.0)
    coefficients = inverse * (vectors.T @ rhs)  # V^T x
    x = vectors @ coefficients
    on_valid = jnp.sum(valid[:, None] * vectors * vectors, axis=0) > 0.5
    smallest = jnp.min(jnp.where(kept & on_valid, eigenvalues, jnp.inf))
    residual = _relative_residual(vectors @ (eigenvalues * coefficients), rhs)
    return x, largest / smallest, residual


def _relative_residual(product: jax.Array, rhs: jax.Array) -> jax.Array:
    """``||K x - b|| / ||b||`` from ``K x`` (0 / 0 is reported as 0)."""
    scale = jnp.maximum(jnp.linalg.norm(rhs), jnp.finfo(rhs.dtype).tiny)
    return jnp.linalg.norm(product - rhs) / scale


# ------------------------------------------------------------------------------------------------
# Helpers.
# ------------------------------------------------------------------------------------------------
def _column_block(columns: jax.Array, comm: Comm, rows_max: int) -> jax.Array:
    """All ranks' rows of this rank's share of a column chunk, stacked real.

    Args:
        columns: this rank's rows of the chunk, shape (n_local, R * w); columns
            ``[d w, (d + 1) w)`` belong to rank d.
        comm: the communicator.
        rows_max: rows per rank after zero padding.

    Returns:
        shape (N, w): rank-major rows of the w columns owned by this rank (real parts, then
        imaginary parts for complex O).
    """
    n_local, width = columns.shape
    block_width = width // comm.size
    columns = jnp.pad(columns, ((0, rows_max - n_local), (0, 0)))
    send = columns.reshape(rows_max, comm.size, block_width).transpose(1, 0, 2)
    received = comm.alltoall(send)  # received[s] = rank s's rows of my columns
    return _stack_real(received.reshape(comm.size * rows_max, block_width))


def _own_rows(x: jax.Array, comm: Comm, rows_max: int, n_local: int) -> jax.Array:
    """This rank's entries of the stacked kernel vector x as one (complex) vector (n_local,)."""
    parts = x.reshape(-1, comm.size, rows_max)[:, comm.rank, :n_local]
    return parts[0] if parts.shape[0] == 1 else lax.complex(parts[0], parts[1])


def _rows_transpose_times(O_local: jax.Array, z: jax.Array) -> jax.Array:
    """``O~_r^T x_r = Re(O_r^T conj(z))`` for ``z = x_re + i x_im``, shape (P,).

    ``Re(conj(z) O) = x_re Re(O) + x_im Im(O)``; conjugating the short vector instead of O
    keeps the big matrix untouched.
    """
    return jnp.real(jnp.conj(z) @ O_local)


def _squared_norm(O_local: jax.Array, column_chunk: int) -> jax.Array:
    """``||O~_r||_F^2 = sum |O_r|^2``, this rank's share of trace(O~ O~^T), chunk by chunk.

    XLA on CPU materializes the elementwise input of a reduction over a complex array (here
    Re and Im of all of O); chunking bounds that to one column chunk.
    """

    def term(columns: jax.Array) -> jax.Array:
        return jnp.sum(jnp.real(columns) ** 2 + jnp.imag(columns) ** 2)

    return _fold_column_chunks(O_local, column_chunk, 1, term, jnp.zeros((), O_local.real.dtype))


def _stack_real(a: jax.Array) -> jax.Array:
    """``[Re a; Im a]`` along axis 0 for complex a; a itself for real a."""
    if jnp.iscomplexobj(a):
        return jnp.concatenate([a.real, a.imag], axis=0)
    return a


def _stacked_rows(dtype: jnp.dtype) -> int:
    """Kernel rows per sample: 2 for complex O (real and imaginary part), 1 for real O."""
    return 2 if jnp.issubdtype(dtype, jnp.complexfloating) else 1


def _match_eps(eps_local: jax.Array, dtype: jnp.dtype) -> jax.Array:
    """eps in O's dtype: Re(eps) for real O, eps + 0i for complex O."""
    eps_local = jnp.asarray(eps_local)
    if not jnp.issubdtype(dtype, jnp.complexfloating):
        eps_local = jnp.real(eps_local)
    return eps_local.astype(dtype)


def _choose_method(method: Method, n_params: int, n_kernel: int) -> str:
    """Resolve "auto": SR when P < N (the P x P system is the smaller), else minSR."""
    if method == "auto":
        return "sr" if n_params < n_kernel else "minsr"
    if method not in METHOD_CODES:
        raise ValueError(f"unknown solver method {method!r}; use 'auto', 'minsr' or 'sr'")
    return method


def _finish_info(info: Info, method: str, delta: jax.Array) -> Info:
    """Add the method code and ``||delta||`` to the small-system info."""
    return {
        "method": jnp.asarray(METHOD_CODES[method], jnp.int32),
        **info,
        "update_norm": jnp.linalg.norm(delta),
    }


def _check_shapes(O_local: jax.Array, eps_local: jax.Array) -> tuple[int, int]:
    """Return (n_local, P) after checking that O is a matrix and eps a matching vector."""
    if np.ndim(O_local) != 2 or np.ndim(eps_local) != 1:
        raise ValueError(
            f"solve expects O_local of shape (n_local, P) and eps_local of shape (n_local,), "
            f"got {np.shape(O_local)} and {np.shape(eps_local)}"
        )
    if O_local.shape[0] != eps_local.shape[0]:
        raise ValueError(
            f"O_local has {O_local.shape[0]} rows but eps_local has {eps_local.shape[0]}"
        )
    return O_local.shape


def _max_rows(n_local: int, O_local: jax.Array, comm: Comm) -> int:
    """The largest n_local over ranks, by an eager collective (not possible under a trace)."""
    if comm.size == 1:
        return n_local
    if isinstance(O_local, jax.core.Tracer):
        raise ValueError(
            "solve was called inside a jax transformation on several ranks without "
            "n_rows_max: pass n_rows_max (the largest n_local over ranks)"
        )
    return int(comm.max(jnp.asarray(n_local)))


def _compiled(comm: Comm, solver: Callable, **static: int | float) -> Callable:
    """``jax.jit`` of ``solver`` with ``comm`` and the static settings bound, cached."""
    key = (id(comm), solver.__name__, tuple(sorted(static.items())))
    if key not in _COMPILED:
        _COMPILED[key] = (comm, jax.jit(partial(solver, comm=comm, **static)))
    return _COMPILED[key][1]
