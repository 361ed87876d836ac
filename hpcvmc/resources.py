"""What a step costs in memory, checked against the memory there is before any work starts.

Peak memory of one VMC step per rank, in bytes, from the input (n_loc = samples on this rank:
``sampler.n_samples / R``, or the states the exact sampler sums over / R; N_s = all samples;
P = parameters; A = bytes of all the intermediate arrays of one forward pass of the network for
one configuration, from its traced computation (what a reverse pass keeps); c_E = ``system.chunk_size`` (divided by the terms of
a symmetrized model, as the build does), c_J = ``optimizer.chunk_size``):

- configurations: ``n_loc`` times the system config's ``memory_footprint``: lattice
  ``8 N + 32 n_bonds`` (the walkers, the spin products and the compacted list of connected
  configurations of every sample), moire ``16 N_e``;
- local energy (forward passes only, F = 2 x the largest intermediate array of one
  configuration, what is live at once): ``c_E F`` for the connected configurations of the
  lattice, ``c_E (2 + 2 N_e) F`` for the moire Laplacian (a forward Laplacian carries the
  gradient over the 2 N_e coordinates);
- Jacobian: ``c_J (2 A + 16 P)`` for one chunk of reverse-mode passes;
- O matrix: ``16 n_loc P`` (complex O as stacked real and imaginary rows, float64);
- solver: minSR ``3 (2 N_s)^2 8`` bytes (kernel, product and factor of the 2 N_s x 2 N_s
  system, see :mod:`hpcvmc.optim.minsr`), SR ``3 P^2 8``; ``optimizer.method = "auto"`` takes
  the smaller one, as the solver does.

The estimate is compared with the memory of one rank: ``HPCVMC_MEMORY`` (bytes per rank, with an
optional K, M, G or T suffix) when set, else the physical memory of this machine divided by the
ranks on it. Before the network is built only the configuration terms are checked (a lattice of
10^6 sites or 10^12 samples is refused in milliseconds); the full check follows the build.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Any

from hpcvmc.config import Config, InputError

MEMORY_VARIABLE = "HPCVMC_MEMORY"
LIVE_ARRAYS = 2
"""Arrays of the size of the largest intermediate taken as live at once in a forward pass."""
_SUFFIXES = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


@dataclass(frozen=True)
class Network:
    """Sizes of the built network for one configuration: parameters P, bytes A of all the
    intermediate arrays of a forward pass (what a reverse pass keeps), bytes F live at once in a
    forward-only pass (``LIVE_ARRAYS`` times the largest intermediate), and the terms of a
    symmetrized model (network calls per configuration)."""

    n_params: int
    activation_bytes: int
    forward_bytes: int
    n_terms: int = 1


def gib(n_bytes: float) -> str:
    """Bytes as GiB with 3 significant digits."""
    return f"{n_bytes / 2**30:.3g} GiB"


def parse_memory(text: str) -> int:
    """'64G' -> 68719476736; a plain number is bytes.

    Raises:
        InputError: naming ``HPCVMC_MEMORY``.
    """
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([KMGT]?)i?B?\s*", text, re.IGNORECASE)
    if not match or float(match[1]) <= 0:
        raise InputError(f"{MEMORY_VARIABLE} = {text!r}: expected bytes per rank, e.g. 16G")
    return int(float(match[1]) * _SUFFIXES[match[2].upper()])


def available_memory(ranks_on_node: int) -> tuple[int, str]:
    """Memory of one rank and where the number comes from."""
    if os.environ.get(MEMORY_VARIABLE):
        return parse_memory(os.environ[MEMORY_VARIABLE]), f"{MEMORY_VARIABLE}"
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return physical // ranks_on_node, (f"physical memory {gib(physical)} / {ranks_on_node} "
                                       f"rank(s); {MEMORY_VARIABLE} overrides")


def _samples(config: Config) -> tuple[int, str]:
    """All samples of one step and the key that sets them (a sampler config may say so with
    ``samples_per_step(system)``; else ``n_samples``)."""
    count = getattr(config.sampler, "samples_per_step", None)
    if count is not None:
        return count(config.system)
    return config.sampler.n_samples, "sampler.n_samples"


def step_memory(config: Config, n_ranks: int, network: Network | None = None
                ) -> list[tuple[str, str, float]]:
    """The terms of the module docstring as (what, key responsible, bytes per rank); without
    ``network`` only those that do not need it."""
    n_all, samples_key = _samples(config)
    n_loc = -(-n_all // n_ranks)
    system = config.system
    per_sample, connected, size_key = system_footprint(system)
    big_system = per_sample > 2**20  # one configuration's data above 1 MiB: the system is the cause
    terms = [("configurations", size_key if big_system else samples_key,
              float(n_loc) * per_sample)]
    if network is None:
        return terms
    P, A, F = network.n_params, network.activation_bytes, network.forward_bytes
    chunk_e = max(1, system.chunk_size // network.n_terms)
    chunk_j = min(getattr(config.optimizer, "chunk_size", n_loc), n_loc)
    n_kernel = 2 * n_all
    method = getattr(config.optimizer, "method", "auto")
    if method == "auto":
        method = "sr" if P < n_kernel else "minsr"
    solver = 24.0 * (P * P if method == "sr" else n_kernel * n_kernel)
    terms += [
        ("local energy", "system.chunk_size", float(min(chunk_e, n_loc)) * connected * F),
        ("Jacobian chunk", "optimizer.chunk_size", float(chunk_j) * (2 * A + 16 * P)),
        ("O matrix", samples_key, 16.0 * n_loc * P),
        (f"{method} solver", samples_key if method == "minsr" else "model size", solver),
    ]
    return terms


def check_memory(config: Config, n_ranks: int, ranks_on_node: int,
                 network: Network | None = None) -> float:
    """Refuse an input whose step cannot fit in the memory of a rank; returns the estimate.

    Raises:
        InputError: naming the key of the largest term, the estimate and the memory there is.
    """
    terms = step_memory(config, n_ranks, network)
    total = sum(b for _, _, b in terms)
    limit, source = available_memory(ranks_on_node)
    if total <= limit:
        return total
    what, key, _ = max(terms, key=lambda t: t[2])
    section, _, name = key.partition(".")
    value = getattr(getattr(config, section), name) if name else None
    shown = f"{key} = {value}" if value is not None else key
    parts = ", ".join(f"{w} {gib(b)}" for w, _, b in sorted(terms, key=lambda t: -t[2]))
    raise InputError(f"{shown}: one step needs about {gib(total)} per rank ({parts}; {what} "
                     f"largest), more than the {gib(limit)} available ({source})")


def system_footprint(system: Any) -> tuple[int, int, str]:
    """(bytes of one configuration's local-energy data, network passes per configuration in
    the local energy, the key that sets the system size), from the system config's
    ``memory_footprint`` when it declares one, else 8 bytes per site and one pass."""
    footprint = getattr(system, "memory_footprint", None)
    if footprint is not None:
        return footprint
    n_sites = int(getattr(system, "n_sites", 1))
    return 8 * n_sites, 1, "system.n_sites"


def network_size(model: Any, config_shape: tuple[int, ...]) -> Network:
    """P and A of a flax model, from its shapes and the traced forward pass of one
    configuration (nothing is computed: ``jax.eval_shape`` and ``jax.make_jaxpr``)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    x = jax.ShapeDtypeStruct((1,) + tuple(config_shape), jnp.float64)
    params = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x)["params"], x)
    n_params = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(params))
    jaxpr = jax.make_jaxpr(lambda p, x: model.apply({"params": p}, x))(params, x)
    total, largest = _intermediate_bytes(jaxpr.jaxpr)
    return Network(n_params, total, LIVE_ARRAYS * largest, int(getattr(model, "n_terms", 1)))


