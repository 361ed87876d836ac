"""Metropolis sampling of |psi|^2 for electrons in continuous space on a supercell torus.

Moves are Gaussian displacements r_i -> r_i + w eta_i (eta ~ N(0, 1) per coordinate, w the
chain's move width in a_M) of all electrons at once (``move = "all"``: one move per sweep) or of
one electron at a time (``move = "one"``: a sweep moves electrons 0..N-1 in turn). The proposal is
symmetric, so a move is accepted with probability min(1, |psi(x')|^2 / |psi(x)|^2). Positions are
wrapped into the supercell (fractional coordinates s = r L^-1 taken mod 1); psi is periodic, so
the chain samples |psi|^2 on the torus.

Every chain carries its own move width. During burn-in the widths adapt after every block of
``ADAPT_SWEEPS`` sweeps, w <- w exp(ADAPT_GAIN (a - a_target)) with a the chain's acceptance in
the block; after every step the same rule is applied with the acceptance of that step (the
samples of a step are drawn at a fixed width). The Metropolis loop is
:class:`hpcvmc.metropolis.Metropolis`; its chain keys (seed, purpose, global chain index, step)
are folded with the sweep index within the phase (the step, or the burn-in) and the electron
index, so chain c gives the same samples alone or next to other chains, on any number of ranks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from hpcvmc.config import InputError, option
from hpcvmc.metropolis import Metropolis
from hpcvmc.parallel import Comm
from hpcvmc.registry import Component, register

ADAPT_SWEEPS = 10
"""Sweeps per burn-in block between two width adaptations."""
ADAPT_GAIN = 1.0
"""Gain of the width adaptation w <- w exp(gain (acceptance - target))."""
MIN_WIDTH = 1e-4
"""Smallest move width in a_M (the adaptation never goes below it)."""


class GaussianState(NamedTuple):
    """State of this rank's chains (all fields have the chain axis first and are checkpointed).

    Attributes:
        x: positions, shape (n_chains_local, N, 2), in a_M, inside the supercell.
        logpsi: log psi of x, complex, shape (n_chains_local,).
        accepted: accepted moves since the start of the run, shape (n_chains_local,).
        proposed: proposed moves since the start of the run, shape (n_chains_local,).
        width: move width of each chain, shape (n_chains_local,), in a_M.
    """

    x: jax.Array
    logpsi: jax.Array
    accepted: jax.Array
    proposed: jax.Array
    width: jax.Array


@dataclass(frozen=True, eq=False)
class GaussianMoves:
    """Gaussian moves of electron positions on the supercell torus, per-chain widths.

    Attributes:
        cell: supercell vectors, shape (2, 2), rows L_1, L_2, in a_M.
        n_electrons: electrons per configuration N.
        move: "all" (all-electron moves) or "one" (one electron at a time).
        width: initial move width in a_M.
        target_acceptance: acceptance the widths adapt to.
    """

    State: ClassVar[type] = GaussianState
    adapt_sweeps: ClassVar[int] = ADAPT_SWEEPS

    cell: np.ndarray
    n_electrons: int
    move: str = "all"
    width: float = 0.2
    target_acceptance: float = 0.5

    def wrap(self, x: jax.Array) -> jax.Array:
        """Positions mapped into the supercell, r = (s mod 1) L with s = r L^-1, shape of x."""
        frac = x @ jnp.asarray(np.linalg.inv(self.cell))
        return (frac - jnp.floor(frac)) @ jnp.asarray(self.cell)

    def start(self, keys: jax.Array) -> jax.Array:
        """Uniform random positions in the supercell, shape (chains, N, 2)."""
        frac = jax.vmap(lambda k: jax.random.uniform(k, (self.n_electrons, 2)))(keys)
        return frac @ jnp.asarray(self.cell)

    def state(self, x: jax.Array, logpsi: jax.Array, counter: jax.Array) -> GaussianState:
        """GaussianState(x, log psi, 0, 0, initial width)."""
        return GaussianState(x, logpsi, counter, counter, jnp.full(len(x), self.width, dtype=x.dtype))

    def draws(self, keys: jax.Array, n_sweeps: int) -> jax.Array:
        """Key of sweep k of the phase: fold_in(chain key, k), shape (n_sweeps, chains, 2)."""
        return jax.vmap(lambda k: jax.vmap(lambda c: jax.random.fold_in(c, k))(keys))(
            jnp.arange(n_sweeps))

    def moves(self, sweep: jax.Array) -> jax.Array | tuple[jax.Array, jax.Array]:
        """"all": the sweep key; "one": (electron i, fold_in(sweep key, i)) for i = 0..N-1."""
        if self.move == "all":
            return sweep[None]
        electrons = jnp.arange(self.n_electrons)
        return electrons, jax.vmap(lambda i: jax.vmap(lambda c: jax.random.fold_in(c, i))(sweep))(
            electrons)

    def propose(self, st: GaussianState, move: jax.Array | tuple[jax.Array, jax.Array]
                ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """r -> wrap(r + w eta) for all electrons or electron i; (eta, u) from the two halves
        of the move's key."""
        electron, keys = (None, move) if self.move == "all" else move

        def draw(key: jax.Array) -> tuple[jax.Array, jax.Array]:
            k_step, k_acc = jax.random.split(key)
            shape = (self.n_electrons, 2) if electron is None else (2,)
            return jax.random.normal(k_step, shape), jnp.log(jax.random.uniform(k_acc))

        eta, log_u = jax.vmap(draw)(keys)
        if electron is None:
            x_new = st.x + st.width[:, None, None] * eta
        else:
            x_new = st.x.at[:, electron].add(st.width[:, None] * eta)
        return self.wrap(x_new), jnp.ones(len(keys), dtype=bool), log_u

    def adapt(self, before: GaussianState, after: GaussianState) -> GaussianState:
        """Width update w <- w exp(ADAPT_GAIN (a - target)) from the acceptance a in between,
        clipped to [MIN_WIDTH, longest cell vector]."""
        accepted = after.accepted - before.accepted
        proposed = jnp.maximum(after.proposed - before.proposed, 1)
        rate = accepted / proposed
        limit = float(np.max(np.linalg.norm(self.cell, axis=1)))
        width = after.width * jnp.exp(ADAPT_GAIN * (rate - self.target_acceptance))
        return after._replace(width=jnp.clip(width, MIN_WIDTH, limit))


