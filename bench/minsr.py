"""Benchmark of the distributed minSR solver: time, memory per rank and kernel FLOP rate.

Run from the repository root (``PYTHONPATH=.`` unless hpcvmc is installed), e.g.::

    mpirun -n 2 python bench/minsr.py --samples 1024 2048 --params 8192 32768
    mpirun -n 2 python bench/minsr.py --samples 8192 --params 200000 --no-kernel --repeats 1

For every (N_s, P) each rank generates only its own N_s / R rows of a random O (rows keyed by
their global index, so the matrix does not depend on R), then reports per rank:

* ``O RSS``: resident memory added by generating its rows (should be ``N_s P / R`` numbers);
* ``solve peak``: the peak resident memory above the same baseline while solving, i.e. the rows
  plus the solver's workspace (kernel, its factor, one column chunk);
* ``XLA temp``: the solve's temporary buffers as planned by XLA (``memory_analysis``);
* the solve time and its rate counted as kernel flops only (``2 N^2 P / R`` real flops per
  rank, N the stacked rows: N_s, or 2 N_s for complex O); unless ``--no-kernel``, the time and
  rate of the kernel build alone; and the rate of a plain ``A @ A.T`` with A of shape
  (N, min(P/R, --matmul-cols)), timed in the same run, interleaved with the kernel build.

Memory is the process's resident set from ``/proc/self/status``: ``VmRSS`` for the baseline and
``VmHWM`` (peak) after resetting the peak through ``/proc/self/clear_refs``. Python's
``tracemalloc`` does not see XLA's buffers and ``jax.Device.memory_stats()`` is None on CPU.
Linux only. Threads: with R ranks on C cores each rank gets C // R XLA threads and one
OpenBLAS thread (see :func:`configure_threads`).
"""

from __future__ import annotations

import argparse
import os
import re
import time
from functools import partial
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from hpcvmc.optim import minsr
from hpcvmc.parallel import Comm, init_distributed, launcher_world_size

MIB = 2**20
SINGLE_THREAD_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, nargs="+", default=[1024, 2048], help="N_s")
    parser.add_argument("--params", type=int, nargs="+", default=[8192, 32768], help="P")
    parser.add_argument("--complex", action="store_true", help="complex O (2 N_s kernel rows)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the best is shown")
    parser.add_argument("--column-chunk", type=int, default=1024, help="solve's column_chunk")
    parser.add_argument("--row-chunk", type=int, default=16, help="rows per generation chunk")
    parser.add_argument("--diag-shift", type=float, default=1e-3, help="lambda")
    parser.add_argument(
        "--kernel",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time the kernel build alone and the matrix product",
    )
    parser.add_argument(
        "--matmul-cols",
        type=int,
        default=32768,
        help="at most this many columns in the reference matrix product",
    )
    return parser.parse_args()


