"""Cost of a VMC step with factored against standard attention, as a ratio measured in one run.

Run from the repository root (``PYTHONPATH=.`` unless hpcvmc is installed)::

    python bench/attention_cost.py                                   # the 6 x 6 pair, CPU
    python bench/attention_cost.py --jobs jobs/vit_4x4_factored.toml jobs/vit_4x4_standard.toml
    python bench/attention_cost.py --platform gpu                    # one GPU

Each input is built once and its whole driver step (sampling, local energy, Jacobian, minSR
solve, update: :func:`hpcvmc.driver.make_step`) compiled by one untimed step; then the steps of
the inputs are timed in turns (A, B, A, B, ...), so that a change of the machine's load falls on
both alike, and the printed ratio is that of the medians (with the ratio of the quartiles as its
spread). The inputs should differ only in ``model.attention`` (equal d, h, depth, patch,
symmetrization and samples), as the jobs of the pairs do.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import common  # noqa: E402

DEFAULT_JOBS = ("jobs/vit_6x6_factored.toml", "jobs/vit_6x6_standard.toml")


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_common_args(parser)
    parser.add_argument("--jobs", nargs=2, default=DEFAULT_JOBS, metavar=("A", "B"),
                        help="the two inputs (factored first)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps of each input")
    return parser.parse_args()


class Stepper:
    """One input's jitted driver step and its evolving state."""

    def __init__(self, job: str, overrides: list[str], comm: Any) -> None:
        from hpcvmc.driver import fresh_state, make_step

        self.setup = common.build_setup(job, overrides, comm)
        self.state = fresh_state(self.setup)
        self.step_fn = make_step(self.setup)
        self.n_params = common.count_params(self.state.params)
        self.seconds: list[float] = []

    def step(self, barrier: Any) -> float:
        """Run one step (all ranks start together); returns its wall seconds."""
        import jax
        import jax.numpy as jnp

        s = self.state
        barrier()
        t0 = time.perf_counter()
        result = jax.block_until_ready(
            self.step_fn(s.params, s.opt_state, s.chains, jnp.asarray(s.step)))
        seconds = time.perf_counter() - t0
        self.state = s._replace(step=s.step + 1, params=result.params,
                                opt_state=result.opt_state, chains=result.chains)
        return seconds


def main() -> None:
    args = parse_args()
    comm = common.start(args)
    import jax.numpy as jnp

    def barrier() -> None:
        comm.sum(jnp.zeros(()))

    overrides = [*common.BENCH_DEFAULTS, *args.set]
    steppers = [Stepper(job, overrides, comm) for job in args.jobs]
    for stepper in steppers:
        stepper.step(barrier)  # compiles
    with common.CpuMeter() as meter:
        for _ in range(args.steps):
            for stepper in steppers:
                stepper.seconds.append(stepper.step(barrier))
    if not comm.is_root:
        return
    print(f"machine: {common.machine()}, ranks {comm.size}, load {common.load_average()}, "
          f"CPU/wall {meter.ratio:.2f}, overrides {overrides}")
    stats = []
    for job, stepper in zip(args.jobs, steppers):
        model = stepper.setup.config.model
        median, q25, q75 = common.median_iqr(stepper.seconds)
        stats.append((median, q25, q75))
        print(f"{job}: {model.attention} attention, {stepper.n_params} parameters, "
              f"{median:.3f} s/step (IQR {q25:.3f}-{q75:.3f}, {args.steps} steps)")
    (a, a25, a75), (b, b25, b75) = stats
    print(f"ratio B/A {b / a:.2f} (quartiles {b25 / a25:.2f}-{b75 / a75:.2f}); "
          f"parameters B/A {steppers[1].n_params / steppers[0].n_params:.2f}")


if __name__ == "__main__":
    main()
