"""Time one VMC step of a job on the current device and report its peak device memory.

Used by bench/gpu_check.sh. Builds the job (``--set`` overrides as in ``hpcvmc run``), burns in
the chains, runs one compiling step, then ``--steps`` timed steps of the jitted driver step;
prints one Markdown table row:

    | job | dtype | samples | P | compile s | s/step | peak device memory MiB |

Peak memory is ``jax.devices()[0].memory_stats()["peak_bytes_in_use"]`` after the timed steps
(the whole process so far; "n/a" on a CPU, whose client keeps no statistics).

    python bench/device_step.py --job jobs/vit_6x6_factored.toml --platform gpu --set model.dtype=float32
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_args(parser)
    parser.add_argument("--steps", type=int, default=1, help="timed steps after the compiling one")
    args = parser.parse_args()
    comm = common.start(args)

    import jax
    import jax.numpy as jnp

    from hpcvmc.driver import make_step

    setup = common.build_setup(args.job, args.set, comm)
    params = setup.init_params()
    opt_state = setup.optimizer.init(params)
    chains = jax.jit(lambda p: setup.sampler.init(setup.logpsi, p, jnp.asarray(setup.chain_ids)))(params)
    step = make_step(setup)
    t0 = time.perf_counter()
    out = jax.block_until_ready(step(params, opt_state, chains, jnp.asarray(0)))
    compile_s = time.perf_counter() - t0
    seconds = []
    for k in range(args.steps):
        t0 = time.perf_counter()
        out = jax.block_until_ready(step(out.params, out.opt_state, out.chains, jnp.asarray(k + 1)))
        seconds.append(time.perf_counter() - t0)
    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    peak_s = "n/a" if peak is None else f"{peak / 2**20:.0f}"
    per_step = sorted(seconds)[len(seconds) // 2]
    if not bool(jnp.isfinite(jnp.real(out.stats.mean))):
        raise SystemExit(f"device_step: {args.job}: non-finite energy")
    print(f"| {Path(args.job).name} | {setup.config.model.dtype} | {setup.config.sampler.n_samples} | "
          f"{common.count_params(params)} | {compile_s:.1f} | {per_step:.3f} | {peak_s} |", flush=True)


if __name__ == "__main__":
    main()
