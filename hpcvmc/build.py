"""Turn a validated Config into objects: every ``[section] type`` through the registry.

:func:`build` looks each section's component up in :mod:`hpcvmc.registry` (built-in or
plug-in) and calls its ``build``; nothing here knows a particular system, model, sampler or
optimizer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hpcvmc import config as C
from hpcvmc import registry
from hpcvmc.parallel import Comm
from hpcvmc.protocols import PURPOSE_PARAMS, Optimizer, Sampler, System


def component(section: str, cfg: Any) -> registry.Component:
    """The registered component of a validated section (its plug-in module is loaded already)."""
    return registry.lookup(section, cfg.type)


@dataclass(frozen=True)
class Setup:
    """Everything a run is made of, built once.

    Attributes:
        config: the validated input.
        comm: the communicator.
        system: the physical system (:class:`hpcvmc.protocols.System`).
        model: the flax module returning log psi.
        sampler: the sampler (:class:`hpcvmc.protocols.Sampler`).
        optimizer: the optimizer (:class:`hpcvmc.protocols.Optimizer`).
        chain_ids: global indices of this rank's chains (empty for an exact sampler).
    """

    config: C.Config
    comm: Comm
    system: System
    model: nn.Module
    sampler: Sampler
    optimizer: Optimizer
    chain_ids: np.ndarray

    def logpsi(self, params: Any, x: jax.Array) -> jax.Array:
        """The model's log psi(params, x) for a batch x of shape (n, n_sites)."""
        return self.model.apply({"params": params}, x)

    def init_params(self) -> Any:
        """Parameters from the run seed (identical on every rank).

        The initialization is compiled as one program: run op by op, flax's initializers and the
        model's first forward pass compile one small program per operation (about a hundred,
        3-5 s of a run's start-up on one core, measured on the quickstart and 27-site jobs).
        """
        key = jax.random.fold_in(jax.random.PRNGKey(self.config.run.seed), PURPOSE_PARAMS)
        dummy = jnp.ones((1,) + tuple(self.system.config_shape))
        return self._compiled_init(key, dummy)["params"]

    @cached_property
    def _compiled_init(self) -> Callable[..., Any]:
        """model.init, jitted once per Setup (a later init_params call skips the tracing)."""
        return jax.jit(self.model.init)


def system_and_model(config: C.Config) -> tuple[System, nn.Module]:
    """The system and the model of a validated Config (no parameters are computed). A model
    that runs its network ``n_terms`` times per configuration (a symmetrized one) divides the
    system's ``chunk_size`` by that number."""
    system = component("system", config.system).build(config.system)
    model = component("model", config.model).build(config.model, system)
    terms = getattr(model, "n_terms", 1)
    if terms > 1:
        system = dataclasses.replace(system, chunk_size=max(1, system.chunk_size // terms))
    return system, model


def build(config: C.Config, comm: Comm) -> Setup:
    """Build system, model, sampler and optimizer from a validated Config."""
    C.check_ranks(config, comm.size)
    system, model = system_and_model(config)
    sampler = component("sampler", config.sampler).build(config.sampler, system, config.run.seed, comm)
    per_rank = sampler.n_chains // comm.size
    chain_ids = np.arange(comm.rank * per_rank, (comm.rank + 1) * per_rank)
    optimizer = component("optimizer", config.optimizer).build(config.optimizer, config.run.steps)
    return Setup(config, comm, system, model, sampler, optimizer, chain_ids)
