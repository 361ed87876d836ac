"""Any NetKet discrete operator on spins 1/2 as an hpcvmc system (``[system] type = "netket"``).

The input names a function, ``operator = "module:function"``, that returns a NetKet discrete
operator H on ``nk.hilbert.Spin(0.5, N)``, with or without ``total_sz``; the function is called
with the ``kwargs`` table of the input as keyword arguments. ``module`` is imported from the
Python path, or else read from ``module.py`` in the folder of the input file.

Configurations: hpcvmc's are float arrays of +-1 (spin up = +1). NetKet's Spin(0.5) local states
are the same numbers with the same meaning (``sigmaz`` is +1 on a site whose entry is +1, and
``total_sz = sum(x) / 2``), so a configuration passes between the two unchanged.

Local energy, from the connected elements of H (NetKet's jax operator form, jittable):

    E_L(x) = sum_{x'} <x|H|x'> psi(x') / psi(x)
           = sum_k H_k(x) exp(log psi(x'_k) - log psi(x)),

where ``get_conn_padded(x)`` gives the configurations x'_k and elements H_k(x) (padded with
zeros to the operator's ``max_conn_size``). The diagonal elements (x'_k = x) enter with ratio 1;
only the off-diagonal, non-zero elements are passed to the network, compacted into one list.
Energies are totals of the whole system in the unit of the operator.
"""

from __future__ import annotations

import functools
import itertools
import json
from dataclasses import dataclass
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from hpcvmc import registry
from hpcvmc.registry import Component, register
from hpcvmc.config import REQUIRED, option
from hpcvmc.errors import InputError
from hpcvmc.progress import format_energy
from hpcvmc.protocols import LogPsi
from hpcvmc.chunking import map_in_chunks

MAX_LANCZOS_STATES = 1 << 22
"""Largest Hilbert space (sector) for ``hpcvmc exact`` (NetKet's Lanczos on a sparse matrix)."""

PROBE_STATES = 256
"""Random configurations whose connected elements give :meth:`NetKetSystem.exchange_pairs`."""


def _operator(spec: str, kwargs_json: str) -> Any:
    """Call the user's function and check its result (see :func:`load_operator`)."""
    import netket as nk

    function = registry.load_object(spec, "system.operator")
    try:
        op = function(**json.loads(kwargs_json))
    except Exception as exc:  # noqa: BLE001 - any failure of user code is reported in one line
        raise InputError(f"system.operator = {spec!r}: calling it failed: "
                         f"{type(exc).__name__}: {exc}") from None
    if not isinstance(op, nk.operator.DiscreteOperator):
        raise InputError(f"system.operator = {spec!r} returned {type(op).__name__}, not a "
                         "NetKet discrete operator")
    if not isinstance(op, nk.operator.DiscreteJaxOperator):
        try:
            op = op.to_jax_operator()
        except Exception as exc:  # noqa: BLE001 - NetKet raises various types here
            raise InputError(f"system.operator = {spec!r}: {type(op).__name__} has no jax form "
                             f"(to_jax_operator: {exc})") from None
    hilbert = op.hilbert
    if not (isinstance(hilbert, nk.hilbert.Spin) and sorted(hilbert.local_states) == [-1, 1]):
        raise InputError(f"system.operator = {spec!r}: the Hilbert space {hilbert} is not "
                         "nk.hilbert.Spin(0.5, N)")
    if hilbert.constrained and not (isinstance(hilbert.constraint,
                                               nk.hilbert.constraint.SumConstraint)
                                    and hilbert.constraint.sum_value == 0):
        raise InputError(f"system.operator = {spec!r}: the constraint {hilbert.constraint} is not "
                         "supported (free, or total_sz = 0)")
    return op


@functools.lru_cache(maxsize=8)
def _cached_operator(spec: str, kwargs_json: str) -> Any:
    return _operator(spec, kwargs_json)


def load_operator(spec: str, kwargs: dict[str, Any] | None) -> Any:
    """The NetKet jax operator that ``spec`` = "module:function" returns for ``kwargs``.

    Cached per (spec, kwargs): the function runs once per process.

    Raises:
        InputError: naming ``system.operator``: the module or function cannot be loaded, the
            call fails, or the result is not a jax-convertible discrete operator on spins 1/2
            (free or total_sz = 0).
    """
    return _cached_operator(spec, json.dumps(kwargs or {}, sort_keys=True))


