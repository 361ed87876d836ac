"""Moire VMC steps and observables on R ranks against the one-process run.

Passes under plain pytest (R = 1) and under ``mpirun -n R python -m pytest --with-mpi tests/mpi``.
"""

import jax
import numpy as np

from hpcvmc import config as C
from hpcvmc import observables
from hpcvmc.build import build
from hpcvmc.parallel import SERIAL, Comm
from vmc_steps import serial_reference, steps_from_fresh_state

TINY = """
[system]
type = "moire"
sites = 3
n_electrons = 2
epsilon = 10.0
[model]
type = "slater"
g_max = 1.0
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


def test_moire_steps_and_observables_equal_a_single_process(comm):
    """Energy history, parameters, log psi of the walkers and observables on R ranks = 1 rank.

    One model stands for all: a model has no communication (a walker's log psi depends on that
    walker alone, which tests/test_continuum_sampling.py checks for the chains), so what the rank
    count can change is the sampler, the local energy, the update and the observables, the same
    for the Psiformer as for the Slater determinant used here (without a Jastrow factor, which
    costs compile time and adds no communication).
    """
    cfg = C.loads(TINY)

    def run(c: Comm) -> dict:
        setup = build(cfg, c)
        energies, params, chains = steps_from_fresh_state(setup, 3)
        log_psi = c.gather_rows(np.asarray(setup.logpsi(params, chains.x)))
        obs, _ = observables.measure(setup, params, chains, n_steps=2)
        return dict(energies=energies, params=np.asarray(jax.flatten_util.ravel_pytree(params)[0]),
                    log_psi=log_psi, density=np.asarray(obs.density), S_q=np.asarray(obs.S_q),
                    energy_E0=np.asarray(obs.energy_E0), n_samples=obs.n_samples)

    dist = run(comm)
    serial = serial_reference(comm, lambda: run(SERIAL))
    np.testing.assert_allclose(dist["energies"], serial["energies"], rtol=1e-8)
    if comm.is_root:  # all chains in global order on rank 0
        np.testing.assert_allclose(dist["log_psi"], serial["log_psi"], rtol=1e-8)
    np.testing.assert_allclose(dist["params"], serial["params"], rtol=1e-8, atol=1e-12)
    for name in ("density", "S_q", "energy_E0"):
        np.testing.assert_allclose(dist[name], serial[name], rtol=1e-8, err_msg=name)
    assert dist["n_samples"] == serial["n_samples"] == 2 * 64
