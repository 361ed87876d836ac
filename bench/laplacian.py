"""Time the Laplacian of the Psiformer's log psi: forward Laplacian against the Hessian trace.

    python bench/laplacian.py [--walkers 16] [--repeats 3]

For the models of jobs/psiformer_9sites_eps10.toml (6 electrons) and
jobs/psiformer_27sites_eps10.toml (18 electrons), on random walkers in the supercell, times the
jitted, walker-vmapped (nabla^2 log psi, nabla log psi) of each method of
``hpcvmc.laplacian.METHODS``: ``forward`` (folx), ``loop`` (nested jvp per coordinate) and
``hessian`` (trace of jax.hessian). Prints seconds per walker (best of ``repeats`` after one
compiling call), the compile time, the largest deviation from the Hessian trace and the speed-up
of each method over the Hessian trace.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from hpcvmc import config as C
from hpcvmc.build import system_and_model
from hpcvmc.laplacian import METHODS

JOBS = ("jobs/psiformer_9sites_eps10.toml", "jobs/psiformer_27sites_eps10.toml")


def timed(fn, *args, repeats: int) -> tuple[float, float, object]:
    """(compile + first call seconds, best of ``repeats`` calls in seconds, result)."""
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    first = time.perf_counter() - start
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
    return first, best, out


def bench_job(path: str, n_walkers: int, repeats: int) -> list[dict]:
    """One row per Laplacian method for the model and system of one job file."""
    cfg = C.load(path)
    system, model = system_and_model(cfg)
    params = model.init(jax.random.PRNGKey(0), jnp.ones((1,) + system.config_shape))["params"]
    frac = jax.random.uniform(jax.random.PRNGKey(1), (n_walkers,) + system.config_shape)
    walkers = frac @ jnp.asarray(system.cell)

    def f(r: jax.Array) -> jax.Array:
        return model.apply({"params": params}, r[None])[0]

    results = {}
    for name in ("hessian", "loop", "forward"):
        fn = jax.jit(jax.vmap(lambda x, m=METHODS[name]: m(f, x)))
        results[name] = timed(fn, walkers, repeats=repeats)
    _, t_ref, (lap_ref, grad_ref) = results["hessian"]
    rows = []
    for name, (first, best, (lap, grad)) in results.items():
        rows.append({
            "N": system.n_electrons, "sites": system.n_sites, "method": name,
            "params": sum(x.size for x in jax.tree_util.tree_leaves(params)),
            "s_per_walker": best / n_walkers, "compile_s": first - best,
            "deviation": float(max(np.max(np.abs(lap - lap_ref) / np.abs(lap_ref)),
                                   np.max(np.abs(grad - grad_ref)) / np.max(np.abs(grad_ref)))),
            "speedup": t_ref / best,
        })
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--walkers", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    jax.config.update("jax_enable_x64", True)
    print(f"jax {jax.__version__}, {jax.devices()[0].platform}, float64, "
          f"{args.walkers} walkers per call, best of {args.repeats}")
    print("| sites | N | params | method | ms / walker | compile s | rel. deviation "
          "| speed-up vs hessian |")
    print("|---|---|---|---|---|---|---|---|")
    for path in JOBS:
        for r in bench_job(path, args.walkers, args.repeats):
            print(f"| {r['sites']} | {r['N']} | {r['params']} | {r['method']} | "
                  f"{1e3 * r['s_per_walker']:.2f} | {r['compile_s']:.1f} | {r['deviation']:.1e} | "
                  f"{r['speedup']:.2f} |")


if __name__ == "__main__":
    main()
