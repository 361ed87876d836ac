"""Cost of a VMC step with the samples evaluated once per class (``sampler.deduplicate``).

For one job (default: the 4 x 4 Monte Carlo ViT, ``jobs/vit_4x4_factored_mc.toml``) and one set
of parameters (the job's initial ones, or ``--state FILE.h5``, an exported state such as the
trained ``results/vit_4x4_factored_mc.h5``), the driver step runs with ``deduplicate = "none"``,
``"configurations"`` and ``"orbits"`` in turn inside this one process, from the same parameters
(not updated between timings) with chains burnt in once and carried on. One untimed compiling
step per mode, then ``--repeats`` timed rounds. Printed per mode: median step seconds, the
median of the per-round ratios to "none", and the mean number of classes per step (samples of
the timed steps grouped by each mode's codes).

    python bench/deduplication.py [--state results/vit_4x4_factored_mc.h5] [--repeats 5]
        [--job JOB] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

DEFAULT_JOB = "jobs/vit_4x4_factored_mc.toml"
MODES = ("none", "configurations", "orbits")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_args(parser)
    parser.set_defaults(job=DEFAULT_JOB)
    parser.add_argument("--state", default=None, help="exported state whose parameters are used")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds over the modes")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    comm = common.start(args)
    import jax
    import jax.numpy as jnp

    from hpcvmc import checkpoint as ckpt
    from hpcvmc import export
    from hpcvmc.deduplication import Deduplication
    from hpcvmc.driver import make_step

    setups = {mode: common.build_setup(args.job, [*args.set, f"sampler.deduplicate={mode}"], comm)
              for mode in MODES}
    first = setups["none"]
    params = first.init_params()
    if args.state:
        state = export.read(args.state)
        params = ckpt.restore_tree(jax.eval_shape(first.init_params), state.params, "params",
                                   Path(args.state))
    chain_ids = jnp.asarray(first.chain_ids)
    chains = jax.jit(lambda p: first.sampler.init(first.logpsi, p, chain_ids))(params)
    opt_state = first.optimizer.init(params)
    steps = {mode: make_step(setup) for mode, setup in setups.items()}
    sample = jax.jit(lambda p, c, k: first.sampler.sample(first.logpsi, p, c, chain_ids, k))
    n_sites = first.system.n_sites
    groupings = {mode: jax.jit(Deduplication.build(mode, n_sites, first.system.L).classes)
                 for mode in MODES[1:]}
    seconds: dict[str, list[float]] = {mode: [] for mode in MODES}
    classes: dict[str, list[int]] = {mode: [] for mode in MODES[1:]}
    for round_ in range(args.repeats + 1):
        batch, _ = sample(params, chains, round_)
        x = batch.x.reshape(-1, n_sites)
        for mode, classify in groupings.items():
            classes[mode].append(int(comm.sum(classify(x).count)))
        for mode in MODES:
            start = time.perf_counter()
            out = jax.block_until_ready(steps[mode](params, opt_state, chains, jnp.asarray(round_)))
            if round_:  # round 0 compiles
                seconds[mode].append(time.perf_counter() - start)
        chains = out.chains
    n_samples = first.sampler.samples_per_step(comm)
    label = args.state or "initial parameters"
    print(f"# {args.job} ({label}), {n_samples} samples per step, {comm.size} rank(s), "
          f"{common.machine()}, load {common.load_average()}; {args.repeats} timed rounds")
    print("| sampler.deduplicate | s / step (median) | ratio to none (median, min-max) | "
          "classes per step (mean) |")
    print("|---|---|---|---|")
    base = np.array(seconds["none"])
    for mode in MODES:
        t = np.array(seconds[mode])
        ratio = t / base
        count = f"{np.mean(classes[mode]):.1f}" if mode in classes else f"{n_samples} (all)"
        print(f"| {mode} | {np.median(t):.2f} | **{np.median(ratio):.2f}** "
              f"({ratio.min():.2f}-{ratio.max():.2f}) | {count} |")


if __name__ == "__main__":
    main()
