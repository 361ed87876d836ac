"""The MPI context of a run: ranks, device binding and jittable collectives.

This is the only module that talks to MPI. Everything else receives a :class:`Comm` and calls
its collectives, which are pytree-aware, usable inside ``jax.jit`` (through mpi4jax >= 0.8, which
has no tokens) and no-ops on a single process. A serial run needs neither ``mpirun`` nor an MPI
library: :func:`init_distributed` only imports mpi4py when the process was started by an MPI
launcher (or when asked to).

Nothing happens at import time. The CLI calls :func:`init_distributed` once, *before* JAX
initializes its backend, so that each rank can bind to one GPU (its local rank on the node).
"""

from __future__ import annotations

import os
import sys
import traceback
from dataclasses import dataclass, field
from collections.abc import Iterable
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np

Tree = TypeVar("Tree")

# Environment variables set by MPI launchers and Slurm: (world size, world rank, local rank).
_LAUNCHER_VARIABLES = (
    ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK"),  # Open MPI
    ("PMI_SIZE", "PMI_RANK", "MPI_LOCALRANKID"),  # MPICH / Hydra, Intel MPI
    ("PMIX_SIZE", "PMIX_RANK", "PMIX_LOCAL_RANK"),  # PMIx launchers
    ("SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID"),  # srun
)


def _first_set(names: Iterable[str]) -> int | None:
    """The value of the first of ``names`` set in the environment, or None when none is."""
    for name in names:
        if name in os.environ:
            return int(os.environ[name])
    return None


def _world_launchers() -> list[tuple[str, str, str]]:
    """The rows of ``_LAUNCHER_VARIABLES`` whose world size and rank count.

    Slurm's count only when ``SLURM_STEP_ID`` is set too: inside the batch script itself (no
    srun step yet) there is a single process.
    """
    return [row for row in _LAUNCHER_VARIABLES
            if row[0] != "SLURM_NTASKS" or "SLURM_STEP_ID" in os.environ]


def launcher_world_size() -> int:
    """Number of ranks announced by the launcher's environment (1 when not launched by MPI)."""
    size = _first_set(size_var for size_var, _, _ in _world_launchers())
    return 1 if size is None else size


def launcher_rank() -> int:
    """This process's world rank as the launcher's environment announces it (0 without one);
    known before MPI is initialized, so that only rank 0 prints an early input error."""
    if launcher_world_size() == 1:
        return 0
    rank = _first_set(rank_var for _, rank_var, _ in _world_launchers())
    return 0 if rank is None else rank


def launcher_local_rank() -> int | None:
    """The node-local rank announced by the launcher, or None when no launcher says."""
    return _first_set(local_var for _, _, local_var in _LAUNCHER_VARIABLES)


@dataclass(frozen=True)
class Comm:
    """The communicator of a run and its collectives.

    The reductions (``sum``, ``mean``, ``max``, ``allgather``, ``alltoall``) accept pytrees of
    arrays, work inside ``jax.jit`` and return identical results on every rank. With one rank
    they return their input (``allgather`` adds a leading axis of length 1).

    Attributes:
        rank: this process's rank in the world communicator.
        size: number of ranks.
        local_rank: rank among the processes on this node (selects the GPU).
        mpi_comm: the mpi4py world communicator, or None for a serial run without MPI.
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    mpi_comm: Any = field(default=None, repr=False)
    _jax_comm: Any = field(default=None, repr=False)

    @property
    def is_root(self) -> bool:
        """True on rank 0, the only rank that prints and writes files."""
        return self.rank == 0

    # ----------------------------------------------------------------------------------------
    # Jittable collectives (mpi4jax). Each maps leaf-wise over a pytree.
    # ----------------------------------------------------------------------------------------
    def _allreduce(self, tree: Tree, op_name: str) -> Tree:
        if self.size == 1:
            return tree
        import mpi4jax
        from mpi4py import MPI

        op = getattr(MPI, op_name)
        return jax.tree_util.tree_map(
            lambda x: mpi4jax.allreduce(jnp.asarray(x), op=op, comm=self._jax_comm), tree
        )

    def sum(self, tree: Tree) -> Tree:
        """Elementwise sum over ranks of every leaf: sum_r x_r."""
        return self._allreduce(tree, "SUM")

    def mean(self, tree: Tree) -> Tree:
        """Elementwise mean over ranks of every leaf: (1/R) sum_r x_r."""
        return jax.tree_util.tree_map(lambda x: x / self.size, self.sum(tree))

    def max(self, tree: Tree) -> Tree:
        """Elementwise maximum over ranks of every (real) leaf."""
        return self._allreduce(tree, "MAX")

    def allgather(self, tree: Tree) -> Tree:
        """Stack every leaf over ranks: leaf shape (...) -> (size, ...), rank order."""
        if self.size == 1:
            return jax.tree_util.tree_map(lambda x: jnp.asarray(x)[None], tree)
        import mpi4jax

        return jax.tree_util.tree_map(
            lambda x: mpi4jax.allgather(jnp.asarray(x), comm=self._jax_comm), tree
        )

    def alltoall(self, tree: Tree) -> Tree:
        """Exchange blocks: leaf x of shape (size, ...) -> y with y[s] = x_s[rank] from rank s."""
        if self.size == 1:
            return tree
        import mpi4jax

        return jax.tree_util.tree_map(
            lambda x: mpi4jax.alltoall(jnp.asarray(x), comm=self._jax_comm), tree
        )

    # ----------------------------------------------------------------------------------------
    # Host-side helpers (numpy / Python objects), for I/O and control flow outside jit.
    # ----------------------------------------------------------------------------------------
    def gather_rows(self, array: np.ndarray) -> np.ndarray | None:
        """Concatenate per-rank arrays along axis 0 in rank order on rank 0 (None elsewhere).

        Every rank must pass the same shape and dtype (walkers are evenly sharded).
        """
        array = np.ascontiguousarray(array)
        if self.size == 1:
            return array
        out = np.empty((self.size,) + array.shape, array.dtype) if self.is_root else None
        self.mpi_comm.Gather(array, out, root=0)
        return out.reshape((-1,) + array.shape[1:]) if self.is_root else None

    def bcast(self, obj: Any) -> Any:
        """Broadcast a picklable Python object from rank 0."""
        return obj if self.size == 1 else self.mpi_comm.bcast(obj, root=0)

    def any(self, flag: bool) -> bool:
        """True on every rank if the flag is true on at least one rank."""
        if self.size == 1:
            return bool(flag)
        from mpi4py import MPI

        return bool(self.mpi_comm.allreduce(bool(flag), op=MPI.LOR))

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.size > 1:
            self.mpi_comm.Barrier()

    def abort(self, code: int = 1) -> None:
        """Bring down every rank of the job (MPI_Abort); plain exit on one process."""
        if self.mpi_comm is not None and self.size > 1:
            sys.stdout.flush()
            sys.stderr.flush()
            self.mpi_comm.Abort(code)
        raise SystemExit(code)


SERIAL = Comm()
"""The communicator of a single process without MPI."""


def _node_local_rank(mpi_comm: Any) -> int:
    """Local rank from the launcher's environment, else from an MPI shared-memory split."""
    local = launcher_local_rank()
    if local is not None:
        return local
    from mpi4py import MPI

    node_comm = mpi_comm.Split_type(MPI.COMM_TYPE_SHARED)
    local = node_comm.Get_rank()
    node_comm.Free()
    return local


