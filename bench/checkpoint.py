"""Time a checkpoint write and read of a large state (issue: "well under a second").

    python bench/checkpoint.py [--params 1000000] [--walkers 10000] [--sites 100] [--repeats 5]

Builds a synthetic state of the given size (float64 parameters in 20 leaves, walkers of
`sites` spins with complex log psi and counters, 1000 history rows), writes it with
hpcvmc.checkpoint.save (checksum, fsync, atomic rename) into a temporary folder and reads it
back with validation; prints min / median of each and the file size.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np

from hpcvmc import checkpoint as ckpt


def synthetic_snapshot(n_params: int, n_walkers: int, n_sites: int) -> ckpt.Snapshot:
    rng = np.random.default_rng(0)
    leaves = 20
    params = {f"layer_{i}": {"kernel": rng.standard_normal(n_params // leaves)} for i in range(leaves)}
    chains = {
        "x": rng.choice([-1.0, 1.0], size=(n_walkers, n_sites)),
        "logpsi": rng.standard_normal(n_walkers) + 1j * rng.standard_normal(n_walkers),
        "accepted": rng.integers(0, 1000, n_walkers),
        "proposed": rng.integers(0, 1000, n_walkers),
    }
    history = {k: rng.standard_normal(1000) for k in ("energy", "error", "variance", "seconds")}
    opt_state = {"step": np.int32(1000), "momentum": rng.standard_normal(n_params)}
    return ckpt.Snapshot(step=1000, params=params, opt_state=opt_state, chains=chains,
                         history=history, input_toml="[run]\n", physics_hash="0" * 64, seed=1,
                         n_ranks=1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--params", type=int, default=1_000_000)
    p.add_argument("--walkers", type=int, default=10_000)
    p.add_argument("--sites", type=int, default=100)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    snap = synthetic_snapshot(args.params, args.walkers, args.sites)
    writes, reads = [], []
    with tempfile.TemporaryDirectory(dir=".") as folder:
        for r in range(args.repeats):
            snap.step = r + 1
            start = time.perf_counter()
            path = ckpt.save(snap, folder, keep=2)
            writes.append(time.perf_counter() - start)
            start = time.perf_counter()
            ckpt.read(path)
            reads.append(time.perf_counter() - start)
        size = path.stat().st_size / 2**20
    print(f"state: {args.params} params (+ {args.params} momentum), {args.walkers} walkers x "
          f"{args.sites} sites; file {size:.1f} MiB")
    print(f"write (checksum + fsync + rename): min {min(writes):.3f} s, median {statistics.median(writes):.3f} s")
    print(f"read (with validation):            min {min(reads):.3f} s, median {statistics.median(reads):.3f} s")


if __name__ == "__main__":
    main()
