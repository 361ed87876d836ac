"""Samplers of |psi|^2 over spin configurations x in {-1, +1}^n: Metropolis move rules
(:mod:`hpcvmc.metropolis`) and the exact full sum.

Both move rules are symmetric and propose n_sites moves per sweep, each picking one of K
choices uniformly: a pair (i, j) of ``pairs`` whose spins are exchanged (K = n_pairs; keeps total
Sz; a pair of equal spins is no move) or a site i whose spin is flipped (K = n_sites; for systems
without a fixed magnetization). The choices and the uniforms u of the acceptance test of a whole
phase (a step, or the burn-in) are drawn at once per chain from the phase's chain key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from hpcvmc.config import InputError, option
from hpcvmc.deduplication import MAX_SITES, MODES, Deduplication
from hpcvmc.metropolis import ChainSamplerConfig, ChainState, Metropolis
from hpcvmc.parallel import Comm
from hpcvmc.protocols import PURPOSE_STEP, Batch, LogPsi
from hpcvmc.registry import Component, register
from hpcvmc.square_lattice import symmetry_orbits


@dataclass(frozen=True, eq=False)
class _UniformSpinMoves:
    """What the spin rules share: the state, the draws, no adaptation.

    Attributes:
        n_sites: sites per configuration (proposals per sweep).
    """

    State: ClassVar[type] = ChainState
    adapt_sweeps: ClassVar[int | None] = None

    n_sites: int

    @property
    def n_choices(self) -> int:
        """K, the number of equally likely moves."""
        raise NotImplementedError

    def state(self, x: jax.Array, logpsi: jax.Array, counter: jax.Array) -> ChainState:
        """ChainState(x, log psi, 0, 0)."""
        return ChainState(x, logpsi, counter, counter)

    def draws(self, keys: jax.Array, n_sweeps: int) -> tuple[jax.Array, jax.Array]:
        """(choice index, log u), each of shape (n_sweeps, n_sites, chains), per chain drawn at
        once: randint and uniform of n_sweeps * n_sites each from the two halves of its key."""
        n_moves = n_sweeps * self.n_sites

        def draw(key: jax.Array) -> tuple[jax.Array, jax.Array]:
            k_choice, k_acc = jax.random.split(key)
            idx = jax.random.randint(k_choice, (n_moves,), 0, self.n_choices)
            return idx, jnp.log(jax.random.uniform(k_acc, (n_moves,)))

        idx, log_u = jax.vmap(draw)(keys)
        return tuple(a.reshape(len(keys), n_sweeps, self.n_sites).transpose(1, 2, 0)
                     for a in (idx, log_u))

    def moves(self, sweep: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        """A sweep's draws are already split into moves."""
        return sweep

    def adapt(self, before: ChainState, after: ChainState) -> ChainState:
        """Nothing to adapt."""
        return after


