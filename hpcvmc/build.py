"""Turn a validated Config into objects: the one registry-based place where strings become code.

Each ``[section] type`` maps to a builder here; adding a system, model, sampler or optimizer
means adding one entry to a table below (and its config class in :mod:`hpcvmc.config`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hpcvmc import config as C
from hpcvmc.optim.natural_gradient import NaturalGradient
from hpcvmc.parallel import Comm
from hpcvmc.continuum_sampling import gaussian_from_config
from hpcvmc.protocols import PURPOSE_PARAMS
from hpcvmc.sampling import exact_from_config, exchange_from_config
from hpcvmc.systems import lattice


def _rbm(cfg: C.RBMConfig, system: Any) -> nn.Module:
    from hpcvmc.models.rbm import RBM

    return RBM(alpha=cfg.alpha, dtype=cfg.dtype)


def _vit(cfg: C.ViTConfig, system: Any) -> nn.Module:
    from hpcvmc.models.vit import ViT

    return ViT(L=system.L, patch=cfg.patch, d_model=cfg.d_model, n_heads=cfg.n_heads,
               n_layers=cfg.n_layers, attention=cfg.attention, mlp_factor=cfg.mlp_factor,
               symmetrize=cfg.symmetrize, dtype=cfg.dtype)


def _slater(cfg: C.SlaterConfig, system: Any) -> nn.Module:
    from hpcvmc.models import slater

    return slater.from_config(cfg, system)


def _psiformer(cfg: C.PsiformerConfig, system: Any) -> nn.Module:
    from hpcvmc.models import psiformer

    return psiformer.from_config(cfg, system)


def _moire(cfg: C.MoireConfig) -> Any:
    from hpcvmc.systems import moire

    return moire.from_config(cfg)


SYSTEM_BUILDERS: dict[str, Callable[[Any], Any]] = {"j1j2": lattice.from_config, "moire": _moire}
MODEL_BUILDERS: dict[str, Callable[[Any, Any], nn.Module]] = {
    "rbm": _rbm, "vit": _vit, "slater": _slater, "psiformer": _psiformer,
}
SAMPLER_BUILDERS: dict[str, Callable[[Any, Any, int, Comm], Any]] = {
    "exchange": exchange_from_config, "exact": exact_from_config, "gaussian": gaussian_from_config,
}


def _schedule(initial: float, final: float | None, decay: str, steps: int) -> Callable | float:
    """A constant, or a decay from ``initial`` to ``final`` over ``steps`` (optax schedule)."""
    import optax

    if final is None or steps == 0:
        return initial
    if decay == "exponential":
        return optax.exponential_decay(initial, transition_steps=steps, decay_rate=final / initial)
    if decay == "cosine":
        return optax.cosine_decay_schedule(initial, decay_steps=steps, alpha=final / initial)
    return optax.linear_schedule(initial, final, transition_steps=steps)


def build_optimizer(cfg: C.MinSRConfig, steps: int) -> NaturalGradient:
    """The natural-gradient optimizer with its learning-rate and diagonal-shift schedules."""
    return NaturalGradient(
        learning_rate=_schedule(cfg.learning_rate, cfg.learning_rate_final, cfg.decay, steps),
        diag_shift=_schedule(cfg.diag_shift, cfg.diag_shift_final, cfg.decay, steps),
        method=cfg.method,
        spring_mu=cfg.momentum,
        max_update_norm=cfg.max_update_norm,
    )


@dataclass(frozen=True)
class Setup:
    """Everything a run is made of, built once.

    Attributes:
        config: the validated input.
        comm: the communicator.
        system: the physical system (local energy, configuration shape).
        model: the flax module.
        sampler: a Metropolis sampler (exchange, flip or Gaussian moves) or the ExactSampler.
        optimizer: the natural-gradient optimizer.
        chain_ids: global indices of this rank's chains (empty for the exact sampler).
    """

    config: C.Config
    comm: Comm
    system: Any
    model: nn.Module
    sampler: Any
    optimizer: NaturalGradient
    chain_ids: np.ndarray

    def logpsi(self, params: Any, x: jax.Array) -> jax.Array:
        """The model's log psi(params, x) for a batch x of shape (n, n_sites)."""
        return self.model.apply({"params": params}, x)

    def init_params(self) -> Any:
        """Parameters from the run seed (identical on every rank)."""
        key = jax.random.fold_in(jax.random.PRNGKey(self.config.run.seed), PURPOSE_PARAMS)
        dummy = jnp.ones((1,) + tuple(self.system.config_shape))
        return self.model.init(key, dummy)["params"]


def build(config: C.Config, comm: Comm) -> Setup:
    """Build system, model, sampler and optimizer from a validated Config."""
    C.check_ranks(config, comm.size)
    if config.system.type not in SYSTEM_BUILDERS:
        raise C.InputError(f"system.type = {config.system.type!r} has no VMC driver yet "
                           "(its references: hpcvmc reference)")
    system = SYSTEM_BUILDERS[config.system.type](config.system)
    model = MODEL_BUILDERS[config.model.type](config.model, system)
    terms = getattr(model, "n_terms", 1)
    if terms > 1:  # a symmetrized model runs its network |G| times per configuration
        system = dataclasses.replace(system, chunk_size=max(1, system.chunk_size // terms))
    sampler = SAMPLER_BUILDERS[config.sampler.type](config.sampler, system, config.run.seed, comm)
    per_rank = sampler.n_chains // comm.size
    chain_ids = np.arange(comm.rank * per_rank, (comm.rank + 1) * per_rank)
    optimizer = build_optimizer(config.optimizer, config.run.steps)
    return Setup(config, comm, system, model, sampler, optimizer, chain_ids)
