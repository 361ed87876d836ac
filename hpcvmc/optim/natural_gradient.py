"""The natural-gradient optimizer (minSR / SR with optional SPRING momentum), optax style.

:class:`NaturalGradient` is a pure ``init`` / ``update`` pair: the state (step count and the last
natural-gradient direction phi, a real (P,) array a checkpoint can store) is passed in and
returned, and the returned update is the step to add to the parameters, ``-eta_t phi_t``.

With O and eps the centred, scaled rows of :func:`hpcvmc.optim.jacobian.centred_scaled`
(real and imaginary parts stacked as rows, see :mod:`hpcvmc.optim.minsr`), learning rate eta_t
and diagonal shift lambda_t from their schedules, step t computes

    phi_t = mu phi_{t-1} + O^T (O O^T + lambda_t I)^(-1) (eps - O mu phi_{t-1}),
    theta_{t+1} = theta_t - eta_t phi_t.

For mu = 0 this is minSR. For mu > 0 it is SPRING (Goldshlager, Abrahamsen & Lin, "A Kaczmarz-
inspired approach to accelerate the optimization of neural network wavefunctions",
J. Comput. Phys. (2024) 113351, doi:10.1016/j.jcp.2024.113351, arXiv:2401.10190): phi_t
minimises ``||O phi - eps||^2 + lambda ||phi - mu phi_{t-1}||^2``, the regularised least-squares
step pulled towards the previous direction instead of towards zero; O is this step's Jacobian,
applied to the previous direction. The same formula holds on the SR path
((S + lambda I)^(-1) O^T (eps - O mu phi_{t-1}) + mu phi_{t-1}), by the push-through identity.

Optional norm cap (as the SPRING authors' implementation, vmcnet, offers): with
``max_update_norm`` = c > 0 the applied step is ``-s_t eta_t phi_t`` with
``s_t = min(1, c / ||eta_t phi_t||)``, so no step moves the parameters further than c (Euclidean
norm in parameter space); a rare sample with a huge local energy then cannot throw the state
far. The momentum stores the direction taken, s_t phi_t (vmcnet keeps the uncapped phi_t, which
carries an outlier's step into the next ~1 / (1 - mu) steps).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from hpcvmc.config import InputError, option
from hpcvmc.optim import minsr
from hpcvmc.parallel import Comm
from hpcvmc.registry import Component, register

ScalarOrSchedule = float | Callable[[jax.Array], jax.Array]
"""A constant, or an optax schedule ``step -> value``."""


class NaturalGradientState(NamedTuple):
    """The optimizer state: everything a checkpoint must store to resume exactly."""

    step: jax.Array
    """Number of updates done so far, int32 scalar (the schedules' argument)."""

    momentum: jax.Array
    """s_{t-1} phi_{t-1}, the last natural-gradient direction taken, before the learning rate,
    shape (P,), real (SPRING's momentum; kept for mu = 0 too, so the checkpoint schema does not
    change)."""


@dataclass(frozen=True)
class NaturalGradient:
    """minSR / SR natural gradient with schedules and optional SPRING momentum."""

    learning_rate: ScalarOrSchedule
    """eta_t: a float or an optax schedule of the step count."""

    diag_shift: ScalarOrSchedule
    """lambda_t >= 0, added to the diagonal of the kernel (or of S): a float or a schedule."""

    spring_mu: float = 0.0
    """SPRING momentum mu in [0, 1); 0 gives plain minSR / SR."""

    method: minsr.Method = "auto"
    """"minsr", "sr" or "auto" (see :func:`hpcvmc.optim.minsr.solve`)."""

    max_update_norm: float = 0.0
    """c: the longest parameter step ||eta_t phi_t|| applied; a longer one is scaled down to c
    (0 = no cap)."""

    rcond: float = 1e-12
    """Relative eigenvalue cutoff of the pseudo-inverse fallback."""

    column_chunk: int = 1024
    """Columns per rank per alltoall round of the distributed kernel build."""

    jacobian_chunk: int = 128
    """Samples per chunk of the Jacobian's backward passes (bounds their peak memory)."""

    clip_local_energy: float = 0.0
    """For the update only, E_L clipped to mean +- this many mean absolute deviations (0 = off)."""

    def init(self, params: Any) -> NaturalGradientState:
        """State before the first step: step 0 and phi_{-1} = 0.

        Args:
            params: the parameter pytree (real leaves).

        Returns:
            The initial state; ``momentum`` has shape (P,) and the parameters' dtype.
        """
        flat, _ = ravel_pytree(params)
        return NaturalGradientState(jnp.zeros((), jnp.int32), jnp.zeros_like(flat))

    def update(
        self,
        O_local: jax.Array,
        eps_local: jax.Array,
        state: NaturalGradientState,
        params: Any,
        comm: Comm,
        *,
        n_rows_max: int | None = None,
    ) -> tuple[Any, NaturalGradientState, minsr.Info]:
        """One natural-gradient step: ``updates = -eta_t phi_t`` (see the module docstring).

        Args:
            O_local: this rank's centred, scaled rows of O, shape (n_local, P).
            eps_local: this rank's centred, scaled local energies, shape (n_local,).
            state: the state from :meth:`init` or the previous update.
            params: the current parameters (gives the pytree structure and dtype).
            comm: the communicator.
            n_rows_max: the largest n_local over ranks; required inside ``jax.jit`` on several
                ranks (see :func:`hpcvmc.optim.minsr.solve`).

        Returns:
            ``(updates, new_state, info)``: the pytree to add to params, the next state, and the
            solver's info plus ``learning_rate`` and ``diag_shift`` used at this step and
            ``update_scale`` s_t (1 where the cap did not act).
        """
        flat, unravel = ravel_pytree(params)
        learning_rate = _schedule(self.learning_rate)(state.step)
        diag_shift = _schedule(self.diag_shift)(state.step)
        prior = self.spring_mu * state.momentum
        if self.spring_mu:
            eps_local = eps_local - O_local @ prior.astype(O_local.dtype)
        solution, info = minsr.solve(
            O_local,
            eps_local,
            diag_shift,
            comm,
            method=self.method,
            rcond=self.rcond,
            column_chunk=self.column_chunk,
            n_rows_max=n_rows_max,
        )
        direction = (solution + prior).astype(flat.dtype)
        step = learning_rate * direction
        scale = jnp.ones((), flat.dtype)
        if self.max_update_norm:
            length = jnp.linalg.norm(step)
            scale = jnp.where(length > self.max_update_norm, self.max_update_norm / length, scale)
        updates = unravel(-scale * step)
        info = {**info, "learning_rate": learning_rate, "diag_shift": diag_shift,
                "update_scale": scale}
        return updates, NaturalGradientState(state.step + 1, scale * direction), info


def _schedule(value: ScalarOrSchedule) -> Callable[[jax.Array], jax.Array]:
    """A schedule from a constant or a callable of the step count."""
    return value if callable(value) else optax.constant_schedule(value)


@dataclass(frozen=True, kw_only=True)
class MinSRConfig:
    """Natural gradient (minSR, or SR in parameter space when P < N_s)."""

    type: str = option("minsr", "Optimizer type.")
    learning_rate: float = option(0.01, "Initial learning rate.", positive=True)
    learning_rate_final: float | None = option(
        None, "Learning rate at the last step (decayed as `decay`); unset = constant.",
        positive=True,
    )
    diag_shift: float = option(1e-4, "Initial diagonal shift lambda.", minimum=0.0)
    diag_shift_final: float | None = option(
        None, "Diagonal shift at the last step (decayed as `decay`); unset = constant.",
        minimum=0.0,
    )
    decay: str = option(
        "exponential", "Shape of the decays to the *_final values.",
        choices=("exponential", "cosine", "linear"),
    )
    method: str = option(
        "auto", "Solve in sample space (minsr), parameter space (sr), or auto: sr when P < N_s.",
        choices=("auto", "minsr", "sr"),
    )
    momentum: float = option(0.0, "SPRING momentum mu in [0, 1) (0 = plain minSR).", minimum=0.0)
    max_update_norm: float = option(
        0.0, "Cap on the length of a parameter step, the Euclidean norm of learning rate x "
        "natural gradient in parameter space: a longer step is scaled down to it (0 = no cap); the "
        "history's update_scale shows where it acted.", minimum=0.0
    )
    chunk_size: int = option(
        128, "Samples per Jacobian chunk (bounds the peak memory of the backward passes).",
        positive=True
    )
    clip_local_energy: float = option(
        0.0, "For the update only, clip E_L to mean +- this many mean absolute deviations "
        "(real and imaginary parts; 0 = off). Reported energies are never clipped.", minimum=0.0
    )

    def validate(self, cfg: Any) -> None:
        """SPRING momentum in [0, 1)."""
        if self.momentum >= 1.0:
            raise InputError(f"optimizer.momentum = {self.momentum} must be < 1 (range [0, 1))")


def _schedule_of(initial: float, final: float | None, decay: str, steps: int) -> ScalarOrSchedule:
    """A constant, or a decay from ``initial`` to ``final`` over ``steps`` (optax schedule)."""
    if final is None or steps == 0:
        return initial
    if decay == "exponential":
        return optax.exponential_decay(initial, transition_steps=steps, decay_rate=final / initial)
    if decay == "cosine":
        return optax.cosine_decay_schedule(initial, decay_steps=steps, alpha=final / initial)
    return optax.linear_schedule(initial, final, transition_steps=steps)


def from_config(cfg: MinSRConfig, steps: int) -> NaturalGradient:
    """The natural-gradient optimizer with its learning-rate and diagonal-shift schedules."""
    return NaturalGradient(
        learning_rate=_schedule_of(cfg.learning_rate, cfg.learning_rate_final, cfg.decay, steps),
        diag_shift=_schedule_of(cfg.diag_shift, cfg.diag_shift_final, cfg.decay, steps),
        method=cfg.method,
        spring_mu=cfg.momentum,
        max_update_norm=cfg.max_update_norm,
        jacobian_chunk=cfg.chunk_size,
        clip_local_energy=cfg.clip_local_energy,
    )


register(Component("optimizer", "minsr", MinSRConfig, from_config))
