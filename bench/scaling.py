"""Weak and strong scaling of one hpcvmc VMC step over MPI ranks, and the time in collectives.

One command runs everything (it launches itself under ``mpirun`` once per rank count and mode)::

    python bench/scaling.py                               # 1 and 2 ranks, CPU, 1 thread per rank
    python bench/scaling.py --ranks 1 2 4 8 16 --launcher "srun -n {n}"     # on a cluster
    python bench/scaling.py --platform gpu --ranks 1 2 4  # one GPU per rank

Weak scaling keeps the samples and chains *per rank* fixed (``--samples-per-rank``,
``--chains-per-rank``); strong scaling keeps the totals of R = 1 (the same numbers) fixed.
Each worker times ``--steps`` real driver steps (``hpcvmc.driver.make_step``, after
``--warmup`` untimed ones; medians, every rank starts each step together) and splits one more
step into its phases (``bench/common.py``). Efficiencies: strong ``t_1 / (R t_R)``, weak
``t_1 / t_R``. With minSR the kernel costs ``N^2 P / R`` per rank, so under weak scaling
(N = R n) its per-rank work grows as R: the *work-normalized* efficiency divides by the
per-rank flop count of the step (``bench/roofline.py``'s model) and is the one that can reach 1
(for strong scaling it equals the plain one up to the redundant Cholesky). On a shared machine
the *CPU-normalized* column further divides by the CPU share each rank got (rank 0's CPU
seconds per wall second, relative to R = 1): what the efficiency would be with every rank on
an idle core of its own.

Time in collectives: after the steps, the worker replays the step's collectives alone, with the
same shapes and in the same order (centring sums, per-chunk alltoalls and the kernel allreduce of
minSR, the right-hand-side allgather and the update allreduce, the statistics' scalars), after
a barrier, and reports their median time per step. This is transfer time without the waiting
for slower ranks that a real step also contains (that shows up as lost efficiency).

Threads: one XLA thread and one OpenBLAS thread per rank on CPU (the R = 1 baseline too); the
``CPU/wall`` column checks it. The PNG plots go to ``--plot-dir``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import common  # noqa: E402
import roofline  # noqa: E402

RESULT_TAG = "SCALING_RESULT "


def parse_args() -> argparse.Namespace:
    """Command-line options (the launcher's and the worker's)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_common_args(parser)
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2], help="rank counts")
    parser.add_argument("--modes", nargs="+", choices=("weak", "strong"),
                        default=["weak", "strong"])
    parser.add_argument("--samples-per-rank", type=int, default=512,
                        help="weak: samples per rank; strong: total samples")
    parser.add_argument("--chains-per-rank", type=int, default=32,
                        help="weak: chains per rank; strong: total chains")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps (compilation)")
    parser.add_argument("--launcher", default=None,
                        help="command prefix with {n} for the rank count "
                             "(default: this venv's mpirun -n {n} -bind-to core: one core "
                             "per rank, also for R = 1)")
    parser.add_argument("--plot-dir", default="bench", help="where the PNG plots go")
    parser.add_argument("--worker", choices=("weak", "strong"), help=argparse.SUPPRESS)
    return parser.parse_args()


def sizes(mode: str, ranks: int, args: argparse.Namespace) -> tuple[int, int]:
    """(total samples, total chains) of one run."""
    scale = ranks if mode == "weak" else 1
    return args.samples_per_rank * scale, args.chains_per_rank * scale


