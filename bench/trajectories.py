"""Seed-averaged energy trajectories of hpcvmc and NetKet 3.23 from the same start, one process.

Run from the repository root (``PYTHONPATH=.`` unless hpcvmc is installed)::

    python bench/trajectories.py                          # 4 x 4, 4 seeds x 20 steps each
    python bench/trajectories.py --job jobs/vit_6x6_factored.toml --seeds 4 --steps 20

Both codes start from the same parameters and the same burnt-in chains (hpcvmc's, of
``run.seed``) and run ``--steps`` optimization steps at equal settings (NetKet's side is
``bench/vs_netket.py``'s ``netket_driver``: learning rate / 8, energies / 4, the same diagonal
shift schedule and SPRING momentum) once per sampler seed ``1000 + k``, k = 0 .. seeds - 1:
hpcvmc's ``Metropolis.seed`` and NetKet's ``sampler_seed``. The parameters' starting point
is fixed, so the spread over seeds is the Monte Carlo spread of the trajectory itself.

Per step it prints the mean over seeds of each code's energy estimate, the standard deviation
over seeds, and z = (mean_hpcvmc - mean_NetKet) / sqrt(sd_h^2 / K + sd_N^2 / K): z ~ N(0, 1)
when the two codes optimize alike; chi^2 / step and the mean z summarize it. Each code's
seconds per step (median, after its first two steps) are printed with their ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import common  # noqa: E402

DEFAULT_JOB = "jobs/vit_4x4_factored_mc.toml"
SEED_BASE = 1000


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_common_args(parser)
    parser.set_defaults(job=DEFAULT_JOB)
    parser.add_argument("--seeds", type=int, default=4, help="sampler seeds per code")
    parser.add_argument("--steps", type=int, default=20, help="optimization steps per seed")
    parser.add_argument(
        "--netket-momentum", choices=("same", "none"), default="same",
        help="NetKet's SPRING momentum: hpcvmc's optimizer.momentum (same) or off (none: a "
             "deliberately mismatched comparison)")
    return parser.parse_args()


def hpcvmc_trajectory(setup: Any, start: Any, seed: int, steps: int) -> tuple[list, list]:
    """hpcvmc's energies (mean, error) and step seconds with the sampler seeded ``seed``."""
    import jax
    import jax.numpy as jnp

    from hpcvmc.driver import make_step

    seeded = dataclasses.replace(setup, sampler=dataclasses.replace(setup.sampler, seed=seed))
    step_fn = make_step(seeded)
    params, opt_state, chains = start.params, start.opt_state, start.chains
    energies, seconds = [], []
    for step in range(steps):
        t0 = time.perf_counter()
        out = step_fn(params, opt_state, chains, jnp.asarray(step))
        jax.block_until_ready(out.params)
        seconds.append(time.perf_counter() - t0)
        energies.append((float(jnp.real(out.stats.mean)), float(out.stats.error)))
        params, opt_state, chains = out.params, out.opt_state, out.chains
    return energies, seconds


def netket_trajectory(setup: Any, start: Any, seed: int, steps: int,
                      momentum: bool = True) -> tuple[list, list]:
    """NetKet's energies / 4 (mean, error) and step seconds with ``sampler_seed = seed``."""
    import jax

    from vs_netket import netket_driver

    driver, _ = netket_driver(setup, start.params, start.chains.x, "false", seed=seed,
                              momentum=momentum)
    energies: list[tuple[float, float]] = []
    seconds: list[float] = []
    clock = [time.perf_counter()]

    def record(step: int, log_data: dict, drv: Any) -> bool:
        jax.block_until_ready(drv.state.parameters)
        now = time.perf_counter()
        seconds.append(now - clock[0])
        energy = log_data["Energy"]
        energies.append((float(np.real(energy.mean)) / 4, float(energy.error_of_mean) / 4))
        clock[0] = time.perf_counter()
        return True

    driver.run(steps, out=(), show_progress=False, callback=record)
    return energies, seconds