@dataclass(frozen=True, kw_only=True)
class GaussianSamplerConfig:
    """Metropolis with Gaussian moves of electron positions on the supercell torus (moire)."""

    type: str = option("gaussian", "Sampler type.")
    n_chains: int = option(64, "Markov chains in total (divided evenly over ranks).", positive=True)
    n_samples: int = option(
        1024, "Samples per step in total, over all chains (a multiple of n_chains).",
        positive=True,
    )
    sweeps: int = option(
        10, "Sweeps between two recorded samples (thinning); a sweep is one all-electron move "
        "or N one-electron moves.", positive=True,
    )
    burn_in: int = option(
        200, "Sweeps discarded before the first step (blocks of 10 with width adaptation).",
        minimum=0,
    )
    discard: int = option(0, "Sweeps discarded at the start of every step.", minimum=0)
    move: str = option(
        "all", "Move all electrons at once, or one electron at a time.", choices=("all", "one")
    )
    width: float = option(0.2, "Initial move width (Gaussian standard deviation) in a_M.",
                          positive=True)
    target_acceptance: float = option(
        0.5, "Acceptance the per-chain widths adapt to (in burn-in and after every step).",
        positive=True,
    )

    requires: ClassVar[frozenset[str]] = frozenset({"continuum"})

    def validate(self, cfg: Any) -> None:
        """Cross-key checks."""
        if self.n_samples % self.n_chains:
            raise InputError(
                f"sampler.n_samples = {self.n_samples} is not a multiple of "
                f"sampler.n_chains = {self.n_chains}"
            )
        if self.target_acceptance >= 1.0:
            raise InputError(
                f"sampler.target_acceptance = {self.target_acceptance} must be < 1"
            )

    @property
    def samples_per_chain(self) -> int:
        """Samples each chain records per step."""
        return self.n_samples // self.n_chains


def gaussian_from_config(cfg: GaussianSamplerConfig, system: Any, seed: int, comm: Comm) -> Metropolis:
    """``[sampler] type = "gaussian"`` on the system's supercell and electrons."""
    rule = GaussianMoves(cell=np.asarray(system.cell), n_electrons=system.n_electrons,
                         move=cfg.move, width=cfg.width, target_acceptance=cfg.target_acceptance)
    return Metropolis(rule=rule, n_chains=cfg.n_chains, samples_per_chain=cfg.samples_per_chain,
                      sweeps=cfg.sweeps, burn_in=cfg.burn_in, discard=cfg.discard, seed=seed)


register(Component("sampler", "gaussian", GaussianSamplerConfig, gaussian_from_config))
