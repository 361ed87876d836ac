r"""Laplacian and gradient of a (complex) scalar function of real coordinates, three ways.

For f: R^D -> C (log psi of one walker, D = 2N coordinates in 2D) the kinetic local energy needs

    nabla^2 f = sum_d d^2 f / dx_d^2   and   nabla f = (df/dx_1, ..., df/dx_D).

Methods (``METHODS``, selected by ``[system] laplacian``):

``forward`` -- the forward Laplacian (Li et al., Nat. Mach. Intell. 6, 209 (2024)) through
``folx``, the field's standard implementation: every intermediate y is carried as the triple
(y, nabla y, nabla^2 y) and each operation y -> g(y) maps it in one pass,

    nabla g = g'(y) nabla y,   nabla^2 g = g'(y) nabla^2 y + sum_d g''(y)[d_d y, d_d y],

so the primal is computed once, the D gradient components once each, and the Laplacian once
(D + 2 streams, against 4 for each of the D directions of ``loop``). The LU log-determinant of
``hpcvmc.logdet.log_det`` (a loop, which folx cannot trace) gets its own rule
(:func:`_log_det_rule`): with B_d = A^{-1} d_d A,

    d_d log det A = tr B_d,   nabla^2 log det A = tr(A^{-1} nabla^2 A) - sum_d tr(B_d B_d).

``loop`` -- one nested forward-mode pass per unit direction e_d: the inner ``jax.jvp`` gives
g_d(x) = df/dx . e_d, the outer ``jax.jvp`` of g_d along e_d gives (g_d, d^2 f/dx_d^2). The D
directions are batched with ``jax.vmap``. No full Hessian is formed.

``hessian`` -- the trace of ``jax.hessian`` (forward over reverse, the full D x D matrix) of the
real and imaginary parts: the brute-force reference.

All three are jittable, act on one walker (the caller vmaps and chunks walkers, see
``hpcvmc.chunking.map_in_chunks``) and agree to rounding.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from hpcvmc.logdet import log_det

ScalarFn = Callable[[jax.Array], jax.Array]
"""f(x) -> scalar (real or complex) for x of any fixed shape."""

LaplacianFn = Callable[[ScalarFn, jax.Array], tuple[jax.Array, jax.Array]]
"""(f, x) -> (nabla^2 f(x), nabla f(x)), the signature of every method."""


def laplacian_and_gradient(f: ScalarFn, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Laplacian sum_d d^2 f/dx_d^2 and gradient df/dx of f at x (``loop``: nested jvp).

    Args:
        f: scalar function of x (real or complex valued), e.g. ``x -> log psi(x)`` for one walker.
        x: real coordinates, any shape (for electrons (N, 2), in the units of f's argument).

    Returns:
        (laplacian, gradient): the Laplacian, a scalar of f's dtype (real or complex), and the
        gradient with the shape of x (complex when f is complex), in units of f / x^2 and f / x.
    """
    shape = x.shape
    flat = x.reshape(-1)

    def f_flat(v: jax.Array) -> jax.Array:
        return f(v.reshape(shape))

    def along(direction: jax.Array) -> tuple[jax.Array, jax.Array]:
        def first(v: jax.Array) -> jax.Array:
            return jax.jvp(f_flat, (v,), (direction,))[1]

        return jax.jvp(first, (flat,), (direction,))

    directions = jnp.eye(flat.size, dtype=flat.dtype)
    first_derivatives, second_derivatives = jax.vmap(along)(directions)
    return jnp.sum(second_derivatives), first_derivatives.reshape(shape)


def hessian_laplacian_and_gradient(f: ScalarFn, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Laplacian and gradient from the full Hessian (``hessian``): tr H(Re f) + i tr H(Im f).

    Args:
        f: scalar function of x (real or complex valued).
        x: real coordinates, any shape.

    Returns:
        (laplacian, gradient) as :func:`laplacian_and_gradient`; the Laplacian is complex.
    """
    shape = x.shape

    def part(fn: Callable[[jax.Array], jax.Array]) -> Callable[[jax.Array], jax.Array]:
        return lambda v: fn(f(v.reshape(shape)))

    flat = x.reshape(-1)
    laplacian = [jnp.trace(jax.hessian(part(p))(flat)) for p in (jnp.real, jnp.imag)]
    gradient = [jax.grad(part(p))(flat).reshape(shape) for p in (jnp.real, jnp.imag)]
    return laplacian[0] + 1j * laplacian[1], gradient[0] + 1j * gradient[1]


def _log_det_rule(args: tuple[Any, ...], kwargs: dict[str, Any], sparsity_threshold: int) -> Any:
    """folx rule for ``log_det`` (module docstring): (A, nabla A, nabla^2 A) -> log det triple.

    A^{-T} is the holomorphic derivative d log det A / dA, taken by reverse mode through the LU
    (no LAPACK call). Dense in the D coordinates.
    """
    from folx.api import FwdJacobian, FwdLaplArray

    (a,) = args
    if not isinstance(a, FwdLaplArray):
        return log_det(a)
    matrix = a.x.astype(jnp.result_type(a.x.dtype, jnp.complex64))  # holomorphic derivative
    value, pullback = jax.vjp(log_det, matrix)
    (inverse_t,) = pullback(jnp.ones_like(value))  # A^{-T}, shape (..., n, n)
    jac = a.jacobian.dense_array  # (D, ..., n, n)
    gradient = jnp.einsum("...ij,d...ij->d...", inverse_t, jac)
    b = jnp.einsum("...ji,d...jk->d...ik", inverse_t, jac)  # B_d = A^{-1} d_d A
    laplacian = (jnp.einsum("...ij,...ij->...", inverse_t, a.laplacian)
                 - jnp.einsum("d...ij,d...ji->...", b, b))
    return FwdLaplArray(value, FwdJacobian(gradient, None), laplacian)


def forward_laplacian_and_gradient(f: ScalarFn, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Laplacian and gradient by the forward Laplacian of folx (``forward``), dense Jacobians.

    Args:
        f: scalar function of x (real or complex valued); may call
            ``hpcvmc.logdet.log_det`` (handled by :func:`_log_det_rule`).
        x: real coordinates, any shape.

    Returns:
        (laplacian, gradient) as :func:`laplacian_and_gradient`.
    """
    import folx

    folx.register_function(log_det.__name__, _log_det_rule)
    out = folx.forward_laplacian(f, sparsity_threshold=0)(x)
    return out.laplacian, out.jacobian.dense_array.reshape(x.shape)


METHODS: dict[str, LaplacianFn] = {
    "forward": forward_laplacian_and_gradient,
    "loop": laplacian_and_gradient,
    "hessian": hessian_laplacian_and_gradient,
}
"""Laplacian methods by their ``[system] laplacian`` name."""
