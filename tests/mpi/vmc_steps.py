"""What the rank-count comparisons share: the few VMC steps from a fresh state, and the
one-process reference computed once, on rank 0."""

import time
from typing import Any, Callable, TypeVar

import jax.numpy as jnp
import numpy as np

from hpcvmc.build import Setup
from hpcvmc.driver import fresh_state, make_step
from hpcvmc.parallel import Comm

T = TypeVar("T")


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


def serial_reference(comm: Comm, compute: Callable[[], T]) -> T:
    """``compute()`` (a one-process run, picklable result) on rank 0, broadcast to every rank.

    Every rank would compute the same serial reference; computing it once halves the CPU of a
    comparison. The other ranks sleep meanwhile instead of waiting in MPI_Bcast, whose MPICH
    progress loop spins a core that rank 0 needs on an oversubscribed test machine. A failure
    on rank 0 is raised on every rank, so that no rank waits for a broadcast that never comes.
    """
    if comm.size == 1:
        return compute()
    error: Exception | None = None
    message: tuple[bool, Any] = (True, None)
    if comm.is_root:
        try:
            message = (True, compute())
        except Exception as exc:  # raised below, once the other ranks have heard of it
            error, message = exc, (False, repr(exc))
    arrived = comm.mpi_comm.Ibarrier()
    while not arrived.Test():
        time.sleep(0.05)
    ok, value = comm.mpi_comm.bcast(message, root=0)
    if error is not None:
        raise error
    if not ok:
        raise RuntimeError(f"the one-process reference failed on rank 0: {value}")
    return value
