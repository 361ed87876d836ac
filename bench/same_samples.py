"""hpcvmc's and NetKet's parameter updates from identical samples and parameters, one process.

Run from the repository root (``PYTHONPATH=.`` unless hpcvmc is installed)::

    python bench/same_samples.py                   # 4 x 4 J1-J2, jobs/vit_4x4_factored_mc.toml

hpcvmc's sampler draws ``--steps`` batches (one per step, the chains carried on, the parameters
moved by hpcvmc's own update). For each batch three updates of the same parameters are formed:

1. hpcvmc: ``setup.optimizer.update`` on ``centred_scaled(jacobian(...), E_L)`` (the driver's path);
2. NetKet 3.23: ``VMC_SR(use_ntk=True, mode="complex")``'s ``compute_loss_and_update`` with the
   batch written into its ``MCState`` as its samples, learning rate / 8 (Pauli energies are 4x
   ours, its right-hand side 2 (E_L - <E_L>) / sqrt(N_s)), the same diagonal shift and SPRING
   momentum (``momentum`` = hpcvmc's ``spring_mu``);
3. dense numpy, from the textbook formula in parameter space, with NetKet's local energies / 4:
   ``S = Re <dO^* dO>``, ``F = Re <dO^* (E_L - <E_L>)>`` (gradient 2 F), SPRING
   ``phi_t = mu phi_{t-1} + (S + lambda)^-1 (F - mu S phi_{t-1})``, step ``-eta_t phi_t``.

It prints, per step, ``||u_code - u_dense|| / ||u_dense||`` for both codes (rounding level
when the conventions agree) and the lengths of the three steps.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import common  # noqa: E402

DEFAULT_JOB = "jobs/vit_4x4_factored_mc.toml"


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_common_args(parser)
    parser.set_defaults(job=DEFAULT_JOB)
    parser.add_argument("--steps", type=int, default=3, help="batches (steps) compared")
    return parser.parse_args()


def dense_update(O: np.ndarray, e_loc: np.ndarray, lam: float, eta: float, mu: float,
                 phi_prev: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Textbook SR (SPRING) step in parameter space from raw O (n, P) and E_L (n,).

    Returns ``(step, phi)``: the step added to the parameters, ``-eta phi``, and phi.
    """
    dO = O - O.mean(axis=0)
    de = e_loc - e_loc.mean()
    n = len(e_loc)
    S = np.real(dO.conj().T @ dO) / n
    F = np.real(dO.conj().T @ de) / n
    phi = mu * phi_prev + np.linalg.solve(S + lam * np.eye(len(F)), F - mu * S @ phi_prev)
    return -eta * phi, phi


def main() -> None:
    """Draw the batches, form the three updates, print their differences."""
    args = parse_args()
    args.set = common.BENCH_DEFAULTS + args.set
    comm = common.start(args)
    import jax
    import jax.numpy as jnp
    import optax
    from jax.flatten_util import ravel_pytree

    from hpcvmc.driver import fresh_state
    from hpcvmc.optim.jacobian import centred_scaled, jacobian
    from vs_netket import netket_driver

    setup = common.build_setup(args.job, args.set, comm)
    state = fresh_state(setup)
    opt = setup.optimizer
    driver, hamiltonian = netket_driver(setup, state.params, state.chains.x, "false")
    vstate = driver.state
    chain_ids = jnp.asarray(setup.chain_ids)
    sample = jax.jit(lambda p, c, t: setup.sampler.sample(setup.logpsi, p, c, chain_ids, t))
    e_ours = jax.jit(lambda p, x: setup.system.local_energy(setup.logpsi, p, x))
    chunk = setup.config.optimizer.chunk_size

    @jax.jit
    def e_netket(p: Any, x: Any) -> Any:
        """NetKet's local energies: its operator's connected configurations and elements."""
        connected, elements = hamiltonian.get_conn_padded(x.astype(jnp.int8))
        log_conn = setup.logpsi(p, connected.reshape(-1, x.shape[1])).reshape(elements.shape)
        return jnp.sum(elements * jnp.exp(log_conn - setup.logpsi(p, x)[:, None]), axis=1)

    params, opt_state, chains = state.params, state.opt_state, state.chains
    mu = opt.spring_mu
    phi_prev = np.zeros(common.count_params(params))
    print(f"# {args.job} {' '.join(args.set)}: P = {phi_prev.size}, N_s = "
          f"{setup.config.sampler.n_samples}, mu = {mu}, NetKet momentum "
          f"{driver.momentum}")
    print("| step | eta | lambda | |u_dense| | |u_hpcvmc - u_dense| / |u_dense| "
          "| |u_NetKet - u_dense| / |u_dense| | E_L: max|E_NetKet/4 - E_hpcvmc| |")
    print("|---|---|---|---|---|---|---|")
    for step in range(args.steps):
        batch, chains = sample(params, chains, jnp.asarray(step))
        x = batch.x.reshape((-1,) + batch.x.shape[2:])
        e_loc = e_ours(params, x)
        O_raw = jacobian(setup.logpsi, params, x, chunk)
        O, eps = centred_scaled(O_raw, e_loc, comm)
        updates, new_opt_state, info = opt.update(O, eps, opt_state, params, comm)
        u_ours = np.asarray(ravel_pytree(updates)[0])

        vstate.parameters = params
        vstate._samples = batch.x.astype(vstate.sampler_state.σ.dtype)
        driver._step_count = step
        _, dp = driver.compute_loss_and_update()
        lr = float(opt.learning_rate(step) if callable(opt.learning_rate) else opt.learning_rate)
        u_nk = -lr / 8 * np.asarray(ravel_pytree(dp)[0])
        e_nk = np.concatenate([e_netket(params, x[i:i + 8]) for i in range(0, len(x), 8)]) / 4

        eta, lam = float(info["learning_rate"]), float(info["diag_shift"])
        u_dense, phi_prev = dense_update(np.asarray(O_raw), e_nk, lam, eta, mu, phi_prev)
        norm = np.linalg.norm(u_dense)
        print(f"| {step} | {eta:.4g} | {lam:.3g} | {norm:.4e} | "
              f"{np.linalg.norm(u_ours - u_dense) / norm:.2e} | "
              f"{np.linalg.norm(u_nk - u_dense) / norm:.2e} | "
              f"{np.max(np.abs(e_nk - np.asarray(e_loc))):.1e} |")
        params = optax.apply_updates(params, updates)
        opt_state = new_opt_state


if __name__ == "__main__":
    main()
