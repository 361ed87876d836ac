"""Samplers of |psi|^2 over this rank's share of the chains.

Random streams are per chain and derive from (seed, purpose, global chain index, step) with
``jax.random.fold_in``: chain c draws the same numbers whether it lives on rank 0 of 1 or on
rank 1 of 2, so a run gives the same samples on any number of ranks and a checkpoint can be
resumed on another rank count. The state of a sampler is an explicit pytree
(:class:`ChainState`) that is checkpointed in global chain order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from hpcvmc.config import InputError, option
from hpcvmc.parallel import Comm
from hpcvmc.registry import Component, register
from hpcvmc.systems.lattice import symmetry_orbits, sz0_configurations

LogPsi = Callable[[object, jax.Array], jax.Array]

# `purpose` tags folded into the seed so that the streams never overlap.
PURPOSE_INIT, PURPOSE_BURN_IN, PURPOSE_STEP, PURPOSE_PARAMS, PURPOSE_MEASURE = 1, 2, 3, 4, 5


def chain_keys(seed: int, purpose: int, chain_ids: jax.Array, step: int | jax.Array) -> jax.Array:
    """One PRNG key per chain: fold_in(fold_in(fold_in(key(seed), purpose), chain), step)."""
    base = jax.random.fold_in(jax.random.PRNGKey(seed), purpose)
    per_chain = jax.vmap(lambda c: jax.random.fold_in(base, c))(chain_ids)
    return jax.vmap(lambda k: jax.random.fold_in(k, step))(per_chain)


class ChainState(NamedTuple):
    """State of this rank's chains.

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


class Batch(NamedTuple):
    """What a sampler hands to the estimators.

    Attributes:
        x: samples, shape (n_chains_local, samples_per_chain, *config_shape).
        weights: None for Monte Carlo samples (equal weights 1/N_s), else the exact
            normalized probabilities |psi|^2 / sum |psi|^2, shape (n_chains_local, samples).
    """

    x: jax.Array
    weights: jax.Array | None


