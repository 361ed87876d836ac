"""hpcvmc's exchange sampler and NetKet's MetropolisExchange against exact |psi|^2 on 4 x 4.

Run from the repository root (``PYTHONPATH=.`` unless hpcvmc is installed)::

    python bench/sampler_vs_netket.py

A fixed random complex RBM (alpha = 2, weights N(0, scale^2)) on the 12,870 Sz = 0 states of
the 4 x 4 lattice; both samplers propose exchanges of nearest and next-nearest pairs (NetKet:
``d_max = 1`` on ``nk.graph.Square(4, max_neighbor_order=2)``) with the same chains, burn-in,
sweeps between samples and samples per chain. The states are cut into ``--bins`` bins of equal
exact probability (by sorted |psi|^2); each sampler's bin counts are compared with the exact
expectation by a chi-square test (dof = bins - 1), and the two samplers' mean of
sum_<ij> s_i s_j / 4 over nearest-neighbour pairs with the exact value.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import common  # noqa: E402


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chains", type=int, default=1024)
    parser.add_argument("--samples-per-chain", type=int, default=16)
    parser.add_argument("--sweeps", type=int, default=4, help="sweeps between samples")
    parser.add_argument("--burn-in", type=int, default=100, help="sweeps")
    parser.add_argument("--bins", type=int, default=20)
    parser.add_argument("--scale", type=float, default=0.1, help="RBM weight scale")
    parser.add_argument("--seed", type=int, default=3)
    return parser.parse_args()


def main() -> None:
    """Sample with both codes, print chi-square statistics and a correlation check."""
    args = parse_args()
    args.platform, args.threads = "cpu", 1
    common.start(args)
    import jax
    import jax.numpy as jnp
    import netket as nk
    import scipy.stats

    from hpcvmc.models.rbm import RBM
    from hpcvmc.metropolis import Metropolis
    from hpcvmc.sampling import ExchangeMoves
    from hpcvmc.systems.lattice import J1J2, sz0_configurations

    L, n = 4, 16
    model = RBM(alpha=2)
    params = model.init(jax.random.PRNGKey(0), jnp.ones((1, n)))["params"]
    keys = iter(jax.random.split(jax.random.PRNGKey(args.seed), 16))
    params = jax.tree_util.tree_map(
        lambda p: args.scale * jax.random.normal(next(keys), p.shape), params)
    logpsi = jax.jit(lambda p, x: model.apply({"params": p}, x))

    states = sz0_configurations(n)
    log_p = 2 * np.asarray(logpsi(params, jnp.asarray(states))).real
    p = np.exp(log_p - log_p.max())
    p /= p.sum()
    order = np.argsort(p)
    cumulative = np.cumsum(p[order])
    bin_of_state = np.empty(len(states), int)
    bin_of_state[order] = np.minimum((cumulative * args.bins).astype(int), args.bins - 1)
    bin_of_state = np.unique(bin_of_state, return_inverse=True)[1]  # no empty bins
    n_bins = int(bin_of_state.max()) + 1
    expected = np.bincount(bin_of_state, weights=p, minlength=n_bins)
    index = {s.tobytes(): i for i, s in enumerate(states.astype(np.int8))}
    nn_bonds = J1J2(L=L).bonds()[0]
    zz = np.sum(states[:, nn_bonds[:, 0]] * states[:, nn_bonds[:, 1]], axis=1) / 4
    zz_exact = float(p @ zz)

    # hpcvmc
    system = J1J2(L=L)
    sampler = Metropolis(rule=ExchangeMoves(n_sites=n, pairs=system.exchange_pairs()),
                         n_chains=args.chains, samples_per_chain=args.samples_per_chain,
                         sweeps=args.sweeps, burn_in=args.burn_in, discard=0, seed=args.seed)
    chains = jnp.arange(args.chains)
    state = jax.jit(lambda: sampler.init(logpsi, params, chains))()
    batch, _ = jax.jit(lambda st: sampler.sample(logpsi, params, st, chains, 0))(state)
    ours = np.asarray(batch.x).reshape(-1, n)

    # NetKet
    graph = nk.graph.Square(L, max_neighbor_order=2)
    hilbert = nk.hilbert.Spin(0.5, N=n, total_sz=0)
    nk_sampler = nk.sampler.MetropolisExchange(hilbert, graph=graph, d_max=1,
                                               n_chains=args.chains, sweep_size=args.sweeps * n)
    variables = {"params": params}
    nk_state = nk_sampler.init_state(model, variables, seed=args.seed)
    nk_state = nk_sampler.reset(model, variables, nk_state)
    _, nk_state = nk_sampler.sample(model, variables, state=nk_state,
                                    chain_length=args.burn_in // args.sweeps)
    theirs, _ = nk_sampler.sample(model, variables, state=nk_state,
                                  chain_length=args.samples_per_chain)
    theirs = np.asarray(theirs).reshape(-1, n)

    print(f"# 4 x 4 Sz = 0 (12,870 states), RBM alpha 2 scale {args.scale}: max p / min p "
          f"{p.max() / p.min():.3g}; {args.chains} chains x {args.samples_per_chain} samples, "
          f"{args.sweeps} sweeps apart, burn-in {args.burn_in} sweeps; {n_bins} bins of "
          f"equal |psi|^2 mass")
    print("| sampler | chi2 / dof | p-value | <sum_nn S^z S^z> | exact | z |")
    print("|---|---|---|---|---|---|")
    for name, x in (("hpcvmc ExchangeSampler", ours), ("NetKet MetropolisExchange", theirs)):
        idx = np.array([index[s.tobytes()] for s in np.rint(x).astype(np.int8)])
        counts = np.bincount(bin_of_state[idx], minlength=n_bins)
        chi2, p_value = scipy.stats.chisquare(counts, expected * len(x))
        values = zz[idx].reshape(args.chains, -1).mean(axis=1)  # chain means: correlations
        err = values.std(ddof=1) / np.sqrt(len(values))
        print(f"| {name} | {chi2 / (n_bins - 1):.2f} | {p_value:.3f} | "
              f"{values.mean():.5f} +- {err:.5f} | {zz_exact:.5f} | "
              f"{(values.mean() - zz_exact) / err:+.2f} |")


if __name__ == "__main__":
    main()
