"""The few VMC steps from a fresh state that the rank-count comparisons repeat."""

from typing import Any

import jax.numpy as jnp
import numpy as np

from hpcvmc.build import Setup
from hpcvmc.driver import fresh_state, make_step


def steps_from_fresh_state(setup: Setup, n_steps: int) -> tuple[np.ndarray, Any, Any]:
    """Run ``n_steps`` jitted steps from step 0; returns (energy of each step, parameters after
    the last step, this rank's chains after it)."""
    state = fresh_state(setup)
    step = make_step(setup)
    params, opt, chains, energies = state.params, state.opt_state, state.chains, []
    for k in range(n_steps):
        out = step(params, opt, chains, jnp.asarray(k))
        params, opt, chains = out.params, out.opt_state, out.chains
        energies.append(complex(out.stats.mean))
    return np.array(energies), params, chains
