"""Collectives, statistics and whole VMC steps on R ranks against numpy / one process.

Every rank builds the same global data from a fixed seed and keeps its own share, so expected
values are computed from rank and size; the file passes under plain pytest (R = 1) and under
``mpirun -n R python -m pytest --with-mpi tests/mpi``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hpcvmc import config as C
from hpcvmc.build import build
from hpcvmc.driver import samples_per_step
from hpcvmc.parallel import SERIAL, Comm
from hpcvmc.stats import summarize
from vmc_steps import serial_reference, steps_from_fresh_state


def _global(shape, seed=0, complex_=False):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    return x + 1j * rng.standard_normal(shape) if complex_ else x


def test_collectives_match_numpy(comm):
    data = _global((comm.size, 3, 4))
    mine = jnp.asarray(data[comm.rank])
    tree = {"a": mine, "b": (mine[0], 2.0 * mine)}
    summed = jax.jit(comm.sum)(tree)
    np.testing.assert_allclose(summed["a"], data.sum(0), rtol=1e-14)
    np.testing.assert_allclose(summed["b"][1], 2 * data.sum(0), rtol=1e-14)
    np.testing.assert_allclose(jax.jit(comm.mean)(mine), data.mean(0), rtol=1e-14)
    np.testing.assert_array_equal(jax.jit(comm.max)(mine), data.max(0))
    np.testing.assert_array_equal(jax.jit(comm.allgather)(mine), data)
    blocks = _global((comm.size, comm.size, 2), seed=1)  # blocks[s, r] goes from s to r
    np.testing.assert_array_equal(jax.jit(comm.alltoall)(jnp.asarray(blocks[comm.rank])),
                                  blocks[:, comm.rank])
    complex_data = _global((comm.size, 5), complex_=True)
    np.testing.assert_allclose(comm.sum(jnp.asarray(complex_data[comm.rank])),
                               complex_data.sum(0), rtol=1e-14)
    rows = comm.gather_rows(np.asarray(data[comm.rank]))
    if comm.is_root:
        np.testing.assert_array_equal(rows, data.reshape(-1, 4))
    assert comm.any(comm.rank == comm.size - 1)
    assert not comm.any(False)


def test_statistics_do_not_depend_on_rank_count(comm):
    n_chains = 4 * comm.size
    values = _global((n_chains, 32), seed=2) + 0.3 * _global((n_chains, 32), seed=3, complex_=True)
    share = n_chains // comm.size
    mine = jnp.asarray(values[comm.rank * share:(comm.rank + 1) * share])
    distributed, serial = summarize(mine, comm), summarize(jnp.asarray(values), SERIAL)
    for a, b in zip(distributed, serial):
        np.testing.assert_allclose(a, b, rtol=1e-12)


TINY = """
[system]
type = "j1j2"
L = 4
J2 = 0.5
{model}
[sampler]
type = "{sampler}"
{sampler_keys}
[optimizer]
type = "minsr"
learning_rate = 0.05
[run]
steps = 3
seed = 11
"""


RBM = '[model]\ntype = "rbm"\nalpha = 1'
PROJECTED_VIT = """[model]
type = "vit"
patch = 1
d_model = 4
n_heads = 1
n_layers = 1
symmetrize = "full"
"""


# The exchange sampler without deduplication is compared on 1 and 2 ranks by the end-to-end
# runs of tests/test_mpi.py (test_elastic_resume_across_rank_counts and others).
@pytest.mark.parametrize("model,sampler,keys,n_samples", [
    (RBM, "exact", "", 12870),
    (PROJECTED_VIT, "exact", "orbits = true", 107),
    (PROJECTED_VIT, "exchange",
     'n_chains = 8\nn_samples = 64\nburn_in = 5\ndeduplicate = "orbits"', 64),
], ids=["rbm-exact", "vit-orbits", "vit-exchange-deduplicated"])
def test_vmc_steps_equal_a_single_process(comm, model, sampler, keys, n_samples):
    """Energies and parameters after a few steps on R ranks equal the one-process run (the 107
    symmetry orbits of the orbit sum do not divide evenly: padding rows on some ranks, which the
    logged sample count leaves out; deduplicated samples are grouped on each rank, so every rank
    has its own number of classes and zero-weight rows)."""
    cfg = C.loads(TINY.format(model=model, sampler=sampler, sampler_keys=keys))

    def run(c: Comm) -> tuple[np.ndarray, np.ndarray]:
        setup = build(cfg, c)
        assert samples_per_step(setup) == n_samples
        energies, params, _ = steps_from_fresh_state(setup, 3)
        return energies, np.asarray(jax.flatten_util.ravel_pytree(params)[0])

    e_dist, p_dist = run(comm)
    e_serial, p_serial = serial_reference(comm, lambda: run(SERIAL))
    np.testing.assert_allclose(e_dist, e_serial, rtol=1e-10)
    np.testing.assert_allclose(p_dist, p_serial, rtol=1e-8, atol=1e-12)
