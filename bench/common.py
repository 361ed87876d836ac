"""Shared pieces of the VMC benchmarks: threads, set-up, per-phase timers, timing statistics.

Used by ``bench/vs_netket.py``, ``bench/scaling.py`` and ``bench/roofline.py``. Nothing happens
at import time; :func:`start` must run before anything touches a JAX device.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

SINGLE_THREAD_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
DEFAULT_JOB = "jobs/vit_6x6_factored.toml"
PHASES = ("sampling", "local_energy", "jacobian", "kernel_solve")
BENCH_DEFAULTS = ["system.chunk_size=576", "optimizer.chunk_size=128"]
"""Chunk sizes measured fastest on CPU (bench/README.md): the local energy in network calls of
144 connected configurations (576 divided by the 4 translation terms of the symmetrized ViT:
about one sample's 144 bonds, as NetKet's ``chunk_size = 1`` sample), the Jacobian in chunks of
128 samples. ``--set`` options come after these and override them."""


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Options every VMC benchmark takes: the job, overrides, platform and threads."""
    parser.add_argument("--job", default=DEFAULT_JOB, help="hpcvmc input file (physics, sizes)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override an input key (repeatable), as in `hpcvmc run --set`",
    )
    parser.add_argument(
        "--platform", choices=("cpu", "gpu"), default="cpu",
        help="cpu: one XLA thread per rank; gpu: one GPU per rank (its local rank)",
    )
    parser.add_argument(
        "--threads", type=int, default=1,
        help="1: one XLA thread per rank on CPU (default); any other value: XLA's own default",
    )


def pin_threads(threads: int) -> None:
    """Limit XLA's CPU compute (and OpenBLAS, used by LAPACK) before the backend starts.

    With ``threads == 1`` XLA runs Eigen single threaded and with a one-thread intra-op pool;
    OpenBLAS gets one thread in every case (its spinning threads otherwise fight XLA's). The
    benchmarks check the result: :class:`CpuMeter` reports CPU seconds over wall seconds.
    """
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if threads == 1:
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {SINGLE_THREAD_FLAGS}"


def start(args: argparse.Namespace) -> Any:
    """Threads, MPI and device binding, then float64; returns the hpcvmc communicator."""
    from hpcvmc.parallel import init_distributed

    if args.platform == "cpu":
        pin_threads(args.threads)
    comm = init_distributed(platform=args.platform)
    import jax

    jax.config.update("jax_enable_x64", True)
    return comm


def build_setup(job: str, overrides: list[str], comm: Any) -> Any:
    """The hpcvmc Setup of an input file with ``--set`` overrides (output under /tmp)."""
    from hpcvmc.build import build
    from hpcvmc.config import load

    overrides = ["run.output=/tmp/hpcvmc-bench", *overrides]
    return build(load(job, overrides=overrides), comm)


def count_params(params: Any) -> int:
    """Number of real parameters in a pytree."""
    import jax

    return int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(params)))


class CpuMeter:
    """Process CPU seconds per wall second over a ``with`` block (1.0 = one busy thread)."""

    def __enter__(self) -> "CpuMeter":
        self._cpu, self._wall = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.ratio = (time.process_time() - self._cpu) / (time.perf_counter() - self._wall)


@dataclass
class Phases:
    """The four phases of one VMC step jitted separately, from hpcvmc's own building blocks.

    Each returns what the next needs, so that running them in order is one step (without the
    statistics and the parameter update, which are negligible). Collectives run inside them.
    """

    sample: Callable[..., Any]
    local_energy: Callable[..., Any]
    jacobian: Callable[..., Any]
    kernel_solve: Callable[..., Any]


def make_phases(setup: Any) -> Phases:
    """Jit the phases of :func:`hpcvmc.driver.make_step` separately (Monte Carlo sampler only)."""
    import jax
    import jax.numpy as jnp

    from hpcvmc.optim.jacobian import centred_scaled, jacobian

    comm, chain_ids = setup.comm, jnp.asarray(setup.chain_ids)
    chunk = setup.config.optimizer.chunk_size

    def sample(params: Any, chains: Any, step: Any) -> tuple[Any, Any]:
        batch, chains = setup.sampler.sample(setup.logpsi, params, chains, chain_ids, step)
        return batch.x.reshape((-1,) + batch.x.shape[2:]), chains

    def local_energy(params: Any, x: Any) -> Any:
        return setup.system.local_energy(setup.logpsi, params, x)

    def jac(params: Any, x: Any, e_loc: Any) -> tuple[Any, Any]:
        return centred_scaled(jacobian(setup.logpsi, params, x, chunk), e_loc, comm)

    def kernel_solve(O: Any, eps: Any, opt_state: Any, params: Any) -> Any:
        updates, _, _ = setup.optimizer.update(O, eps, opt_state, params, comm,
                                               n_rows_max=O.shape[0])
        return updates

    return Phases(jax.jit(sample), jax.jit(local_energy), jax.jit(jac), jax.jit(kernel_solve))


def warm_time_phases(phases: Phases, params: Any, opt_state: Any, chains: Any, step: int,
                     barrier: Callable[[], None]) -> dict[str, float]:
    """:func:`time_phases` after one untimed (compiling) run of the same step."""
    time_phases(phases, params, opt_state, chains, step, barrier)
    return time_phases(phases, params, opt_state, chains, step, barrier)[0]


def time_phases(phases: Phases, params: Any, opt_state: Any, chains: Any, step: int,
                barrier: Callable[[], None]) -> tuple[dict[str, float], Any]:
    """Wall seconds of each phase of one step (all ranks start each phase together).

    The first call on a :class:`Phases` compiles them; its times include compilation.

    Returns:
        ``({phase: seconds}, new chains)``.
    """
    import jax

    def timed(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
        barrier()
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        return out, time.perf_counter() - t0

    (x, chains), t_sample = timed(phases.sample, params, chains, step)
    e_loc, t_energy = timed(phases.local_energy, params, x)
    (O, eps), t_jac = timed(phases.jacobian, params, x, e_loc)
    _, t_solve = timed(phases.kernel_solve, O, eps, opt_state, params)
    times = dict(zip(PHASES, (t_sample, t_energy, t_jac, t_solve)))
    return times, chains


def median_iqr(values: list[float]) -> tuple[float, float, float]:
    """Median and the 25th / 75th percentiles."""
    q25, q50, q75 = np.percentile(values, [25, 50, 75])
    return float(q50), float(q25), float(q75)


def load_average() -> str:
    """The 1-minute load average of the machine (as ``uptime`` prints it)."""
    return f"{os.getloadavg()[0]:.2f}"


def machine() -> str:
    """CPU model and core count (or the GPU name on a GPU platform)."""
    import jax

    device = jax.devices()[0]
    if device.platform != "cpu":
        return f"{device.device_kind} ({device.platform})"
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as info:
            model = next(line.split(":", 1)[1].strip() for line in info
                         if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores"