@dataclass(frozen=True, eq=False)
class ExchangeMoves(_UniformSpinMoves):
    """Exchange of the spins of a uniformly chosen pair (keeps total Sz).

    Attributes:
        pairs: candidate exchange pairs, int array (n_pairs, 2).
    """

    pairs: np.ndarray

    @property
    def n_choices(self) -> int:
        """K = n_pairs."""
        return len(self.pairs)

    def start(self, keys: jax.Array) -> jax.Array:
        """A random permutation of n_sites / 2 up and n_sites / 2 down spins (Sz = 0)."""
        base = jnp.where(jnp.arange(self.n_sites) < self.n_sites // 2, 1.0, -1.0)
        return jax.vmap(lambda k: jax.random.permutation(k, base))(keys)

    def propose(self, st: ChainState, move: tuple[jax.Array, jax.Array]
                ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """x with the spins of pair ``pairs[index]`` exchanged; a move when they differ."""
        pair_idx, log_u = move
        pairs = jnp.asarray(self.pairs)[pair_idx]  # (chains, 2)
        rows = jnp.arange(st.x.shape[0])
        xi, xj = st.x[rows, pairs[:, 0]], st.x[rows, pairs[:, 1]]
        x_new = st.x.at[rows, pairs[:, 0]].set(xj).at[rows, pairs[:, 1]].set(xi)
        return x_new, xi != xj, log_u


@dataclass(frozen=True, eq=False)
class SpinFlipMoves(_UniformSpinMoves):
    """Flip of the spin of a uniformly chosen site, x_i -> -x_i (changes total Sz by +-1)."""

    @property
    def n_choices(self) -> int:
        """K = n_sites."""
        return self.n_sites

    def start(self, keys: jax.Array) -> jax.Array:
        """Independent spins, +1 or -1 with probability 1/2 each."""
        return jax.vmap(lambda k: jnp.where(jax.random.bernoulli(k, 0.5, (self.n_sites,)),
                                            1.0, -1.0))(keys)

    def propose(self, st: ChainState, move: tuple[jax.Array, jax.Array]
                ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """x with spin ``index`` flipped; always a move."""
        site, log_u = move
        rows = jnp.arange(st.x.shape[0])
        return st.x.at[rows, site].multiply(-1.0), jnp.ones(len(rows), dtype=bool), log_u


@dataclass(frozen=True, kw_only=True)
class ExchangeSamplerConfig(ChainSamplerConfig):
    """Metropolis with spin-exchange moves between nearest and next-nearest neighbours."""

    type: str = option("exchange", "Sampler type.")
    sweeps: int = option(
        1, "Sweeps (n_sites proposals each) between two recorded samples (thinning).",
        positive=True,
    )
    burn_in: int = option(100, "Sweeps discarded before the first step.", minimum=0)
    discard: int = option(0, "Sweeps discarded at the start of every step.", minimum=0)
    deduplicate: str = option(
        "none", "Evaluate the local energy and the Jacobian once per distinct sample "
        "('configurations') or per symmetry orbit of the space group x spin flip ('orbits': a "
        "model with model.symmetrize = 'full' on a square lattice), weighted by its "
        "multiplicity: the same estimates and update at a fraction of the cost where samples "
        "repeat (4 x 4: at most 107 orbits per step); at most 62 sites.",
        choices=MODES,
    )

    requires: ClassVar[frozenset[str]] = frozenset({"spins", "fixed_magnetization"})

    def validate(self, cfg: Any) -> None:
        """Chains and samples agree; deduplication fits the lattice and the model."""
        super().validate(cfg)
        if self.deduplicate == "none":
            return
        n_sites = cfg.system.n_sites
        if n_sites > MAX_SITES:
            raise InputError(
                f"sampler.deduplicate = '{self.deduplicate}' codes at most {MAX_SITES} sites, "
                f"the system has {n_sites} (samples of a lattice this large rarely repeat: use "
                "'none')"
            )
        if self.deduplicate == "orbits" and not (
                "square_lattice" in cfg.system.capabilities
                and "space_group_invariant" in getattr(cfg.model, "capabilities", ())):
            raise InputError(
                "sampler.deduplicate = 'orbits' needs a wave function invariant under the space "
                "group x spin flip (model.type = 'vit' with model.symmetrize = 'full')"
            )


@dataclass(frozen=True, kw_only=True)
class SpinFlipSamplerConfig(ExchangeSamplerConfig):
    """Metropolis with single spin flips (spin systems without a fixed magnetization)."""

    type: str = option("flip", "Sampler type.")
    requires: ClassVar[frozenset[str]] = frozenset({"spins"})


def _metropolis(rule: Any, cfg: ExchangeSamplerConfig, system: Any, seed: int) -> Metropolis:
    """The kernel with ``rule``, the chain keys and the deduplication of an exchange or flip
    section."""
    grouping = Deduplication.build(cfg.deduplicate, system.n_sites, getattr(system, "L", None))
    return Metropolis(rule=rule, n_chains=cfg.n_chains, samples_per_chain=cfg.samples_per_chain,
                      sweeps=cfg.sweeps, burn_in=cfg.burn_in, discard=cfg.discard, seed=seed,
                      deduplication=grouping)


def exchange_from_config(cfg: ExchangeSamplerConfig, system: Any, seed: int, comm: Comm) -> Metropolis:
    """``[sampler] type = "exchange"`` on the system's ``exchange_pairs()``."""
    rule = ExchangeMoves(n_sites=system.n_sites, pairs=system.exchange_pairs())
    return _metropolis(rule, cfg, system, seed)


def flip_from_config(cfg: SpinFlipSamplerConfig, system: Any, seed: int, comm: Comm) -> Metropolis:
    """``[sampler] type = "flip"``: single spin flips on the system's sites."""
    return _metropolis(SpinFlipMoves(n_sites=system.n_sites), cfg, system, seed)


@dataclass(frozen=True, eq=False)
class ExactSampler:
    """Full sum over an enumerated set of configurations with weights m_r |psi(r)|^2 / Z.

    With m_r = 1 the set is the whole space (the system's ``all_configurations()``). With the
    symmetry orbits of a square lattice it holds one configuration per orbit of the space group
    x spin flip, weighted by the orbit size m_r: for a G-invariant psi and Hamiltonian this gives
    the same expectation values, forces and quantum geometric tensor as the full sum (every
    member of an orbit has the same psi, local energy and d log psi / d theta), at 1/|G| of the
    cost (4 x 4: 107 configurations for 12,870).

    The configurations are split evenly over ranks (padded with copies of the last
    configuration that get weight 0), so that expectation values are exact and deterministic.

    Attributes:
        configurations: this rank's share, shape (n_local, n_sites).
        valid: mask of real (non-padding) rows, shape (n_local,).
        log_multiplicity: log m_r of every row (0 for the plain sum), shape (n_local,).
        comm: the communicator the rows are split over.
    """

    is_exact: ClassVar[bool] = True
    n_chains: ClassVar[int] = 0
    State: ClassVar[None] = None

    configurations: np.ndarray
    valid: np.ndarray
    log_multiplicity: np.ndarray
    comm: Comm

    @staticmethod
    def from_states(states: np.ndarray, multiplicity: np.ndarray, comm: Comm) -> "ExactSampler":
        """This rank's contiguous share of the rows, padded to equal length on every rank."""
        per_rank = -(-len(states) // comm.size)
        pad = per_rank * comm.size - len(states)
        padded = np.concatenate([states, np.repeat(states[-1:], pad, 0)])
        log_m = np.log(np.concatenate([multiplicity, np.ones(pad)]))
        valid = np.arange(per_rank * comm.size) < len(states)
        rows = slice(comm.rank * per_rank, (comm.rank + 1) * per_rank)
        return ExactSampler(padded[rows], valid[rows], log_m[rows], comm)

    def init(self, logpsi: LogPsi, params: Any, chain_ids: jax.Array) -> None:
        """No chains."""
        return None

    def sample(self, logpsi: LogPsi, params: Any, state: None, chain_ids: jax.Array,
               step: int | jax.Array, purpose: int = PURPOSE_STEP) -> tuple[Batch, None]:
        """All configurations with their normalized weights (jittable; the same for every step)."""
        # The barrier keeps XLA from treating the configurations as a constant and folding the
        # local energy's index arithmetic over all of them at compile time (4 x 4, 12,870
        # states: a 64 s compile without it, 2.4 s with it; the values are the same).
        x = jax.lax.optimization_barrier(jnp.asarray(self.configurations))
        log_p = 2.0 * logpsi(params, x).real + jnp.asarray(self.log_multiplicity)
        log_p = jnp.where(jnp.asarray(self.valid), log_p, -jnp.inf)
        shift = self.comm.max(jnp.max(log_p))
        p = jnp.exp(log_p - shift)
        p = p / self.comm.sum(jnp.sum(p))
        return Batch(x[None], p[None]), None

    def acceptance(self, before: None, after: None, comm: Comm) -> jax.Array:
        """1: nothing is rejected."""
        return jnp.asarray(1.0)

    def samples_per_step(self, comm: Comm) -> int:
        """Configurations (or orbits) summed over, all ranks; collective."""
        return int(comm.sum(jnp.asarray(np.sum(self.valid))))


EXACT_SAMPLER_MAX_STATES = 2_000_000
ORBIT_GROUP_ORDER = 16
"""Space group x spin flip of the L x L torus per site (N translations, 8 point operations, 2)."""


def _size_key(system: Any) -> str:
    """The key that sets the size of a system config (its ``memory_footprint``'s, else
    system.n_sites)."""
    return getattr(system, "memory_footprint", (0, 0, "system.n_sites"))[2]


@dataclass(frozen=True, kw_only=True)
class ExactSamplerConfig:
    """Full sum over every configuration of the system, weights |psi|^2 (no Monte Carlo noise).

    The configurations are ``system.all_configurations()``: the Sz = 0 sector of the J1-J2
    lattice, the Hilbert space of a NetKet operator.
    """

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


def exact_from_config(cfg: ExactSamplerConfig, system: Any, seed: int, comm: Comm) -> ExactSampler:
    """``[sampler] type = "exact"``: the system's ``all_configurations()``, or with
    ``orbits = true`` the symmetry orbits of its square lattice."""
    if cfg.orbits:
        states, sizes = symmetry_orbits(system.L)
    else:
        states = system.all_configurations()
        sizes = np.ones(len(states))
    return ExactSampler.from_states(states, sizes, comm)


register(Component("sampler", "exchange", ExchangeSamplerConfig, exchange_from_config))
register(Component("sampler", "flip", SpinFlipSamplerConfig, flip_from_config))
register(Component("sampler", "exact", ExactSamplerConfig, exact_from_config))
