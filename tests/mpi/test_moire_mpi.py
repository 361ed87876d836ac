"""Moire VMC steps and observables on R ranks against the one-process run.

Passes under plain pytest (R = 1) and under ``mpirun -n R python -m pytest --with-mpi tests/mpi``.
"""

import jax
import numpy as np
import pytest

from hpcvmc import config as C
from hpcvmc import observables
from hpcvmc.build import build
from hpcvmc.parallel import SERIAL
from vmc_steps import steps_from_fresh_state

TINY = """
[system]
type = "moire"
sites = 3
n_electrons = 2
epsilon = 10.0
[model]
{model}
[sampler]
type = "gaussian"
n_chains = 8
n_samples = 64
sweeps = 2
burn_in = 20
[optimizer]
type = "minsr"
learning_rate = 0.05
[run]
steps = 3
seed = 5
"""


MODELS = {
    "slater": 'type = "slater"\ng_max = 1.0\njastrow = true',
    "psiformer": 'type = "psiformer"\nn_layers = 1\nwidth = 8\nn_heads = 2\nn_determinants = 2',
}


@pytest.mark.parametrize("model", list(MODELS))
def test_moire_steps_and_observables_equal_a_single_process(comm, model):
    """Energy history, parameters, log psi of the walkers and observables on R ranks = 1 rank."""
    cfg = C.loads(TINY.replace("{model}", MODELS[model]))
    results = []
    for c in (comm, SERIAL):
        setup = build(cfg, c)
        energies, params, chains = steps_from_fresh_state(setup, 3)
        log_psi = c.gather_rows(np.asarray(setup.logpsi(params, chains.x)))
        obs, _ = observables.measure(setup, params, chains, n_steps=2)
        results.append((energies, jax.flatten_util.ravel_pytree(params)[0], obs,
                        log_psi))
    (e_dist, p_dist, o_dist, l_dist), (e_serial, p_serial, o_serial, l_serial) = results
    np.testing.assert_allclose(e_dist, e_serial, rtol=1e-8)
    if comm.is_root:  # all chains in global order on rank 0
        np.testing.assert_allclose(l_dist, l_serial, rtol=1e-8)
    np.testing.assert_allclose(p_dist, p_serial, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(o_dist.density, o_serial.density, rtol=1e-8)
    np.testing.assert_allclose(o_dist.S_q, o_serial.S_q, rtol=1e-8)
    np.testing.assert_allclose(o_dist.energy_E0, o_serial.energy_E0, rtol=1e-8)
    assert o_dist.n_samples == o_serial.n_samples == 2 * 64