def configure_threads(size: int) -> int:
    """Give each of ``size`` ranks its share of the cores for XLA; returns that share.

    XLA's own matrix products run single-threaded when ranks >= cores (its flag is read when
    the backend starts). The LAPACK that XLA calls for Cholesky and eigh (OpenBLAS, loaded
    with scipy on first use) gets one thread unless OPENBLAS_NUM_THREADS is set: its threads
    spin while waiting and fight XLA's for the cores. Measured here: with 2 ranks and 2
    OpenBLAS threads each, a 256 x 256 eigh took 1.8 s instead of 0.02 s; on 1 rank, the
    N_s = 1024, P = 8192 solve took 1.04 s with 2 OpenBLAS threads and 0.30 s with one.
    """
    cores = os.cpu_count() or 1
    threads = max(1, cores // size)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    if threads == 1:
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {SINGLE_THREAD_FLAGS}"
    return threads


def memory_mib(field: str) -> float:
    """``VmRSS`` (current) or ``VmHWM`` (peak since the last reset) of this process, MiB."""
    with open("/proc/self/status") as status:
        match = re.search(rf"^{field}:\s+(\d+) kB", status.read(), re.MULTILINE)
    return int(match.group(1)) / 1024


def reset_peak_memory() -> None:
    """Make ``VmHWM`` restart from the current resident set (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def row_generator(
    start: int, n_rows: int, n_samples: int, n_params: int, is_complex: bool, row_chunk: int
) -> Callable[[], jax.Array]:
    """Compiled generator of rows ``start .. start + n_rows`` of a random (N_s, P) matrix.

    Entries are standard normal divided by sqrt(N_s), the scaling of the solver's input (so
    ``trace(O~ O~^T) ~ P`` and a diagonal shift of 1e-3 is a realistic one). Row i is drawn
    from ``fold_in(key, i)``, so the global matrix is the same for every R; rows are written in
    place into the output chunk by chunk, so no intermediate exceeds one chunk. Compiled ahead
    of time so that the compiler's memory is not counted as the rows'.
    """
    dtype = jnp.complex128 if is_complex else jnp.float64
    chunk = min(row_chunk, n_rows)
    key = jax.random.PRNGKey(0)

    def row(index: jax.Array) -> jax.Array:
        values = jax.random.normal(jax.random.fold_in(key, index), (n_params,), dtype)
        return values / np.sqrt(n_samples)

    def build() -> jax.Array:
        def fill(k: jax.Array, rows: jax.Array) -> jax.Array:
            first = jnp.minimum(k * chunk, n_rows - chunk)
            block = jax.vmap(row)(start + first + jnp.arange(chunk))
            return lax.dynamic_update_slice_in_dim(rows, block, first, axis=0)

        rows = jnp.zeros((n_rows, n_params), dtype)
        return lax.fori_loop(0, -(-n_rows // chunk), fill, rows)

    return jax.jit(build).lower().compile()


def best_time(run: Callable[[], jax.Array], comm: Comm, repeats: int) -> tuple[float, Any]:
    """Fastest of ``repeats`` runs (all ranks start together), seconds; and the last output."""
    times = []
    for _ in range(repeats):
        comm.barrier()
        start = time.perf_counter()
        output = jax.block_until_ready(run())
        times.append(time.perf_counter() - start)
    return min(times), output


def interleaved_times(
    runs: list[Callable[[], jax.Array]], comm: Comm, repeats: int
) -> list[float]:
    """Best time of each run, the runs alternating so that machine load hits both alike."""
    best = [np.inf] * len(runs)
    for _ in range(repeats):
        for i, run in enumerate(runs):
            best[i] = min(best[i], best_time(run, comm, 1)[0])
    return best


def bench_case(
    n_samples: int, n_params: int, args: argparse.Namespace, comm: Comm
) -> dict[str, float]:
    """Measure one (N_s, P) on this rank; returns this rank's numbers."""
    if n_samples % comm.size:
        raise SystemExit(f"--samples {n_samples} must be a multiple of the {comm.size} ranks")
    n_local = n_samples // comm.size
    stacked = 2 if args.complex else 1
    n_kernel = stacked * n_samples
    result: dict[str, float] = {"n_local": n_local}

    generate = row_generator(
        comm.rank * n_local, n_local, n_samples, n_params, args.complex, args.row_chunk
    )
    reset_peak_memory()
    baseline = memory_mib("VmRSS")
    start = time.perf_counter()
    o_local = generate().block_until_ready()
    result["generate_s"] = time.perf_counter() - start
    result["o_rss_mib"] = memory_mib("VmRSS") - baseline
    eps_local = jnp.asarray(
        np.random.default_rng(comm.rank).normal(size=n_local), o_local.dtype
    )

    solve = jax.jit(
        lambda o, e: minsr.solve(
            o,
            e,
            args.diag_shift,
            comm,
            method="minsr",
            column_chunk=args.column_chunk,
            n_rows_max=n_local,
        )
    )
    start = time.perf_counter()
    planned = solve.lower(o_local, eps_local).compile()
    result["compile_s"] = time.perf_counter() - start
    result["xla_temp_mib"] = planned.memory_analysis().temp_size_in_bytes / MIB
    if args.repeats > 1:  # warm-up; with one repeat the time includes compile_s
        jax.block_until_ready(solve(o_local, eps_local))
    reset_peak_memory()
    result["solve_s"], (_, info) = best_time(
        lambda: solve(o_local, eps_local), comm, args.repeats
    )
    result["solve_peak_mib"] = memory_mib("VmHWM") - baseline
    result["fallback"] = float(info["fallback"])

    columns = -(-n_params // comm.size)
    kernel_flops = 2 * n_kernel**2 * columns
    result["solve_gflops"] = kernel_flops / result["solve_s"] / 1e9
    matmul_cols = min(columns, args.matmul_cols)
    reference = jax.random.normal(jax.random.PRNGKey(1), (n_kernel, matmul_cols))
    product = jax.jit(lambda a: a @ a.T)
    runs = [partial(product, reference)]
    if args.kernel:
        kernel = jax.jit(
            partial(
                minsr.kernel_matrix, comm=comm, rows_max=n_local, column_chunk=args.column_chunk
            )
        )
        runs.append(partial(kernel, o_local))
    del o_local  # freed here unless the kernel run holds it
    jax.block_until_ready([run() for run in runs])
    times = interleaved_times(runs, comm, args.repeats)
    result["matmul_gflops"] = 2 * n_kernel**2 * matmul_cols / times[0] / 1e9
    if args.kernel:
        result["kernel_s"] = times[1]
        result["kernel_gflops"] = kernel_flops / times[1] / 1e9
    return result


def report(rows: list[dict[str, float]], comm: Comm, args: argparse.Namespace) -> None:
    """Print one markdown row per case on rank 0 (the worst rank's time, memory and rate)."""
    if not comm.is_root:
        return
    dtype = "complex128" if args.complex else "float64"
    print(
        "| R | N_s | P | dtype | O/rank theory MiB | O RSS/rank MiB | solve peak/rank MiB "
        "| XLA temp MiB | path | solve s | kernel s | kernel GF/s | solve GF/s | matmul GF/s "
        "| kernel / matmul |"
    )
    print("|" + "---|" * 15)
    for case in rows:
        theory = case["n_local"] * case["P"] * (16 if args.complex else 8) / MIB
        kernel_s, kernel_rate = case.get("kernel_s", np.nan), case.get("kernel_gflops", np.nan)
        print(
            f"| {comm.size} | {case['N_s']:.0f} | {case['P']:.0f} | {dtype} | {theory:.0f} "
            f"| {case['o_rss_mib']:.0f} | {case['solve_peak_mib']:.0f} "
            f"| {case['xla_temp_mib']:.0f} | {'eigh' if case['fallback'] else 'cholesky'} "
            f"| {case['solve_s']:.2f} | {kernel_s:.2f} "
            f"| {kernel_rate:.1f} | {case['solve_gflops']:.1f} | {case['matmul_gflops']:.1f} "
            f"| {kernel_rate / case['matmul_gflops']:.2f} |"
        )


def main() -> None:
    """Run every (N_s, P) case and print the table."""
    args = parse_args()
    threads = configure_threads(launcher_world_size())
    comm = init_distributed(platform="cpu")
    jax.config.update("jax_enable_x64", True)
    rows = []
    for n_samples in args.samples:
        for n_params in args.params:
            mine = bench_case(n_samples, n_params, args, comm)
            keys = sorted(mine)
            gathered = comm.gather_rows(np.array([[mine[k] for k in keys]]))
            if comm.is_root:
                worst = dict(zip(keys, gathered.max(axis=0)))
                for key in keys:  # rates: the slowest rank
                    if key.endswith("gflops"):
                        worst[key] = gathered[:, keys.index(key)].min()
                rows.append({**worst, "N_s": n_samples, "P": n_params})
                print(f"# done N_s={n_samples} P={n_params}: {worst}", flush=True)
    if comm.is_root:
        print(f"# ranks {comm.size}, XLA threads per rank {threads}, cores {os.cpu_count()}")
    report(rows, comm, args)


if __name__ == "__main__":
    main()