@dataclass(frozen=True, kw_only=True)
class NetKetSystemConfig:
    """A NetKet discrete operator on spins 1/2, from a user function (the NetKet bridge)."""

    type: str = option("netket", "System type.")
    operator: str = option(
        REQUIRED, "'module:function' returning a NetKet discrete operator on "
        "nk.hilbert.Spin(0.5, N), free or with total_sz = 0 (module on the Python path or "
        "module.py next to the input file)."
    )
    kwargs: dict[str, Any] | None = option(
        None, "Keyword arguments of the operator function."
    )
    chunk_size: int = option(
        256, "Configurations per network call in the local energy (bounds the memory).",
        positive=True, numerical=True,
    )

    exact_solver: ClassVar[str] = "hpcvmc.systems.netket_bridge:exact_energy"
    """``hpcvmc exact``: NetKet's Lanczos on the operator."""

    def validate(self, cfg: Any) -> None:
        """Load the operator (errors name system.operator)."""
        load_operator(self.operator, self.kwargs)

    @property
    def n_sites(self) -> int:
        """Number of spins N."""
        return load_operator(self.operator, self.kwargs).hilbert.size

    @property
    def n_states(self) -> int:
        """Number of basis states of the Hilbert space (the total_sz = 0 sector if constrained)."""
        return load_operator(self.operator, self.kwargs).hilbert.n_states

    @property
    def memory_footprint(self) -> tuple[int, int, str]:
        """Bytes of one sample's local-energy data: the K = max_conn_size connected
        configurations twice (NetKet's and the compacted ones) and their elements and indices,
        16 K N + 32 K + 8 N; one network pass per element; the key that sets the size
        (:mod:`hpcvmc.resources`)."""
        op = load_operator(self.operator, self.kwargs)
        k, n = op.max_conn_size, op.hilbert.size
        return 16 * k * n + 32 * k + 8 * n, 1, "system.operator"

    @property
    def capabilities(self) -> frozenset[str]:
        """{"spins"}, plus "fixed_magnetization" (total_sz = 0) and "enumerable" (NetKet can
        index the space; the exact sampler checks :attr:`n_states` against its limit)."""
        hilbert = load_operator(self.operator, self.kwargs).hilbert
        words = {"spins"}
        if hilbert.constrained:
            words.add("fixed_magnetization")
        if hilbert.is_indexable:
            words.add("enumerable")
        return frozenset(words)


