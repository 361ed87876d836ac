"""Fixtures for the MPI tests.

These files run under plain ``pytest`` (one rank, serial communicator) and under
``mpirun -n R python -m pytest --with-mpi tests/mpi`` (R ranks); expected values are computed
from the rank and size, so the same assertions hold for every R.
"""

import pytest

from hpcvmc.parallel import Comm, init_distributed


@pytest.fixture(scope="session")
def comm() -> Comm:
    """The communicator of this pytest process (serial when not launched by MPI)."""
    return init_distributed(platform="cpu")
