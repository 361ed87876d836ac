"""bench/vs_netket.py's NetKet driver takes the same step as hpcvmc from the same samples.

The benchmark's energy-trajectory comparison is only meaningful if NetKet runs at hpcvmc's
settings: learning rate / 8, the diagonal-shift schedule and SPRING momentum. Two steps from
identical parameters and samples (random configurations written into NetKet's MCState as its
samples) are compared; the second step is the first one that SPRING's momentum changes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

pytest.importorskip("netket")
sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))
import common  # noqa: E402
from vs_netket import netket_driver  # noqa: E402

from hpcvmc.optim.jacobian import centred_scaled, jacobian  # noqa: E402
from hpcvmc.parallel import SERIAL  # noqa: E402

JOB = str(Path(__file__).parents[1] / "jobs" / "quickstart.toml")
SMALL = ["model.d_model=8", "model.n_heads=2", "model.n_layers=1", "sampler.n_chains=8",
         "sampler.n_samples=64", "optimizer.momentum=0.9",
         "run.steps=20"]


def random_configurations(key: jax.Array, n: int, n_sites: int) -> jax.Array:
    """n random Sz = 0 configurations of +-1 (the update needs samples, not |psi|^2 ones)."""
    base = jnp.where(jnp.arange(n_sites) < n_sites // 2, 1.0, -1.0)
    return jax.vmap(lambda k: jax.random.permutation(k, base))(jax.random.split(key, n))


def test_netket_driver_steps_equal_hpcvmc_steps_with_spring() -> None:
    setup = common.build_setup(JOB, SMALL, SERIAL)
    cfg, n_sites = setup.config.sampler, setup.system.n_sites
    params = setup.init_params()
    opt_state = setup.optimizer.init(params)
    first = random_configurations(jax.random.PRNGKey(0), cfg.n_chains, n_sites)
    driver, _ = netket_driver(setup, params, first, "false")
    local_energy = jax.jit(lambda p, x: setup.system.local_energy(setup.logpsi, p, x))
    for step in range(2):
        x = random_configurations(jax.random.PRNGKey(1 + step), cfg.n_samples, n_sites)
        O, eps = centred_scaled(jacobian(setup.logpsi, params, x, 64),
                                local_energy(params, x), SERIAL)
        updates, opt_state, info = setup.optimizer.update(O, eps, opt_state, params, SERIAL)
        ours = np.asarray(ravel_pytree(updates)[0])

        driver.state.parameters = params
        samples = x.reshape(cfg.n_chains, -1, n_sites)  # NetKet: (chains, chain length, sites)
        driver.state._samples = samples.astype(driver.state.sampler_state.σ.dtype)
        driver._step_count = step
        _, dp = driver.compute_loss_and_update()
        theirs = -float(info["learning_rate"]) / 8 * np.asarray(ravel_pytree(dp)[0])

        assert np.linalg.norm(ours) > 0
        np.testing.assert_allclose(theirs, ours, rtol=1e-6, atol=1e-8 * np.abs(ours).max())
        params = optax.apply_updates(params, updates)
