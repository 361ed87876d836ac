"""The Metropolis kernel shared by every Markov-chain sampler of |psi|^2; move rules plug in.

A chain at x proposes x' from a symmetric proposal, T(x -> x') = T(x' -> x), and accepts it with
probability

    A(x -> x') = min(1, |psi(x')|^2 / |psi(x)|^2),  i.e. when  log u < 2 Re[log psi(x') - log psi(x)]

with u ~ U(0, 1); then |psi|^2 / Z satisfies detailed balance. A move that leaves x unchanged
(an exchange of two equal spins) is neither accepted nor counted as proposed.

The kernel owns the loop; a :class:`MoveRule` owns the proposal, its random draws and an
optional per-chain adaptation. One :meth:`Metropolis.sample` call (one step):

1. log psi of the current configurations is recomputed with ``params`` (the state carries that
   of the previous parameters; comparing a proposal against it would break detailed balance: an
   update that lowers log psi everywhere by a constant would freeze every chain);
2. ``discard`` sweeps;
3. ``samples_per_chain`` times: ``sweeps`` sweeps, then record x;
4. the rule adapts each chain to the acceptance of the step.

:meth:`Metropolis.init` draws the rule's random start and runs ``burn_in`` sweeps in blocks of
``rule.adapt_sweeps`` sweeps (one block when None), adapting after every block.

Random streams are per chain and derive from (seed, purpose, global chain index, step) with
``jax.random.fold_in`` (:func:`chain_keys`): chain c draws the same numbers whether it lives on
rank 0 of 1 or on rank 1 of 2, so a run gives the same samples on any number of ranks and a
checkpoint can be resumed on another rank count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple, Protocol

import jax
import jax.numpy as jnp

from hpcvmc.config import InputError, option
from hpcvmc.deduplication import Deduplication
from hpcvmc.parallel import Comm
from hpcvmc.protocols import PURPOSE_BURN_IN, PURPOSE_INIT, PURPOSE_STEP, Batch, LogPsi


def chain_keys(seed: int, purpose: int, chain_ids: jax.Array, step: int | jax.Array) -> jax.Array:
    """One PRNG key per chain: fold_in(fold_in(fold_in(key(seed), purpose), chain), step)."""
    base = jax.random.fold_in(jax.random.PRNGKey(seed), purpose)
    per_chain = jax.vmap(lambda c: jax.random.fold_in(base, c))(chain_ids)
    return jax.vmap(lambda k: jax.random.fold_in(k, step))(per_chain)


class ChainState(NamedTuple):
    """State of this rank's chains (chain axis first; checkpointed in global chain order).

    Attributes:
        x: current configuration of every local chain, shape (n_chains_local, *config_shape).
        logpsi: log psi of x, complex, shape (n_chains_local,).
        accepted: accepted moves since the start of the run, shape (n_chains_local,).
        proposed: proposed moves (that change the configuration), shape (n_chains_local,).
    """

    x: jax.Array
    logpsi: jax.Array
    accepted: jax.Array
    proposed: jax.Array


class MoveRule(Protocol):
    """A symmetric proposal. Draws are pytrees whose leading axis runs over sweeps (``draws``)
    or over the moves of one sweep (``moves``); every array then has the chain axis."""

    State: ClassVar[type]
    """NamedTuple of the per-chain state: the fields of :class:`ChainState`, then the rule's."""
    adapt_sweeps: ClassVar[int | None]
    """Burn-in sweeps between two adaptations (None: the burn-in is one block)."""

    def start(self, keys: jax.Array) -> jax.Array:
        """Random start of every chain (one key each), shape (n_chains_local, *config_shape)."""

    def state(self, x: jax.Array, logpsi: jax.Array, counter: jax.Array) -> Any:
        """The initial State: x, its log psi, zero counters and the rule's own fields."""

    def draws(self, keys: jax.Array, n_sweeps: int) -> Any:
        """The random draws of ``n_sweeps`` consecutive sweeps from the phase's chain keys."""

    def moves(self, sweep: Any) -> Any:
        """One sweep's draws split into its moves (leading axis: moves of the sweep)."""

    def propose(self, state: Any, move: Any) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(x', whether x' differs from x, log u) of every chain for one move's draws."""

    def adapt(self, before: Any, after: Any) -> Any:
        """``after`` with the rule's fields adapted to the acceptance since ``before``."""


@dataclass(frozen=True, kw_only=True)
class ChainSamplerConfig:
    """The keys every Markov-chain sampler has: chains and samples per step (a base class of the
    sampler configs; the input reference shows its keys in each of them)."""

    type: str = option("", "Sampler type.")
    n_chains: int = option(64, "Markov chains in total (divided evenly over ranks).", positive=True)
    n_samples: int = option(
        1024, "Samples per step in total, over all chains (a multiple of n_chains).",
        positive=True,
    )

    def validate(self, cfg: Any) -> None:
        """Every chain records the same number of samples."""
        if self.n_samples % self.n_chains:
            raise InputError(
                f"sampler.n_samples = {self.n_samples} is not a multiple of "
                f"sampler.n_chains = {self.n_chains}"
            )

    @property
    def samples_per_chain(self) -> int:
        """Samples each chain records per step."""
        return self.n_samples // self.n_chains