@dataclass(frozen=True)
class ExchangeSampler:
    """Metropolis with spin-exchange moves on lattice pairs (keeps total Sz).

    A move picks a pair (i, j) uniformly from ``pairs`` and exchanges the two spins; the move
    is symmetric, so it is accepted with probability min(1, |psi(s')|^2 / |psi(s)|^2). Pairs with
    equal spins leave s unchanged and are not counted as proposals.

    Attributes:
        n_sites: sites per configuration.
        pairs: candidate exchange pairs, int array (n_pairs, 2).
        samples_per_chain: samples each chain records per step.
        sweeps: sweeps (n_sites proposals) between recorded samples.
        burn_in: sweeps discarded once, when chains are created.
        discard: sweeps discarded at the start of every step.
        seed: run seed.
    """

    State = ChainState
    """The per-chain state this sampler carries (and checkpoints)."""

    n_sites: int
    pairs: np.ndarray
    samples_per_chain: int
    sweeps: int
    burn_in: int
    discard: int
    seed: int

    def init(self, logpsi: LogPsi, params: object, chain_ids: jax.Array) -> ChainState:
        """Random Sz = 0 configurations for the given global chains, then ``burn_in`` sweeps."""
        keys = chain_keys(self.seed, PURPOSE_INIT, chain_ids, 0)
        base = jnp.where(jnp.arange(self.n_sites) < self.n_sites // 2, 1.0, -1.0)
        x = jax.vmap(lambda k: jax.random.permutation(k, base))(keys)
        zeros = jnp.zeros(len(chain_ids), dtype=jnp.int64 if jax.config.jax_enable_x64 else jnp.int32)
        state = ChainState(x, logpsi(params, x), zeros, zeros)
        burn_keys = chain_keys(self.seed, PURPOSE_BURN_IN, chain_ids, 0)
        return self._run(logpsi, params, state, burn_keys, self.burn_in * self.n_sites)

    def _run(self, logpsi: LogPsi, params: object, state: ChainState, keys: jax.Array,
             n_moves: int) -> ChainState:
        """Apply ``n_moves`` Metropolis moves to every chain (no recording)."""
        if n_moves == 0:
            return state
        pair_idx, log_u = self._draws(keys, n_moves)

        def move(st: ChainState, draw: tuple[jax.Array, jax.Array]) -> tuple[ChainState, None]:
            return self._move(logpsi, params, st, *draw), None

        state, _ = jax.lax.scan(move, state, (pair_idx.T, log_u.T))
        return state

    def _draws(self, keys: jax.Array, n_moves: int) -> tuple[jax.Array, jax.Array]:
        """Per chain: which pair to exchange and log of the acceptance uniform, (chains, n)."""

        def draw(key: jax.Array) -> tuple[jax.Array, jax.Array]:
            k_pair, k_acc = jax.random.split(key)
            idx = jax.random.randint(k_pair, (n_moves,), 0, len(self.pairs))
            return idx, jnp.log(jax.random.uniform(k_acc, (n_moves,)))

        return jax.vmap(draw)(keys)

    def _move(self, logpsi: LogPsi, params: object, st: ChainState, pair_idx: jax.Array,
              log_u: jax.Array) -> ChainState:
        """One exchange proposal on every chain (vectorized over chains)."""
        pairs = jnp.asarray(self.pairs)[pair_idx]  # (chains, 2)
        rows = jnp.arange(st.x.shape[0])
        xi, xj = st.x[rows, pairs[:, 0]], st.x[rows, pairs[:, 1]]
        x_new = st.x.at[rows, pairs[:, 0]].set(xj).at[rows, pairs[:, 1]].set(xi)
        logpsi_new = logpsi(params, x_new)
        changes = xi != xj
        accept = changes & (log_u < 2.0 * (logpsi_new.real - st.logpsi.real))
        return ChainState(
            x=jnp.where(accept[:, None], x_new, st.x),
            logpsi=jnp.where(accept, logpsi_new, st.logpsi),
            accepted=st.accepted + accept,
            proposed=st.proposed + changes,
        )

    def sample(self, logpsi: LogPsi, params: object, state: ChainState, chain_ids: jax.Array,
               step: int | jax.Array, purpose: int = PURPOSE_STEP) -> tuple[Batch, ChainState]:
        """Discard ``discard`` sweeps, then record ``samples_per_chain`` samples per chain,
        ``sweeps`` sweeps apart. Jittable (``step`` may be traced); ``purpose`` tags the
        streams (PURPOSE_STEP while optimizing, PURPOSE_MEASURE in the final measurement).

        log psi of the chains' current configurations is first recomputed with ``params``: the
        one carried in the state belongs to the parameters of the previous call, and comparing
        a proposal against it would break detailed balance (an update that lowers log psi
        everywhere by a constant would freeze every chain)."""
        keys = chain_keys(self.seed, purpose, chain_ids, step)
        state = state._replace(logpsi=logpsi(params, state.x))  # the parameters changed since
        moves_per_sample = self.sweeps * self.n_sites
        n_moves = self.discard * self.n_sites + self.samples_per_chain * moves_per_sample
        pair_idx, log_u = self._draws(keys, n_moves)
        n_discard = self.discard * self.n_sites

        def move(st: ChainState, draw: tuple[jax.Array, jax.Array]) -> tuple[ChainState, None]:
            return self._move(logpsi, params, st, *draw), None

        state, _ = jax.lax.scan(move, state, (pair_idx[:, :n_discard].T, log_u[:, :n_discard].T))
        shape = (self.samples_per_chain, moves_per_sample)
        idx = pair_idx[:, n_discard:].reshape((-1,) + shape).transpose(1, 2, 0)
        lu = log_u[:, n_discard:].reshape((-1,) + shape).transpose(1, 2, 0)

        def record(st: ChainState, draws: tuple[jax.Array, jax.Array]) -> tuple[ChainState, jax.Array]:
            st, _ = jax.lax.scan(move, st, draws)
            return st, st.x

        state, xs = jax.lax.scan(record, state, (idx, lu))  # xs: (T, chains, n_sites)
        return Batch(jnp.swapaxes(xs, 0, 1), None), state


@dataclass(frozen=True)
class ExactSampler:
    """Full sum over the Sz = 0 sector: every configuration with weight |psi|^2 / Z.

    With ``orbits`` (:meth:`for_orbits`) the sum runs over one configuration per orbit of the
    space group x spin flip, weighted by the orbit size m_r: p_r = m_r |psi(r)|^2 / Z. For a
    G-invariant psi and Hamiltonian this gives the same expectation values, forces and quantum
    geometric tensor as the full sum (every member of an orbit has the same psi, local energy
    and d log psi / d theta), at 1/|G| of the cost (4 x 4: 107 configurations for 12,870).

    The configurations are split evenly over ranks (padded with copies of the last
    configuration that get weight 0), so that expectation values are exact and deterministic.

    Attributes:
        configurations: this rank's share, shape (n_local, n_sites).
        valid: mask of real (non-padding) rows, shape (n_local,).
        log_multiplicity: log m_r of every row (0 for the plain sum), shape (n_local,).
    """

    configurations: np.ndarray
    valid: np.ndarray
    log_multiplicity: np.ndarray

    @staticmethod
    def for_sites(n_sites: int, comm: Comm) -> "ExactSampler":
        """Enumerate the Sz = 0 sector and keep this rank's contiguous share."""
        states = sz0_configurations(n_sites)
        return ExactSampler._share(states, np.ones(len(states)), comm)

    @staticmethod
    def for_orbits(L: int, comm: Comm) -> "ExactSampler":
        """One configuration per symmetry orbit of the L x L sector, weighted by orbit size."""
        representatives, sizes = symmetry_orbits(L)
        return ExactSampler._share(representatives, sizes, comm)

    @staticmethod
    def _share(states: np.ndarray, multiplicity: np.ndarray, comm: Comm) -> "ExactSampler":
        """This rank's contiguous share of the rows, padded to equal length on every rank."""
        per_rank = -(-len(states) // comm.size)
        pad = per_rank * comm.size - len(states)
        padded = np.concatenate([states, np.repeat(states[-1:], pad, 0)])
        log_m = np.log(np.concatenate([multiplicity, np.ones(pad)]))
        valid = np.arange(per_rank * comm.size) < len(states)
        rows = slice(comm.rank * per_rank, (comm.rank + 1) * per_rank)
        return ExactSampler(padded[rows], valid[rows], log_m[rows])

    def sample(self, logpsi: LogPsi, params: object, comm: Comm) -> Batch:
        """All configurations with their normalized weights (jittable)."""
        x = jnp.asarray(self.configurations)
        log_p = 2.0 * logpsi(params, x).real + jnp.asarray(self.log_multiplicity)
        log_p = jnp.where(jnp.asarray(self.valid), log_p, -jnp.inf)
        shift = comm.max(jnp.max(log_p))
        p = jnp.exp(log_p - shift)
        p = p / comm.sum(jnp.sum(p))
        return Batch(x[None], p[None])


def exchange_from_config(cfg: ExchangeSamplerConfig, system: Any, seed: int, comm: Comm
                         ) -> ExchangeSampler:
    """The exchange sampler of a validated ``[sampler] type = "exchange"`` section."""
    return ExchangeSampler(
        n_sites=system.n_sites, pairs=system.exchange_pairs(),
        samples_per_chain=cfg.samples_per_chain, sweeps=cfg.sweeps,
        burn_in=cfg.burn_in, discard=cfg.discard, seed=seed,
    )


def exact_from_config(cfg: ExactSamplerConfig, system: Any, seed: int, comm: Comm) -> ExactSampler:
    """The exact sampler of a validated ``[sampler] type = "exact"`` section: this rank's share
    of every configuration (or of one per symmetry orbit)."""
    return ExactSampler.for_orbits(system.L, comm) if cfg.orbits else ExactSampler.for_sites(
        system.n_sites, comm)


@dataclass(frozen=True, kw_only=True)
class ExchangeSamplerConfig:
    """Metropolis with spin-exchange moves between nearest and next-nearest neighbours."""

    type: str = option("exchange", "Sampler type.")
    n_chains: int = option(64, "Markov chains in total (divided evenly over ranks).", positive=True)
    n_samples: int = option(
        1024, "Samples per step in total, over all chains (a multiple of n_chains).",
        positive=True,
    )
    sweeps: int = option(
        1, "Sweeps (n_sites proposals each) between two recorded samples (thinning).",
        positive=True,
    )
    burn_in: int = option(100, "Sweeps discarded before the first step.", minimum=0)
    discard: int = option(0, "Sweeps discarded at the start of every step.", minimum=0)

    requires: ClassVar[frozenset[str]] = frozenset({"spins", "fixed_magnetization"})

    def validate(self, cfg: Any) -> None:
        """Cross-key checks."""
        if self.n_samples % self.n_chains:
            raise InputError(
                f"sampler.n_samples = {self.n_samples} is not a multiple of "
                f"sampler.n_chains = {self.n_chains}"
            )

    @property
    def samples_per_chain(self) -> int:
        """Samples each chain records per step."""
        return self.n_samples // self.n_chains


EXACT_SAMPLER_MAX_STATES = 2_000_000
ORBIT_GROUP_ORDER = 16
"""Space group x spin flip of the L x L torus per site (N translations, 8 point operations, 2)."""


def _size_key(system: Any) -> str:
    """The key that sets the size of a system config (its ``memory_footprint``'s, else
    system.n_sites)."""
    return getattr(system, "memory_footprint", (0, 0, "system.n_sites"))[2]


@dataclass(frozen=True, kw_only=True)
class ExactSamplerConfig:
    """Full sum over the Sz = 0 sector, weights |psi|^2 (no Monte Carlo noise)."""

    type: str = option("exact", "Sampler type.")
    orbits: bool = option(
        False, "Sum over one configuration per orbit of the space group x spin flip, weighted by "
        "the orbit size (exact for a model projected with model.symmetrize = 'full'; 4 x 4: 107 "
        "configurations instead of 12,870)."
    )

    requires: ClassVar[frozenset[str]] = frozenset({"enumerable"})

    def validate(self, cfg: Any) -> None:
        """The space must be small enough to enumerate; orbits need a square lattice and a model
        invariant under its space group x spin flip."""
        if self.orbits and not ("square_lattice" in cfg.system.capabilities
                                and "space_group_invariant" in getattr(cfg.model, "capabilities", ())):
            raise InputError(
                "sampler.orbits = true needs a wave function invariant under the space group x "
                "spin flip (model.type = 'vit' with model.symmetrize = 'full')"
            )
        size = cfg.system.n_states
        if size > EXACT_SAMPLER_MAX_STATES:
            key = _size_key(cfg.system)
            raise InputError(
                f"sampler.type = 'exact' cannot enumerate {key} = "
                f"{getattr(cfg.system, key.partition('.')[2])}: {size} states "
                f"(limit {EXACT_SAMPLER_MAX_STATES})"
            )

    def samples_per_step(self, system: Any) -> tuple[int, str]:
        """Configurations one step sums over (about n_states / (16 N) orbits with ``orbits``)
        and the key that sets them (:mod:`hpcvmc.resources`)."""
        states = system.n_states
        if self.orbits:
            states = max(1, states // (ORBIT_GROUP_ORDER * system.n_sites))
        return states, _size_key(system)


register(Component("sampler", "exchange", ExchangeSamplerConfig, exchange_from_config))
register(Component("sampler", "exact", ExactSamplerConfig, exact_from_config))
