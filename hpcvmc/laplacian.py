"""Forward-mode Laplacian and gradient of a (complex) scalar function of real coordinates.

For f: R^D -> C (log psi of one walker, D = 2N coordinates in 2D) the kinetic local energy needs

    nabla^2 f = sum_d d^2 f / dx_d^2   and   nabla f = (df/dx_1, ..., df/dx_D).

Both come from one nested forward-mode pass per unit direction e_d: the inner ``jax.jvp`` gives
the directional derivative g_d(x) = df/dx . e_d, the outer ``jax.jvp`` of g_d along the same e_d
gives (g_d(x), d^2 f/dx_d^2). The D directions are batched with ``jax.vmap`` (the primal is
evaluated once, the tangents are batched), so the cost is that of about D second-order
forward passes and the memory is D times the tangent activations of one walker: bound it by
chunking walkers (see ``hpcvmc.systems.lattice.map_in_chunks``). No full Hessian is formed.
Complex outputs need no special treatment in forward mode (the tangents are complex).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

ScalarFn = Callable[[jax.Array], jax.Array]
"""f(x) -> scalar (real or complex) for x of any fixed shape."""


def laplacian_and_gradient(f: ScalarFn, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Laplacian sum_d d^2 f/dx_d^2 and gradient df/dx of f at x (forward mode, jittable).

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
