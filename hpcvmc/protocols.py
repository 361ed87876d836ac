"""The contracts between the engine and its components.

The driver, the measurement and the analysis use systems, models, samplers and optimizers only
through these protocols; a component (built-in or plug-in, :mod:`hpcvmc.registry`) that has
these attributes runs under the whole engine: MPI, checkpoints, final measurement, export.

Shapes: a configuration has ``System.config_shape`` ((n_sites,) spins +-1 for a lattice,
(N, 2) positions in a_M for electrons); a batch of them has a leading axis. Energies are totals
of the whole system in the system's unit.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Protocol, runtime_checkable

import jax

LogPsi = Callable[[Any, jax.Array], jax.Array]
"""log psi(params, x): x of shape (batch, *config_shape) -> complex log psi of shape (batch,)."""

PURPOSE_INIT, PURPOSE_BURN_IN, PURPOSE_STEP, PURPOSE_PARAMS, PURPOSE_MEASURE = 1, 2, 3, 4, 5
"""Tags folded into the run seed so that random streams of different purposes never overlap."""


class Batch(NamedTuple):
    """What a sampler hands to the estimators.

    Attributes:
        x: samples, shape (n_chains_local, samples_per_chain, *config_shape).
        weights: None for Monte Carlo samples (equal weights 1/N_s), else the exact
            normalized probabilities |psi|^2 / sum |psi|^2, shape (n_chains_local, samples).
    """

    x: jax.Array
    weights: jax.Array | None


@runtime_checkable
class System(Protocol):
    """A Hamiltonian on a configuration space.

    Optional members, used when present: ``exchange_pairs()`` (site pairs for spin-exchange
    moves), ``all_configurations()`` (every basis state, for the exact sampler), ``cell``,
    ``n_electrons`` and ``wrap(x)`` (continuum moves), ``observables()`` (an
    :class:`Observables` measured beside the final energy), ``exact_energy()`` (the ground
    state energy by exact diagonalization, ``hpcvmc exact``).
    """

    n_sites: int
    config_shape: tuple[int, ...]
    energy_unit: str
    chunk_size: int

    def local_energy(self, logpsi: LogPsi, params: Any, x: jax.Array) -> jax.Array:
        """E_L(x) = <x|H|psi> / <x|psi>, complex, shape (n,) for x of shape (n, *config_shape)."""

    def format_energy(self, mean: float, error: float) -> str:
        """The energy of a result line (total and per site or electron, with units)."""

    def progress_energy(self, mean: float, error: float) -> str:
        """The energy of a progress line."""


@runtime_checkable
class Sampler(Protocol):
    """Samples of |psi|^2 on this rank: Markov chains or an exact enumeration.

    Random streams derive from (seed, purpose, global chain index, step), so a chain gives the
    same samples on any number of ranks; ``State`` is checkpointed in global chain order.
    """

    is_exact: bool
    n_chains: int
    State: Any

    def init(self, logpsi: LogPsi, params: Any, chain_ids: jax.Array) -> Any:
        """This rank's burnt-in chains (None for an exact sampler)."""

    def sample(self, logpsi: LogPsi, params: Any, state: Any, chain_ids: jax.Array,
               step: jax.Array, purpose: int = PURPOSE_STEP) -> tuple[Batch, Any]:
        """One step's samples and the new state (jittable; ``step`` may be traced)."""

    def acceptance(self, before: Any, after: Any, comm: Any) -> jax.Array:
        """Accepted / proposed moves between two states, all ranks (1 for an exact sampler)."""

    def samples_per_step(self, comm: Any) -> int:
        """Configurations in one step's estimates, all ranks (collective)."""


@runtime_checkable
class Optimizer(Protocol):
    """The parameter update from the centred, scaled Jacobian O and local energies eps."""

    jacobian_chunk: int
    clip_local_energy: float

    def init(self, params: Any) -> Any:
        """The optimizer state for ``params``."""

    def update(self, O: jax.Array, eps: jax.Array, state: Any, params: Any, comm: Any,
               n_rows_max: int) -> tuple[Any, Any, dict[str, jax.Array]]:
        """(updates, new state, info) for one step; collective."""


@runtime_checkable
class Observables(Protocol):
    """Quantities accumulated over the samples of the final measurement (e.g. a density).

    ``measure(setup, params, chains, n_steps)`` samples with the parameters fixed and returns
    ``(energy (mean, error, variance), n_samples, result)``; ``write(run_dir, result)`` stores
    the result and its figures (rank 0 only).
    """

    def measure(self, setup: Any, params: Any, chains: Any, n_steps: int
                ) -> tuple[tuple[float, float, float], int, Any]:
        """Energy, sample count and the accumulated result (collective)."""

    def write(self, run_dir: Any, result: Any) -> None:
        """Write the result into the run folder (rank 0)."""