@dataclass(frozen=True, eq=False)
class NetKetSystem:
    """The System of a NetKet operator.

    Attributes:
        operator: the NetKet jax operator (``DiscreteJaxOperator``) H.
        chunk_size: configurations per network call in the local energy.
    """

    operator: Any
    chunk_size: int = 256

    energy_unit = "operator unit (total of the system)"

    def __post_init__(self) -> None:
        # NetKet's jax operators build their lookup tables on the first get_conn_padded; done
        # here, outside any jax trace, so that no traced table is cached in the operator.
        self.operator.get_conn_padded(self.operator.hilbert.random_state(jax.random.PRNGKey(0), 1))

    @property
    def n_sites(self) -> int:
        """Number of spins N."""
        return self.operator.hilbert.size

    @property
    def config_shape(self) -> tuple[int, ...]:
        """Shape of one configuration: (N,) spins +-1."""
        return (self.n_sites,)

    def progress_energy(self, mean: float, error: float) -> str:
        """The energy of the progress line: the total."""
        return format_energy(mean, error)

    def format_energy(self, mean: float, error: float) -> str:
        """'E = <total> +- <err> total = <per site> +- <err> per site'."""
        n = self.n_sites
        return (f"E = {mean:.8f} +- {error:.2e} total"
                f" = {mean / n:.8f} +- {error / n:.2e} per site")

    def local_energy(self, logpsi: LogPsi, params: Any, x: jax.Array) -> jax.Array:
        """E_L(x) = sum_k H_k(x) psi(x'_k) / psi(x) (module docstring), in blocks of
        ``chunk_size`` configurations.

        Args:
            logpsi: the model's log psi(params, x).
            params: model parameters.
            x: configurations, shape (n, N), entries +-1.

        Returns:
            Complex local energies, shape (n,), totals in the operator's unit.
        """
        return map_in_chunks(lambda xc: self._local_energy_block(logpsi, params, xc), x,
                             self.chunk_size)

    def _local_energy_block(self, logpsi: LogPsi, params: Any, x: jax.Array) -> jax.Array:
        """E_L of one block of n <= chunk_size configurations; the m off-diagonal connected
        configurations go through the network in ceil(m / chunk_size) calls."""
        n, n_sites = x.shape
        x_conn, mels = self.operator.get_conn_padded(x)  # (n, K, N), (n, K)
        moved = jnp.any(x_conn != x[:, None, :], axis=-1)
        diagonal = jnp.sum(jnp.where(moved, 0.0, mels), axis=1)
        off = moved & (mels != 0)
        count = jnp.sum(off)
        flat = jnp.nonzero(off.reshape(-1), size=off.size, fill_value=0)[0]
        configs = x_conn.reshape(-1, n_sites)[flat]
        log_conn = _leading_logpsi(logpsi, params, configs, count, self.chunk_size)
        rows = flat // mels.shape[1]
        used = jnp.arange(flat.shape[0]) < count
        ratio = jnp.where(used, jnp.exp(log_conn - logpsi(params, x)[rows]), 0.0)
        off_diagonal = jax.ops.segment_sum(mels.reshape(-1)[flat] * ratio, rows, num_segments=n)
        return diagonal + off_diagonal

    def exchange_pairs(self) -> np.ndarray:
        """Site pairs (i < j) that H exchanges: every pair of sites changed together by a
        connected element of :data:`PROBE_STATES` random configurations (fixed seed); all pairs
        when none is found. A two-site exchange term is missed only if its two spins are
        parallel in every probe (probability about 2^-256).

        Returns:
            Int array (n_pairs, 2).
        """
        hilbert = self.operator.hilbert
        probe = hilbert.random_state(jax.random.PRNGKey(0), PROBE_STATES)
        x_conn, mels = self.operator.get_conn_padded(probe)
        changed = np.asarray((x_conn != probe[:, None, :]) & (mels != 0)[..., None])
        site_sets = {tuple(np.flatnonzero(c)) for c in changed.reshape(-1, self.n_sites)}
        pairs = {pair for sites in site_sets for pair in itertools.combinations(sites, 2)}
        if not pairs:
            pairs = set(itertools.combinations(range(self.n_sites), 2))
        return np.array(sorted(pairs), dtype=np.int32).reshape(-1, 2)

    def all_configurations(self) -> np.ndarray:
        """Every basis state of the Hilbert space (sector), float +-1, shape (n_states, N)."""
        return np.asarray(self.operator.hilbert.all_states(), dtype=np.float64)

    def exact_energy(self) -> float:
        """Ground-state energy by NetKet's Lanczos (``nk.exact.lanczos_ed``, k = 1).

        Raises:
            InputError: the space has more than :data:`MAX_LANCZOS_STATES` states.
        """
        import netket as nk

        n_states = self.operator.hilbert.n_states
        if n_states > MAX_LANCZOS_STATES:
            raise InputError(f"system.operator: {n_states} states; hpcvmc exact is limited to "
                             f"{MAX_LANCZOS_STATES}")
        return float(nk.exact.lanczos_ed(self.operator, k=1)[0])


def _leading_logpsi(logpsi: LogPsi, params: Any, configs: jax.Array, count: jax.Array,
                    batch: int) -> jax.Array:
    """log psi of ``configs[:count]`` in ceil(count / batch) calls on ``batch`` rows each (a
    ``fori_loop`` with a traced trip count); entries from ``count`` on are left at 0."""
    m = configs.shape[0]
    batch = min(batch, m)
    n_batches = -(-m // batch)
    configs = jnp.pad(configs, ((0, n_batches * batch - m), (0, 0)), mode="edge")
    dtype = jax.eval_shape(lambda c: logpsi(params, c), configs[:batch]).dtype
    out = jnp.zeros(n_batches * batch, dtype)

    def body(k: jax.Array, out: jax.Array) -> jax.Array:
        block = jax.lax.dynamic_slice_in_dim(configs, k * batch, batch)
        return jax.lax.dynamic_update_slice_in_dim(out, logpsi(params, block), k * batch, 0)

    return jax.lax.fori_loop(0, (count + batch - 1) // batch, body, out)[:m]


def build(cfg: NetKetSystemConfig) -> NetKetSystem:
    """The system of a validated ``[system] type = "netket"`` section."""
    return NetKetSystem(load_operator(cfg.operator, cfg.kwargs), chunk_size=cfg.chunk_size)


def exact_energy(cfg: NetKetSystemConfig, allow_known: bool = False) -> tuple[float, str]:
    """(ground-state energy, source) of the section's operator by NetKet's Lanczos
    (``allow_known`` is unused: there are no published values to fall back on)."""
    sector = ", total_sz = 0" if "fixed_magnetization" in cfg.capabilities else ""
    return build(cfg).exact_energy(), f"NetKet Lanczos (nk.exact.lanczos_ed){sector}"


register(Component("system", "netket", NetKetSystemConfig, build))
