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
samples of a step are drawn at a fixed width). Random numbers follow
``hpcvmc.sampling.chain_keys`` (seed, purpose, global chain index, step), folded with the sweep
index and the electron index, so chain c gives the same samples alone or next to other chains,
on any number of ranks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from hpcvmc.config import InputError, option
from hpcvmc.registry import Component, register
from hpcvmc.sampling import PURPOSE_BURN_IN, PURPOSE_INIT, PURPOSE_STEP, Batch, chain_keys

LogPsi = Callable[[Any, jax.Array], jax.Array]
"""log psi(params, x): x of shape (batch, N, 2) -> complex log psi of shape (batch,)."""

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
class GaussianSampler:
    """Gaussian-move Metropolis sampler of |psi|^2 on the supercell torus.

    Attributes:
        cell: supercell vectors, shape (2, 2), rows L_1, L_2, in a_M.
        n_electrons: electrons per configuration N.
        samples_per_chain: samples each chain records per step.
        sweeps: sweeps between recorded samples (thinning).
        burn_in: sweeps discarded once when the chains are created, run as
            ceil(burn_in / ADAPT_SWEEPS) blocks of ADAPT_SWEEPS sweeps.
        discard: sweeps discarded at the start of every step.
        seed: run seed.
        move: "all" (all-electron moves) or "one" (one electron at a time).
        width: initial move width in a_M.
        target_acceptance: acceptance the widths adapt to.
    """

    State = GaussianState
    """The per-chain state this sampler carries (and checkpoints)."""

    cell: np.ndarray
    n_electrons: int
    samples_per_chain: int
    sweeps: int
    burn_in: int
    discard: int
    seed: int
    move: str = "all"
    width: float = 0.2
    target_acceptance: float = 0.5

    def wrap(self, x: jax.Array) -> jax.Array:
        """Positions mapped into the supercell, r = (s mod 1) L with s = r L^-1, shape of x."""
        frac = x @ jnp.asarray(np.linalg.inv(self.cell))
        return (frac - jnp.floor(frac)) @ jnp.asarray(self.cell)

    def init(self, logpsi: LogPsi, params: Any, chain_ids: jax.Array) -> GaussianState:
        """Uniform random positions in the supercell, then the adaptive burn-in.

        Args:
            logpsi: the model's log psi(params, x).
            params: model parameters.
            chain_ids: global indices of this rank's chains, shape (n_chains_local,).

        Returns:
            The burnt-in state.
        """
        keys = chain_keys(self.seed, PURPOSE_INIT, chain_ids, 0)
        frac = jax.vmap(lambda k: jax.random.uniform(k, (self.n_electrons, 2)))(keys)
        x = frac @ jnp.asarray(self.cell)
        int_type = jnp.int64 if jax.config.jax_enable_x64 else jnp.int32
        counter = jnp.zeros(len(chain_ids), dtype=int_type)
        width = jnp.full(len(chain_ids), self.width, dtype=x.dtype)
        state = GaussianState(x, logpsi(params, x), counter, counter, width)
        if self.burn_in == 0:
            return state
        burn_keys = chain_keys(self.seed, PURPOSE_BURN_IN, chain_ids, 0)

        def block(st: GaussianState, index: jax.Array) -> tuple[GaussianState, None]:
            new = self._sweeps(logpsi, params, st, burn_keys, index * ADAPT_SWEEPS, ADAPT_SWEEPS)
            return self._adapt(st, new), None

        n_blocks = -(-self.burn_in // ADAPT_SWEEPS)
        state, _ = jax.lax.scan(block, state, jnp.arange(n_blocks))
        return state

    def sample(self, logpsi: LogPsi, params: Any, state: GaussianState, chain_ids: jax.Array,
               step: int | jax.Array, purpose: int = PURPOSE_STEP) -> tuple[Batch, GaussianState]:
        """Discard ``discard`` sweeps, record ``samples_per_chain`` samples ``sweeps`` sweeps apart,
        then adapt the widths to this step's acceptance. Jittable (``step`` may be traced).
        log psi of the current positions is recomputed with ``params`` first (the state carries
        that of the previous parameters; see :meth:`hpcvmc.sampling.ExchangeSampler.sample`).

        Args:
            logpsi: the model's log psi(params, x).
            params: model parameters.
            state: this rank's chains.
            chain_ids: their global indices, shape (n_chains_local,).
            step: the optimization step (selects the random streams).
            purpose: stream tag: PURPOSE_STEP while optimizing, PURPOSE_MEASURE when measuring.

        Returns:
            (Batch(x, None) with x of shape (n_chains_local, samples_per_chain, N, 2), new state).
        """
        keys = chain_keys(self.seed, purpose, chain_ids, step)
        state = state._replace(logpsi=logpsi(params, state.x))  # the parameters changed since
        start = state
        state = self._sweeps(logpsi, params, state, keys, 0, self.discard)

        def record(st: GaussianState, t: jax.Array) -> tuple[GaussianState, jax.Array]:
            st = self._sweeps(logpsi, params, st, keys, self.discard + t * self.sweeps, self.sweeps)
            return st, st.x

        state, xs = jax.lax.scan(record, state, jnp.arange(self.samples_per_chain))
        return Batch(jnp.swapaxes(xs, 0, 1), None), self._adapt(start, state)

    def _adapt(self, before: GaussianState, after: GaussianState) -> GaussianState:
        """Width update w <- w exp(ADAPT_GAIN (a - target)) from the acceptance a in between."""
        accepted = after.accepted - before.accepted
        proposed = jnp.maximum(after.proposed - before.proposed, 1)
        rate = accepted / proposed
        limit = float(np.max(np.linalg.norm(self.cell, axis=1)))
        width = after.width * jnp.exp(ADAPT_GAIN * (rate - self.target_acceptance))
        return after._replace(width=jnp.clip(width, MIN_WIDTH, limit))

    def _sweeps(self, logpsi: LogPsi, params: Any, state: GaussianState, keys: jax.Array,
                first: int | jax.Array, n_sweeps: int) -> GaussianState:
        """Run sweeps first .. first + n_sweeps - 1 (their keys: fold_in(chain key, sweep))."""
        if n_sweeps == 0:
            return state

        def sweep(st: GaussianState, index: jax.Array) -> tuple[GaussianState, None]:
            sweep_keys = jax.vmap(lambda k: jax.random.fold_in(k, index))(keys)
            if self.move == "all":
                return self._move(logpsi, params, st, sweep_keys, None), None

            def one(s: GaussianState, electron: jax.Array) -> tuple[GaussianState, None]:
                move_keys = jax.vmap(lambda k: jax.random.fold_in(k, electron))(sweep_keys)
                return self._move(logpsi, params, s, move_keys, electron), None

            st, _ = jax.lax.scan(one, st, jnp.arange(self.n_electrons))
            return st, None

        state, _ = jax.lax.scan(sweep, state, first + jnp.arange(n_sweeps))
        return state

    def _move(self, logpsi: LogPsi, params: Any, st: GaussianState, keys: jax.Array,
              electron: jax.Array | None) -> GaussianState:
        """One Metropolis move on every chain: all electrons (electron None) or one electron."""

        def draw(key: jax.Array) -> tuple[jax.Array, jax.Array]:
            k_step, k_acc = jax.random.split(key)
            shape = (self.n_electrons, 2) if electron is None else (2,)
            return jax.random.normal(k_step, shape), jnp.log(jax.random.uniform(k_acc))

        eta, log_u = jax.vmap(draw)(keys)
        if electron is None:
            x_new = st.x + st.width[:, None, None] * eta
        else:
            x_new = st.x.at[:, electron].add(st.width[:, None] * eta)
        x_new = self.wrap(x_new)
        logpsi_new = logpsi(params, x_new)
        accept = log_u < 2.0 * (logpsi_new.real - st.logpsi.real)
        return st._replace(
            x=jnp.where(accept[:, None, None], x_new, st.x),
            logpsi=jnp.where(accept, logpsi_new, st.logpsi),
            accepted=st.accepted + accept,
            proposed=st.proposed + 1,
        )


def from_config(cfg: Any, system: Any, seed: int, comm: Any) -> GaussianSampler:
    """Build the sampler from a validated ``[sampler] type = "gaussian"`` section and the system."""
    return GaussianSampler(
        cell=np.asarray(system.cell), n_electrons=system.n_electrons,
        samples_per_chain=cfg.samples_per_chain, sweeps=cfg.sweeps, burn_in=cfg.burn_in,
        discard=cfg.discard, seed=seed, move=cfg.move, width=cfg.width,
        target_acceptance=cfg.target_acceptance,
    )


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


register(Component("sampler", "gaussian", GaussianSamplerConfig, from_config))