def _intermediate_bytes(jaxpr: Any) -> tuple[int, int]:
    """(sum, largest) of the sizes of the arrays a jaxpr and the jaxprs inside it produce."""
    total, largest = 0, 0
    for eqn in jaxpr.eqns:
        for var in eqn.outvars:
            aval = var.aval
            if hasattr(aval, "shape") and hasattr(aval, "dtype"):
                size = math.prod(aval.shape) * aval.dtype.itemsize
                total, largest = total + size, max(largest, size)
        for param in eqn.params.values():
            for inner in param if isinstance(param, (list, tuple)) else (param,):
                inner = getattr(inner, "jaxpr", inner)  # a closed jaxpr holds an open one
                if hasattr(inner, "eqns"):
                    inner_total, inner_largest = _intermediate_bytes(inner)
                    total, largest = total + inner_total, max(largest, inner_largest)
    return total, largest


def check_before_build(config: Config, n_ranks: int, ranks_on_node: int) -> None:
    """The check that needs no network: the configuration memory."""
    check_memory(config, n_ranks, ranks_on_node)


def check_network(config: Config, n_ranks: int, ranks_on_node: int) -> float:
    """The full memory check with the network built from the input (no parameters computed);
    returns the estimate in bytes."""
    from hpcvmc.build import system_and_model

    system, model = system_and_model(config)
    network = network_size(model, tuple(system.config_shape))
    return check_memory(config, n_ranks, ranks_on_node, network)