def ranks_on_node(comm: Comm) -> int:
    """Number of ranks of the run on this rank's node (collective under MPI)."""
    if comm.mpi_comm is None or comm.size == 1:
        return 1
    from mpi4py import MPI

    node_comm = comm.mpi_comm.Split_type(MPI.COMM_TYPE_SHARED)
    size = node_comm.Get_size()
    node_comm.Free()
    return size


def bind_device(local_rank: int, platform: str = "auto") -> None:
    """Restrict this process to one GPU (its local rank) before JAX picks its backend.

    Rules: ``platform = "cpu"`` hides accelerators (``JAX_PLATFORMS=cpu``). Otherwise, when
    ``CUDA_VISIBLE_DEVICES`` (or ``ROCR_VISIBLE_DEVICES``) already names exactly one device
    (Slurm's ``--gpus-per-task=1`` / ``--gpu-bind``), it is kept. When it names several, this
    rank keeps entry ``local_rank mod n``. When it is unset, this rank is given device
    ``local_rank``. On a machine without GPUs the variable is harmless and JAX uses the CPU.

    Args:
        local_rank: the rank of this process among the processes of its node.
        platform: "auto", "cpu" or "gpu".
    """
    if platform == "cpu":
        os.environ["JAX_PLATFORMS"] = "cpu"
        return
    for var in ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES"):
        visible = os.environ.get(var)
        if visible is None:
            continue
        devices = [d for d in visible.split(",") if d.strip()]
        if len(devices) > 1:
            os.environ[var] = devices[local_rank % len(devices)]
        return
    if launcher_world_size() > 1:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(local_rank)


def _install_abort_hook(comm: Comm) -> None:
    """Make an uncaught exception on any rank abort the whole job instead of hanging it."""

    def hook(exc_type: type, exc: BaseException, tb: Any) -> None:
        sys.stderr.write(f"hpcvmc: rank {comm.rank} failed; aborting all {comm.size} ranks\n")
        traceback.print_exception(exc_type, exc, tb)
        comm.abort(1)

    sys.excepthook = hook


def init_distributed(platform: str = "auto", use_mpi: bool | None = None) -> Comm:
    """Set up MPI (if launched by MPI), bind this rank to its device and return the Comm.

    Must be called before anything touches a JAX device. On a single process started without
    an MPI launcher, no MPI library is loaded and the serial communicator is returned.

    Args:
        platform: "auto", "cpu" or "gpu"; see :func:`bind_device`.
        use_mpi: force (True) or forbid (False) MPI; None decides from the launcher variables.

    Returns:
        The run's communicator.
    """
    if use_mpi is None:
        use_mpi = launcher_world_size() > 1
    if not use_mpi:
        bind_device(0, platform)
        return SERIAL
    from mpi4py import MPI

    world = MPI.COMM_WORLD
    local_rank = _node_local_rank(world)
    bind_device(local_rank, platform)
    comm = Comm(
        rank=world.Get_rank(),
        size=world.Get_size(),
        local_rank=local_rank,
        mpi_comm=world,
        _jax_comm=world.Clone(),
    )
    if comm.size > 1:
        _install_abort_hook(comm)
    return comm