def worker(args: argparse.Namespace) -> None:
    """One run under mpirun: time steps, phases and collectives; rank 0 prints a JSON line."""
    comm = common.start(args)
    import jax
    import jax.numpy as jnp

    from hpcvmc.driver import fresh_state, make_step

    n_samples, n_chains = sizes(args.worker, comm.size, args)
    overrides = [*common.BENCH_DEFAULTS, *args.set,
                 f"sampler.n_samples={n_samples}", f"sampler.n_chains={n_chains}"]
    setup = common.build_setup(args.job, overrides, comm)
    state = fresh_state(setup)
    step_fn = make_step(setup)
    times, cpu = [], []
    params, opt_state, chains = state.params, state.opt_state, state.chains
    for k in range(args.warmup + args.steps):
        comm.barrier()
        with common.CpuMeter() as meter:
            t0 = time.perf_counter()
            out = step_fn(params, opt_state, chains, jnp.asarray(k))
            jax.block_until_ready(out.params)
            float(jnp.real(out.stats.mean))
            seconds = time.perf_counter() - t0
        params, opt_state, chains = out.params, out.opt_state, out.chains
        if k >= args.warmup:
            times.append(comm.max(jnp.asarray(seconds)))
            cpu.append(meter.ratio)
    phases = common.warm_time_phases(common.make_phases(setup), params, opt_state, chains,
                                     args.warmup + args.steps, comm.barrier)
    collective = collective_seconds(setup, common.count_params(params), args.steps)
    flops = roofline.step_flops(setup, params, comm.size)
    if comm.is_root:
        result = {"mode": args.worker, "ranks": comm.size, "samples": n_samples,
                  "chains": n_chains, "step_s": float(np.median(times)),
                  "cpu_per_wall": float(np.median(cpu)), "collectives_s": collective,
                  "flops_per_rank": flops["per_rank"],
                  "phases": phases, "load": common.load_average()}
        print(RESULT_TAG + json.dumps(result), flush=True)


