"""Mixed precision: cost of a VMC step and accuracy reached, model.dtype float32 against float64.

``model.dtype`` is the compute dtype of the network; parameters, optimizer state, local energies,
the centring of O, the minSR kernel and solve and the update are float64 either way.

Two parts (``--part cost``, ``--part accuracy`` or both, the default):

- cost: for each job, the same initial parameters and burnt-in chains in both dtypes; steps
  alternate float64 / float32 inside this one process (one untimed compiling step each, then
  ``--repeats`` timed pairs). Per pair: the whole jitted driver step (``make_step``) and its
  phases jitted separately (bench/common.py: sampling and local energy = network forward passes,
  Jacobian = network backward passes + centring, kernel_solve = float64 minSR). Printed: medians
  of the per-pair ratios float32 / float64, of the step, of each phase and of the network part
  (sampling + local energy + Jacobian).
- accuracy: ``hpcvmc.driver.run`` of the 4 x 4 orbit-sum job (exact energies, relative error
  to the Lanczos energy after the same number of steps) and of the 4 x 4 Monte Carlo job (its
  final measurement, mean +- error), in each dtype, same seed.

    python bench/mixed_precision.py [--part cost|accuracy] [--repeats 3] [--exact-steps 300]
        [--mc-steps 150] [--jobs jobs/vit_6x6_factored.toml ...] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

COST_JOBS = ["jobs/vit_6x6_factored.toml", "jobs/vit_6x6_standard.toml"]
DTYPES = ("float64", "float32")
EXACT_JOB, MC_JOB = "jobs/vit_4x4_factored.toml", "jobs/vit_4x4_factored_mc.toml"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_args(parser)
    parser.add_argument("--part", choices=("cost", "accuracy", "both"), default="both")
    parser.add_argument("--jobs", nargs="+", default=COST_JOBS, help="jobs timed by --part cost")
    parser.add_argument("--repeats", type=int, default=3, help="timed step pairs per job")
    parser.add_argument("--burn-in", type=int, default=20, help="sampler.burn_in of the timed jobs")
    parser.add_argument("--exact-steps", type=int, default=300, help="steps of the orbit-sum runs")
    parser.add_argument("--mc-steps", type=int, default=150, help="steps of the Monte Carlo runs")
    parser.add_argument("--output", default="/tmp/hpcvmc-mixed", help="run folders of --part accuracy")
    return parser.parse_args()


def cost(args: argparse.Namespace, comm: Any, job: str) -> None:
    """Alternated float64 / float32 steps of one job; prints the ratio table."""
    import jax
    import jax.numpy as jnp

    from hpcvmc.driver import make_step

    runs = {}
    for dtype in DTYPES:
        setup = common.build_setup(job, [*common.BENCH_DEFAULTS, f"sampler.burn_in={args.burn_in}",
                                         *args.set, f"model.dtype={dtype}"], comm)
        params = setup.init_params()
        opt_state = setup.optimizer.init(params)
        chains = jax.jit(lambda p, s=setup: s.sampler.init(s.logpsi, p, jnp.asarray(s.chain_ids)))(params)
        runs[dtype] = dict(setup=setup, params=params, opt_state=opt_state, chains=chains,
                           step=make_step(setup), phases=common.make_phases(setup))
    barrier = comm.barrier
    times: dict[str, dict[str, list[float]]] = {d: {} for d in DTYPES}
    for rep in range(args.repeats + 1):
        for dtype in DTYPES:
            r = runs[dtype]
            t0 = time.perf_counter()
            jax.block_until_ready(r["step"](r["params"], r["opt_state"], r["chains"], jnp.asarray(rep)))
            t_step = time.perf_counter() - t0
            phases, _ = common.time_phases(r["phases"], r["params"], r["opt_state"], r["chains"],
                                           rep, barrier)
            if rep == 0:
                continue  # compiling
            times[dtype].setdefault("step", []).append(t_step)
            for name, seconds in phases.items():
                times[dtype].setdefault(name, []).append(seconds)
            times[dtype].setdefault("network", []).append(
                phases["sampling"] + phases["local_energy"] + phases["jacobian"])
    n_params = common.count_params(runs["float64"]["params"])
    print(f"\n{job}: P = {n_params}, {runs['float64']['setup'].config.sampler.n_samples} samples, "
          f"{args.repeats} alternated pairs, load {common.load_average()}")
    print("| part | float64 s | float32 s | ratio float32/float64 (median, min-max) |")
    print("|---|---|---|---|")
    for name in ("step", *common.PHASES, "network"):
        a, b = np.array(times["float64"][name]), np.array(times["float32"][name])
        ratio = b / a
        print(f"| {name} | {np.median(a):.3f} | {np.median(b):.3f} | **{np.median(ratio):.2f}** "
              f"({ratio.min():.2f}-{ratio.max():.2f}) |")
    sys.stdout.flush()


def accuracy(args: argparse.Namespace, comm: Any) -> None:
    """Orbit-sum and Monte Carlo 4 x 4 runs in both dtypes; prints energies and errors."""
    import contextlib
    import io

    from hpcvmc.build import build
    from hpcvmc.config import load
    from hpcvmc.driver import HISTORY_CSV, run
    from hpcvmc.measure import read_final
    from hpcvmc.reference import lattice_ed

    exact = lattice_ed.ground_state_energy(4, 1.0, 0.5)
    rows = []
    for job, steps in ((EXACT_JOB, args.exact_steps), (MC_JOB, args.mc_steps)):
        for dtype in DTYPES:
            out = Path(args.output) / f"{Path(job).stem}_{dtype}"
            setup = build(load(job, overrides=[f"run.output={out}", f"run.steps={steps}",
                                               f"model.dtype={dtype}", *args.set]), comm)
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                code = run(setup, progress_every=max(1, steps))
            seconds = time.perf_counter() - t0
            history = np.genfromtxt(out / HISTORY_CSV, delimiter=",", names=True)
            final = read_final(out)
            final = (f"{final['energy']['mean']:.5f} +- {final['energy']['error']:.5f}"
                     if final else "none")
            rows.append((job, dtype, steps, code, float(history["energy"][-1]), final, seconds))
            print(f"{job} {dtype}: exit {code}, {steps} steps in {seconds:.0f} s, "
                  f"last-step energy {history['energy'][-1]:.8f}, final {final}", flush=True)
    print("\n| job | dtype | steps | energy of the last step | final measurement | wall s |")
    print("|---|---|---|---|---|---|")
    for job, dtype, steps, code, energy, final, seconds in rows:
        rel = f" (rel. error {abs((energy - exact) / exact):.2e})"
        print(f"| {Path(job).name} | {dtype} | {steps} | {energy:.8f}{rel} | {final} | {seconds:.0f} |")


def main() -> None:
    args = parse_args()
    comm = common.start(args)
    print(f"{common.machine()}, load {common.load_average()}")
    if args.part in ("cost", "both"):
        for job in args.jobs:
            cost(args, comm, job)
    if args.part in ("accuracy", "both"):
        accuracy(args, comm)


if __name__ == "__main__":
    main()