@dataclass(frozen=True, kw_only=True, eq=False)
class Metropolis:
    """Markov-chain sampler: the kernel above with one move rule.

    Attributes:
        rule: the move rule.
        n_chains: chains in total over all ranks.
        samples_per_chain: samples each chain records per step.
        sweeps: sweeps between recorded samples (thinning).
        burn_in: sweeps discarded once, when chains are created.
        discard: sweeps discarded at the start of every step.
        seed: run seed.
        deduplication: how the step groups repeated samples before evaluating them
            (:mod:`hpcvmc.deduplication`; None: every sample is evaluated).
    """

    is_exact: ClassVar[bool] = False

    rule: MoveRule
    n_chains: int
    samples_per_chain: int
    sweeps: int
    burn_in: int
    discard: int
    seed: int
    deduplication: Deduplication | None = None

    @property
    def State(self) -> type:
        """The per-chain state this sampler carries (and checkpoints)."""
        return self.rule.State

    def init(self, logpsi: LogPsi, params: Any, chain_ids: jax.Array) -> Any:
        """The rule's random start for the given global chains, then the burn-in (jittable)."""
        x = self.rule.start(chain_keys(self.seed, PURPOSE_INIT, chain_ids, 0))
        counter = jnp.zeros(len(chain_ids), dtype=jnp.int64 if jax.config.jax_enable_x64 else jnp.int32)
        state = self.rule.state(x, logpsi(params, x), counter)
        if self.burn_in == 0:
            return state
        block = self.rule.adapt_sweeps or self.burn_in
        n_blocks = -(-self.burn_in // block)
        draws = self.rule.draws(chain_keys(self.seed, PURPOSE_BURN_IN, chain_ids, 0), n_blocks * block)
        blocks = jax.tree_util.tree_map(lambda d: d.reshape((n_blocks, block) + d.shape[1:]), draws)

        def burn(st: Any, block_draws: Any) -> tuple[Any, None]:
            return self.rule.adapt(st, self._sweeps(logpsi, params, st, block_draws)), None

        state, _ = jax.lax.scan(burn, state, blocks)
        return state

    def sample(self, logpsi: LogPsi, params: Any, state: Any, chain_ids: jax.Array,
               step: int | jax.Array, purpose: int = PURPOSE_STEP) -> tuple[Batch, Any]:
        """One step (steps 1-4 of the module docstring). Jittable (``step`` may be traced).

        Args:
            logpsi: the model's log psi(params, x).
            params: model parameters.
            state: this rank's chains.
            chain_ids: their global indices, shape (n_chains_local,).
            step: the optimization step (selects the random streams).
            purpose: stream tag: PURPOSE_STEP while optimizing, PURPOSE_MEASURE when measuring.

        Returns:
            (Batch(x, None) with x of shape (n_chains_local, samples_per_chain, *config_shape),
            the new state).
        """
        keys = chain_keys(self.seed, purpose, chain_ids, step)
        state = state._replace(logpsi=logpsi(params, state.x))
        start = state
        draws = self.rule.draws(keys, self.discard + self.samples_per_chain * self.sweeps)
        head = jax.tree_util.tree_map(lambda d: d[:self.discard], draws)
        state = self._sweeps(logpsi, params, state, head)
        per_sample = jax.tree_util.tree_map(
            lambda d: d[self.discard:].reshape((self.samples_per_chain, self.sweeps) + d.shape[1:]),
            draws)

        def record(st: Any, sample_draws: Any) -> tuple[Any, jax.Array]:
            st = self._sweeps(logpsi, params, st, sample_draws)
            return st, st.x

        state, xs = jax.lax.scan(record, state, per_sample)  # xs: (T, chains, *config_shape)
        return Batch(jnp.swapaxes(xs, 0, 1), None), self.rule.adapt(start, state)

    def acceptance(self, before: Any, after: Any, comm: Comm) -> jax.Array:
        """Accepted / proposed moves between two states, summed over chains and ranks."""
        accepted = comm.sum(jnp.sum(after.accepted - before.accepted))
        proposed = comm.sum(jnp.sum(after.proposed - before.proposed))
        return accepted / jnp.maximum(proposed, 1)

    def samples_per_step(self, comm: Comm) -> int:
        """Configurations recorded in one step over all ranks: n_chains * samples_per_chain."""
        return self.n_chains * self.samples_per_chain

    def _sweeps(self, logpsi: LogPsi, params: Any, state: Any, draws: Any) -> Any:
        """Run the sweeps whose draws are given (leading axis: sweeps)."""

        def sweep(st: Any, sweep_draws: Any) -> tuple[Any, None]:
            st, _ = jax.lax.scan(move, st, self.rule.moves(sweep_draws))
            return st, None

        def move(st: Any, move_draws: Any) -> tuple[Any, None]:
            x_new, changed, log_u = self.rule.propose(st, move_draws)
            return self._accept(logpsi, params, st, x_new, changed, log_u), None

        state, _ = jax.lax.scan(sweep, state, draws)
        return state

    @staticmethod
    def _accept(logpsi: LogPsi, params: Any, st: Any, x_new: jax.Array, changed: jax.Array,
                log_u: jax.Array) -> Any:
        """The Metropolis test log u < 2 Re[log psi(x') - log psi(x)] on every chain."""
        logpsi_new = logpsi(params, x_new)
        accept = changed & (log_u < 2.0 * (logpsi_new.real - st.logpsi.real))
        keep = accept.reshape(accept.shape + (1,) * (x_new.ndim - 1))
        return st._replace(
            x=jnp.where(keep, x_new, st.x),
            logpsi=jnp.where(accept, logpsi_new, st.logpsi),
            accepted=st.accepted + accept,
            proposed=st.proposed + changed,
        )
