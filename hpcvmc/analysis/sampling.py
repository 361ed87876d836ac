"""Fresh samples from a saved run, for analyses that need configurations (attention maps)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hpcvmc import checkpoint as ckpt
from hpcvmc.build import Setup, build
from hpcvmc.config import Config
from hpcvmc.driver import restore
from hpcvmc.parallel import Comm
from hpcvmc.systems.lattice import space_group_with_spin_flip


def sample_from_checkpoint(config: Config, comm: Comm, path: Path,
                           n_samples: int) -> tuple[Setup, Any, np.ndarray]:
    """Restore a checkpoint and draw about ``n_samples`` configurations from its chains.

    The chains continue from their saved state with the random stream of step ``step``
    (the one the run would use next), so the samples are distributed as |psi|^2.

    Returns:
        (setup, params, x) with x of shape (n, *config_shape), n >= n_samples (all chains
        record the same number of samples).
    """
    setup = build(config, comm)
    state = restore(setup, ckpt.read(path), path)
    if state.chains is None:  # exact sampler: every configuration, drawn by weight
        batch, _ = setup.sampler.sample(setup.logpsi, state.params, None,
                                        jnp.asarray(setup.chain_ids), state.step)
        rng = np.random.default_rng(config.run.seed)
        weights = np.asarray(batch.weights[0])
        rows = rng.choice(len(weights), size=n_samples, p=weights / weights.sum())
        x = np.asarray(batch.x[0])[rows]
        if config.sampler.orbits:  # a uniform member of each drawn orbit: a random g of G
            perms, flips = space_group_with_spin_flip(config.system.L)
            g = rng.integers(len(flips), size=n_samples)
            x = flips[g, None] * np.take_along_axis(x, perms[g], axis=1)
        return setup, state.params, x
    chains, x = state.chains, []
    for k in range(-(-n_samples // (len(setup.chain_ids) * setup.sampler.samples_per_chain))):
        batch, chains = jax.jit(setup.sampler.sample, static_argnums=0)(
            setup.logpsi, state.params, chains, jnp.asarray(setup.chain_ids), state.step + k)
        x.append(np.asarray(batch.x).reshape((-1,) + np.asarray(batch.x).shape[2:]))
    return setup, state.params, np.concatenate(x)