def collective_seconds(setup: Any, n_params: int, repeats: int) -> float:
    """Median time of one step's collectives replayed alone (same shapes, same order)."""
    import jax
    import jax.numpy as jnp

    from hpcvmc.optim import minsr

    comm, cfg = setup.comm, setup.config
    n_local = cfg.sampler.n_samples // comm.size
    chunk = comm.size * setup.optimizer.column_chunk
    n_chunks = -(-n_params // chunk)
    n_kernel = 2 * cfg.sampler.n_samples
    k = minsr._gram_row_blocks(n_kernel)
    lower = jnp.zeros((k * (k + 1) // 2, n_kernel // k, n_kernel // k))

    def replay(o_sum: jax.Array, send: jax.Array, eps: jax.Array) -> jax.Array:
        scalars = comm.sum(jnp.zeros(8))  # acceptance counts, energy statistics
        centre = comm.sum((o_sum, jnp.sum(eps)))
        moved = jax.lax.fori_loop(
            0, n_chunks, lambda i, acc: acc + comm.alltoall(send + i)[0, 0, 0], 0j
        )
        kernel = comm.sum(lower + moved.real)
        rhs = comm.allgather(eps)
        update = comm.sum(o_sum.real)
        return scalars[0] + centre[1] + kernel[0, 0, 0] + rhs[0, 0] + update[0]

    send = jnp.zeros((comm.size, n_local, setup.optimizer.column_chunk), jnp.complex128)
    args = (jnp.zeros(n_params, jnp.complex128), send, jnp.zeros(n_local, jnp.complex128))
    run = jax.jit(replay)
    jax.block_until_ready(run(*args))
    times = []
    for _ in range(repeats):
        comm.barrier()
        t0 = time.perf_counter()
        jax.block_until_ready(run(*args))
        times.append(time.perf_counter() - t0)
    return float(comm.max(jnp.asarray(np.median(times))))


def launch(args: argparse.Namespace, mode: str, ranks: int) -> dict[str, Any]:
    """Run one worker under the launcher and return rank 0's result."""
    prefix = args.launcher or f"{Path(sys.executable).parent / 'mpirun'} -n {{n}} -bind-to core"
    forwarded = ["--job", args.job, "--platform", args.platform, "--threads", str(args.threads),
                 "--samples-per-rank", str(args.samples_per_rank), "--chains-per-rank",
                 str(args.chains_per_rank), "--steps", str(args.steps), "--warmup",
                 str(args.warmup), *[f"--set={s}" for s in args.set]]
    command = [*shlex.split(prefix.format(n=ranks)), sys.executable, __file__,
               "--worker", mode, *forwarded]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_TAG)]
    if proc.returncode or not lines:
        raise SystemExit(f"{' '.join(command)} failed:\n{proc.stdout[-3000:]}\n"
                         f"{proc.stderr[-3000:]}")
    return json.loads(lines[0][len(RESULT_TAG):])


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """Print the table (efficiencies against R = 1 of the same mode) and draw the plots."""
    print(f"# {common.machine()}; platform {args.platform}; threads per rank {args.threads}; "
          f"{args.job} {' '.join(args.set)}")
    print("| mode | R | N_s | chains | s/step | efficiency | work-normalized | CPU-normalized "
          "| collectives s | collectives share | sampling | local energy | Jacobian "
          "| kernel+solve | CPU/wall | load |")
    print("|" + "---|" * 16)
    for res in results:
        base = next(r for r in results if r["mode"] == res["mode"] and r["ranks"] == 1)
        res["efficiency"] = base["step_s"] / res["step_s"] / (
            res["ranks"] if res["mode"] == "strong" else 1)
        res["work_normalized"] = (base["step_s"] / base["flops_per_rank"]) / (
            res["step_s"] / res["flops_per_rank"])
        res["cpu_normalized"] = res["work_normalized"] / (
            res["cpu_per_wall"] / base["cpu_per_wall"])
        ph = res["phases"]
        print(f"| {res['mode']} | {res['ranks']} | {res['samples']} | {res['chains']} "
              f"| {res['step_s']:.2f} | {res['efficiency']:.2f} | {res['work_normalized']:.2f} "
              f"| {res['cpu_normalized']:.2f} "
              f"| {res['collectives_s']:.3f} | {res['collectives_s'] / res['step_s']:.1%} "
              + " ".join(f"| {ph[k]:.2f}" for k in common.PHASES)
              + f" | {res['cpu_per_wall']:.2f} | {res['load']} |")
    plot(results, Path(args.plot_dir))


def plot(results: list[dict[str, Any]], folder: Path) -> None:
    """scaling.png: time per step and efficiency against ranks, weak and strong."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_e) = plt.subplots(1, 2, figsize=(9, 3.6))
    for mode, marker, colour in (("weak", "o", "C0"), ("strong", "s", "C1")):
        rows = sorted((r for r in results if r["mode"] == mode), key=lambda r: r["ranks"])
        if not rows:
            continue
        ranks = [r["ranks"] for r in rows]
        ax_t.plot(ranks, [r["step_s"] for r in rows], marker=marker, color=colour, label=mode)
        for key, style, label in (("efficiency", "-", ""), ("work_normalized", "--",
                                  ", work-normalized"), ("cpu_normalized", ":",
                                  ", work- and CPU-normalized")):
            if mode == "strong" and key == "work_normalized":
                continue
            ax_e.plot(ranks, [r[key] for r in rows], marker=marker, color=colour,
                      linestyle=style, label=mode + label)
    ax_t.set(xlabel="ranks", ylabel="seconds per VMC step", xscale="log", xticks=ranks_of(results))
    ax_e.set(xlabel="ranks", ylabel="parallel efficiency", xscale="log", ylim=(0, 1.3),
             xticks=ranks_of(results))
    for ax in (ax_t, ax_e):
        ax.set_xticklabels([str(r) for r in ranks_of(results)])
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    folder.mkdir(parents=True, exist_ok=True)
    fig.savefig(folder / "scaling.png", dpi=120)
    print(f"# plot: {folder / 'scaling.png'}")


def ranks_of(results: list[dict[str, Any]]) -> list[int]:
    """The rank counts measured, sorted."""
    return sorted({r["ranks"] for r in results})


def main() -> None:
    """Launcher (default) or worker (``--worker``, under mpirun)."""
    args = parse_args()
    if args.worker:
        worker(args)
        return
    results = []
    for mode in args.modes:
        for ranks in sorted(set(args.ranks) | {1}):
            same = [r for r in results if r["ranks"] == 1 == ranks]  # R = 1: weak == strong
            results.append({**same[0], "mode": mode} if same else launch(args, mode, ranks))
            print(f"# done {mode} R={ranks}: {results[-1]['step_s']:.2f} s/step", flush=True)
    report(results, args)


if __name__ == "__main__":
    main()
