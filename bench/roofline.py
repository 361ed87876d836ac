"""FLOPs of one hpcvmc VMC step against the matrix-product rate measured in the same run.

Run from the repository root (``PYTHONPATH=.`` unless hpcvmc is installed)::

    python bench/roofline.py                     # CPU, one XLA thread
    python bench/roofline.py --platform gpu      # one GPU

FLOP model of one step (real flops; complex arithmetic counted as XLA counts it), per phase:

* sampling: ``(discard + samples_per_chain * sweeps) * n_sites`` proposals per chain, one
  forward pass each (``f`` = flops of one configuration's log psi, symmetrization included,
  from XLA's cost analysis of the compiled forward pass);
* local energy: one forward pass per sample and one per *antiparallel* bond of each sample
  (only those are evaluated; their count is taken from the samples of this run);
* Jacobian: XLA's cost analysis of the compiled per-sample reverse-mode Jacobian (Re and Im) of
  one chunk, times the number of chunks;
* kernel + solve: the lower block triangle of the (2 N_s) x (2 N_s) kernel,
  ``(1 + 1/k) N^2 P`` with N = 2 N_s, Cholesky ``N^3 / 3``, and ``O^T x``, ``2 N P``.

The reference rate is a float64 (or ``--dtype``) square matrix product of ``--matmul-size``
on the same threads, timed interleaved with the steps: the machine's practical peak. The
fraction printed is (flops of a step / seconds of the real driver step) / (matmul rate); per
phase, the phase's flops over its own time (phases jitted separately, ``bench/common.py``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import common  # noqa: E402

def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_common_args(parser)
    parser.add_argument("--steps", type=int, default=4, help="timed steps (after one warm-up)")
    parser.add_argument("--matmul-size", type=int, default=1024, help="reference GEMM side")
    parser.add_argument("--dtype", default="float64", help="reference GEMM dtype")
    return parser.parse_args()


def forward_flops(setup: Any, params: Any, batch: int = 64) -> float:
    """Flops of log psi of one configuration (XLA's cost analysis of a batch / batch)."""
    import jax
    import jax.numpy as jnp

    x = jnp.ones((batch,) + tuple(setup.system.config_shape))
    compiled = jax.jit(setup.logpsi).lower(params, x).compile()
    return _flops(compiled) / batch


def jacobian_flops(setup: Any, params: Any, n_samples: int) -> float:
    """Flops of the Jacobian of ``n_samples`` samples (one chunk analysed, times chunks)."""
    import jax
    import jax.numpy as jnp

    from hpcvmc.optim.jacobian import jacobian

    chunk = min(setup.config.optimizer.chunk_size, n_samples)
    x = jnp.ones((chunk,) + tuple(setup.system.config_shape))
    compiled = jax.jit(lambda p, x: jacobian(setup.logpsi, p, x, chunk)).lower(params, x).compile()
    return _flops(compiled) * -(-n_samples // chunk)


def _flops(compiled: Any) -> float:
    """The 'flops' entry of a compiled computation's cost analysis."""
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list):
        analysis = analysis[0]
    return float(analysis["flops"])


def antiparallel_fraction(setup: Any, x: Any) -> float:
    """Mean fraction of the bonds with antiparallel spins in configurations x."""
    pairs = setup.system.bonds()[0]
    x = np.asarray(x)
    return float(np.mean(x[:, pairs[:, 0]] * x[:, pairs[:, 1]] < 0))


def step_flops(setup: Any, params: Any, ranks: int, x: Any = None) -> dict[str, float]:
    """The FLOP model of one step (module docstring): per phase, total, and per rank.

    Args:
        setup: the run.
        params: parameters (for the cost analyses).
        ranks: R (samples and kernel columns divide over ranks; Cholesky does not).
        x: configurations giving the antiparallel-bond fraction (None: one half).
    """
    from hpcvmc.optim.minsr import _gram_row_blocks

    cfg, system = setup.config, setup.system
    n_samples, n_params = cfg.sampler.n_samples, common.count_params(params)
    f = forward_flops(setup, params)
    moves = (cfg.sampler.discard + cfg.sampler.samples_per_chain * cfg.sampler.sweeps)
    n_bonds = len(system.bonds()[0])
    fraction = 0.5 if x is None else antiparallel_fraction(setup, x)
    n_kernel = 2 * n_samples
    blocks = _gram_row_blocks(n_kernel)
    kernel = (1 + 1 / blocks) * n_kernel**2 * n_params
    cholesky = n_kernel**3 / 3
    flops = {
        "sampling": moves * system.n_sites * cfg.sampler.n_chains * f,
        "local_energy": n_samples * (1 + fraction * n_bonds) * f,
        "jacobian": jacobian_flops(setup, params, n_samples // ranks) * ranks,
        "kernel_solve": kernel + cholesky + 2 * n_kernel * n_params,
    }
    flops["total"] = sum(flops.values())
    flops["per_rank"] = (flops["total"] - cholesky) / ranks + cholesky
    flops["forward"] = f
    return flops


def matmul_runner(size: int, dtype: str) -> tuple[Any, float]:
    """A compiled square matrix product and its flop count."""
    import jax

    a = jax.random.normal(jax.random.PRNGKey(0), (size, size), dtype)
    product = jax.jit(lambda a: a @ a)
    product(a).block_until_ready()
    return (lambda: product(a).block_until_ready()), 2.0 * size**3


def main() -> None:
    """Time steps, phases and the reference product interleaved; print the roofline table."""
    args = parse_args()
    args.set = common.BENCH_DEFAULTS + args.set
    load_before = common.load_average()
    comm = common.start(args)
    import jax
    import jax.numpy as jnp

    from hpcvmc.driver import fresh_state, make_step

    setup = common.build_setup(args.job, args.set, comm)
    state = fresh_state(setup)
    step_fn, phases = make_step(setup), common.make_phases(setup)
    matmul, matmul_flops = matmul_runner(args.matmul_size, args.dtype)
    params, opt_state, chains = state.params, state.opt_state, state.chains
    step_times, matmul_times, phase_times = [], [], []
    for k in range(1 + args.steps):
        t0 = time.perf_counter()
        out = step_fn(params, opt_state, chains, jnp.asarray(k))
        jax.block_until_ready(out.params)
        seconds = time.perf_counter() - t0
        if k:
            step_times.append(seconds)
            phase_times.append(common.warm_time_phases(phases, params, opt_state, chains, k,
                                                       lambda: None))
            t0 = time.perf_counter()
            matmul()
            matmul_times.append(time.perf_counter() - t0)
        params, opt_state, chains = out.params, out.opt_state, out.chains
    flops = step_flops(setup, params, 1, chains.x)
    peak = matmul_flops / np.median(matmul_times)
    step_s = float(np.median(step_times))
    print(f"# {common.machine()}; load {load_before} -> {common.load_average()}; platform "
          f"{args.platform}; threads {args.threads}; {args.job} {' '.join(args.set)}")
    print(f"# P = {common.count_params(params)}, N_s = {setup.config.sampler.n_samples}, "
          f"forward pass {flops['forward'] / 1e6:.2f} MFLOP per configuration; reference "
          f"{args.dtype} GEMM {args.matmul_size}^3: {peak / 1e9:.1f} GFLOP/s")
    print("| phase | GFLOP | s | GFLOP/s | fraction of GEMM rate |")
    print("|---|---|---|---|---|")
    for name in common.PHASES:
        seconds = float(np.median([t[name] for t in phase_times]))
        rate = flops[name] / seconds
        print(f"| {name} | {flops[name] / 1e9:.1f} | {seconds:.2f} | {rate / 1e9:.1f} "
              f"| {rate / peak:.0%} |")
    rate = flops["total"] / step_s
    print(f"| whole step (driver) | {flops['total'] / 1e9:.1f} | {step_s:.2f} | "
          f"{rate / 1e9:.1f} | {rate / peak:.0%} |")


if __name__ == "__main__":
    main()