def summary(runs: list[list[tuple[float, float]]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per step over seeds: mean energy, standard deviation over seeds, mean reported error."""
    values = np.array(runs)  # (seeds, steps, 2)
    return values[..., 0].mean(0), values[..., 0].std(0, ddof=1), values[..., 1].mean(0)


def report(args: argparse.Namespace, setup: Any, n_params: int,
           runs: dict[str, list], seconds: dict[str, list]) -> None:
    """The per-step table, the z statistics and the step-time ratio."""
    k = args.seeds
    (m_h, s_h, e_h), (m_n, s_n, e_n) = summary(runs["hpcvmc"]), summary(runs["netket"])
    z = (m_h - m_n) / np.sqrt((s_h**2 + s_n**2) / k)
    cfg = setup.config
    print(f"# {common.machine()}; load {common.load_average()}; platform {args.platform}")
    print(f"# {args.job} {' '.join(args.set)}: P = {n_params}, N_s = {cfg.sampler.n_samples}, "
          f"chains {cfg.sampler.n_chains}, SPRING mu {setup.optimizer.spring_mu} (NetKet: "
          f"{args.netket_momentum}); {k} sampler "
          f"seeds ({SEED_BASE}..{SEED_BASE + k - 1}) x {args.steps} steps per code, same start")
    print("| step | hpcvmc E (mean of seeds) | sd over seeds | mean error | NetKet E / 4 | "
          "sd over seeds | mean error | z |")
    print("|---|---|---|---|---|---|---|---|")
    for t in range(args.steps):
        print(f"| {t} | {m_h[t]:.4f} | {s_h[t]:.4f} | {e_h[t]:.4f} | {m_n[t]:.4f} | "
              f"{s_n[t]:.4f} | {e_n[t]:.4f} | {z[t]:+.2f} |")
    print(f"# z over {args.steps} steps: chi2/step {np.mean(z**2):.2f}, mean z "
          f"{np.mean(z):+.2f}, max |z| {np.max(np.abs(z)):.2f}")
    last = slice(max(0, args.steps - 5), args.steps)
    print(f"# last {last.stop - last.start} steps, mean over steps and seeds: hpcvmc "
          f"{np.mean(m_h[last]):.4f}, NetKet / 4 {np.mean(m_n[last]):.4f}")
    med = {code: float(np.median([s for run in seconds[code] for s in run[2:]]))
           for code in seconds}
    print(f"# s/step (median after each run's first 2 steps): NetKet {med['netket']:.3f}, "
          f"hpcvmc {med['hpcvmc']:.3f}, ratio {med['netket'] / med['hpcvmc']:.2f}")


def main() -> None:
    """Run every seed of both codes from the same start; print the comparison."""
    args = parse_args()
    args.set = common.BENCH_DEFAULTS + args.set
    comm = common.start(args)
    if comm.size != 1:
        raise SystemExit("trajectories.py compares single processes; run it without mpirun")
    from hpcvmc.driver import fresh_state

    setup = common.build_setup(args.job, args.set, comm)
    start = fresh_state(setup)
    runs: dict[str, list] = {"hpcvmc": [], "netket": []}
    seconds: dict[str, list] = {"hpcvmc": [], "netket": []}
    for k in range(args.seeds):
        for code in ("hpcvmc", "netket"):
            if code == "hpcvmc":
                energies, times = hpcvmc_trajectory(setup, start, SEED_BASE + k, args.steps)
            else:
                energies, times = netket_trajectory(setup, start, SEED_BASE + k, args.steps,
                                                    args.netket_momentum == "same")
            runs[code].append(energies)
            seconds[code].append(times)
            print(f"# seed {SEED_BASE + k} {code}: " + " ".join(f"{e:.4f}" for e, _ in energies),
                  flush=True)
    report(args, setup, common.count_params(start.params), runs, seconds)


if __name__ == "__main__":
    main()
