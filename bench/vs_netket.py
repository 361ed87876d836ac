"""hpcvmc against NetKet 3.23 (``VMC_SR`` with the tangent kernel) at equal settings, one process.

Run from the repository root (``PYTHONPATH=.`` unless hpcvmc is installed)::

    python bench/vs_netket.py                      # CPU, one XLA thread
    python bench/vs_netket.py --platform gpu       # one GPU

Both codes optimize the same flax module (hpcvmc's ViT built from ``--job``, by default
``jobs/vit_6x6_factored.toml``: 6 x 6 J1-J2 at J2 = 0.5) from the same initial parameters and the
same initial chain configurations, with the same number of samples, chains, sweeps and steps, the
same local-energy batches (NetKet's ``chunk_size`` counts samples, each with its 145 connected
configurations; ours counts configurations per network call) and Jacobian chunks, and the same
minSR solve (dense Jacobian, ``(O O^T + lambda I)^-1``, Cholesky). NetKet gets
``MetropolisExchange`` over the nearest and next-nearest pairs (``d_max = 1`` on the J1-J2 graph),
the jax Heisenberg operator with the Marshall sign rule on the J1 bonds, ``VMC_SR(use_ntk=True,
on_the_fly=--netket-on-the-fly)`` with hpcvmc's diagonal-shift schedule and SPRING momentum
(``momentum`` = ``optimizer.momentum``, the same recursion), and ``optax.sgd``. Settings NetKet
lacks (``optimizer.max_update_norm``, ``optimizer.clip_local_energy``) are refused. The steps
alternate (one NetKet step, one hpcvmc step, ...) inside one ``driver.run`` through its callback,
so machine load hits both alike; medians are reported.

Conventions that differ (and are converted here): NetKet's Heisenberg uses Pauli matrices, so
its energies are 4x ours (S = sigma / 2); its minSR right-hand side is ``2 (E_L - <E_L>) /
sqrt(N_s)`` against our ``(E_L - <E_L>) / sqrt(N_s)``. NetKet's learning rate is therefore ours
/ 8, which makes the two parameter updates equal for equal samples.

Physics checks: (1) NetKet's local energies (its operator's connected elements and matrix
elements) of hpcvmc's first batch of samples equal 4x hpcvmc's, to rounding; (2) the two energy
trajectories agree statistically: per step z = (E_ours - E_NetKet / 4) / sqrt(err_ours^2 +
(err_NetKet / 4)^2) should look like N(0, 1) (chi^2 / steps ~ 1). One trajectory of each is a
weak test (the error bars ignore how the trajectories drift apart); ``bench/trajectories.py``
averages over sampler seeds, ``bench/same_samples.py`` compares the updates of identical
samples.

The hpcvmc headline is the real driver step (``hpcvmc.driver.make_step``). Its split into
sampling / local energy / Jacobian (with centring) / kernel + solve comes from the same building
blocks jitted separately (``bench/common.py``), timed on extra steps interleaved with the rest.
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
    parser.add_argument("--steps", type=int, default=6, help="timed steps of each code")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed steps of each (NetKet compiles on its first two)")
    parser.add_argument("--phase-repeats", type=int, default=2, help="steps timed phase by phase")
    parser.add_argument(
        "--netket-on-the-fly", choices=("auto", "true", "false"), default="false",
        help="NetKet's NTK mode: false = dense Jacobian like hpcvmc; auto = NetKet's default",
    )
    return parser.parse_args()


def netket_driver(setup: Any, params: Any, chains_x: Any, on_the_fly: str,
                  seed: int | None = None, momentum: bool = True) -> Any:
    """NetKet's VMC_SR driver with hpcvmc's model, settings, parameters and chain states.

    ``seed`` seeds NetKet's sampler (default: hpcvmc's ``run.seed``); ``momentum = False``
    leaves SPRING off on NetKet's side whatever hpcvmc's ``optimizer.momentum`` (a deliberately
    mismatched comparison, to measure what SPRING changes)."""
    import netket as nk
    import optax

    cfg, system = setup.config, setup.system
    graph, hilbert, hamiltonian = netket_j1j2(system)
    sampler = nk.sampler.MetropolisExchange(
        hilbert, graph=graph, d_max=1, n_chains=cfg.sampler.n_chains,
        sweep_size=cfg.sampler.sweeps * system.n_sites,
    )
    vstate = nk.vqs.MCState(
        sampler, setup.model, n_samples=cfg.sampler.n_samples,
        n_discard_per_chain=cfg.sampler.discard // cfg.sampler.sweeps,  # NetKet: in samples
        # NetKet chunks samples (each with its n_bonds + 1 connected configurations); ours
        # counts configurations per network call: the same batches, in samples
        chunk_size=max(1, system.chunk_size // (len(system.bonds()[0]) + 1)),
        seed=cfg.run.seed, sampler_seed=cfg.run.seed if seed is None else seed,
    )
    vstate.parameters = params
    state = vstate.sampler_state
    vstate.sampler_state = state.replace(σ=chains_x.astype(state.σ.dtype))
    optimizer = setup.optimizer
    if optimizer.max_update_norm or cfg.optimizer.clip_local_energy:
        raise SystemExit("NetKet's VMC_SR has no optimizer.max_update_norm or "
                         "optimizer.clip_local_energy: set them to 0 for the comparison")
    lr = optimizer.learning_rate
    driver = nk.driver.VMC_SR(
        hamiltonian,
        optax.sgd((lambda t: lr(t) / 8) if callable(lr) else lr / 8),
        diag_shift=optimizer.diag_shift,
        momentum=(optimizer.spring_mu or None) if momentum else None,  # SPRING, as hpcvmc's
        variational_state=vstate,
        chunk_size_bwd=cfg.optimizer.chunk_size,
        mode="complex",
        use_ntk=True,
        on_the_fly={"auto": None, "true": True, "false": False}[on_the_fly],
        linear_solver=nk.optimizer.solver.cholesky,
    )
    return driver, hamiltonian


def netket_j1j2(system: Any) -> tuple[Any, Any, Any]:
    """NetKet's graph, Sz = 0 Hilbert space and jax Heisenberg operator (Pauli matrices: 4x our
    energies) of hpcvmc's J1-J2 system, its bonds checked to be ours."""
    import netket as nk

    graph = nk.graph.Square(system.L, max_neighbor_order=2)
    check_same_lattice(graph, system)
    hilbert = nk.hilbert.Spin(0.5, N=system.n_sites, total_sz=0)
    hamiltonian = nk.operator.Heisenberg(
        hilbert, graph, J=[system.J1, system.J2], sign_rule=[system.marshall_sign, False]
    ).to_jax_operator()
    return graph, hilbert, hamiltonian


def check_same_lattice(graph: Any, system: Any) -> None:
    """NetKet's J1 / J2 edges (colours 0 / 1) must be hpcvmc's bonds, site for site."""
    from hpcvmc.square_lattice import square_bonds

    for colour, ours in enumerate(square_bonds(system.L)):
        theirs = {tuple(sorted(e)) for e in graph.edges(filter_color=colour)}
        if theirs != {tuple(b) for b in ours.tolist()}:
            raise SystemExit(f"NetKet's edges of colour {colour} differ from hpcvmc's bonds")


def local_energy_check(setup: Any, hamiltonian: Any, params: Any, x: Any) -> float:
    """max |E_NetKet / 4 - E_hpcvmc| / max |E_hpcvmc| on the configurations x."""
    import jax
    import jax.numpy as jnp

    ours = jax.jit(lambda p, x: setup.system.local_energy(setup.logpsi, p, x))(params, x)
    connected, elements = hamiltonian.get_conn_padded(x.astype(jnp.int8))
    log_conn = setup.logpsi(params, connected.reshape(-1, x.shape[1])).reshape(elements.shape)
    theirs = jnp.sum(elements * jnp.exp(log_conn - setup.logpsi(params, x)[:, None]), axis=1)
    return float(jnp.max(jnp.abs(theirs / 4 - ours)) / jnp.max(jnp.abs(ours)))


class Alternation:
    """NetKet's run callback: times NetKet's step, then runs and times one hpcvmc step."""

    def __init__(self, setup: Any, state: Any, args: argparse.Namespace) -> None:
        from hpcvmc.driver import make_step

        self.setup, self.state, self.args = setup, state, args
        self.step_fn = make_step(setup)
        self.phases = common.make_phases(setup)
        self.times: dict[str, list[float]] = {"netket": [], "hpcvmc": []}
        self.phase_times: list[dict[str, float]] = []
        self.energies: dict[str, list[tuple[float, float]]] = {"netket": [], "hpcvmc": []}
        self.cpu: list[float] = []
        self.t0 = time.perf_counter()

    def __call__(self, step: int, log_data: dict, driver: Any) -> bool:
        import jax

        jax.block_until_ready(driver.state.parameters)
        energy = log_data["Energy"]
        self.record("netket", step, time.perf_counter() - self.t0,
                    (float(np.real(energy.mean)) / 4, float(energy.error_of_mean) / 4))
        self.hpcvmc_step(step)
        if step >= self.args.warmup and len(self.phase_times) < self.args.phase_repeats:
            st = self.state
            self.phase_times.append(common.warm_time_phases(
                self.phases, st.params, st.opt_state, st.chains, step, lambda: None))
        self.t0 = time.perf_counter()
        return True

    def hpcvmc_step(self, step: int) -> None:
        """One real driver step, to completion (as ``hpcvmc.driver.run`` does)."""
        import jax
        import jax.numpy as jnp

        st = self.state
        with common.CpuMeter() as meter:
            t0 = time.perf_counter()
            out = self.step_fn(st.params, st.opt_state, st.chains, jnp.asarray(int(step)))
            jax.block_until_ready(out.params)
            energy = (float(jnp.real(out.stats.mean)), float(out.stats.error))
            seconds = time.perf_counter() - t0
        self.record("hpcvmc", step, seconds, energy)
        if step >= self.args.warmup:
            self.cpu.append(meter.ratio)
        self.state = st._replace(params=out.params, opt_state=out.opt_state, chains=out.chains)

    def record(self, code: str, step: int, seconds: float, energy: tuple[float, float]) -> None:
        """Keep the energy of every step and the time of the steps after the warm-up."""
        self.energies[code].append(energy)
        if step >= self.args.warmup:
            self.times[code].append(seconds)


def trajectory_check(energies: dict[str, list[tuple[float, float]]]) -> dict[str, float]:
    """z-scores of the per-step energy differences (NetKet already divided by 4)."""
    ours, theirs = np.array(energies["hpcvmc"]), np.array(energies["netket"])
    z = (ours[:, 0] - theirs[:, 0]) / np.hypot(ours[:, 1], theirs[:, 1])
    return {"chi2_per_step": float(np.mean(z**2)), "mean_z": float(np.mean(z)),
            "max_abs_z": float(np.max(np.abs(z)))}


def report(alt: Alternation, args: argparse.Namespace, n_params: int, e_check: float,
           load_before: str) -> None:
    """Print the timing table, the phase split and the physics checks."""
    nk_med, nk_lo, nk_hi = common.median_iqr(alt.times["netket"])
    our_med, our_lo, our_hi = common.median_iqr(alt.times["hpcvmc"])
    ratios = np.array(alt.times["netket"]) / np.array(alt.times["hpcvmc"])
    cfg = alt.setup.config
    print(f"# {common.machine()}; load {load_before} -> {common.load_average()}; "
          f"platform {args.platform}; threads {args.threads}; hpcvmc CPU/wall "
          f"{np.median(alt.cpu):.2f}")
    print(f"# {args.job} {' '.join(args.set)}: P = {n_params}, N_s = {cfg.sampler.n_samples}, "
          f"chains {cfg.sampler.n_chains}, sweeps {cfg.sampler.sweeps}, E_L chunk "
          f"{alt.setup.system.chunk_size}, Jacobian chunk {cfg.optimizer.chunk_size}, "
          f"NetKet on_the_fly {args.netket_on_the_fly}; {len(ratios)} timed steps each")
    print("| code | s/step median | IQR |")
    print("|---|---|---|")
    print(f"| NetKet 3.23 VMC_SR | {nk_med:.2f} | {nk_lo:.2f}-{nk_hi:.2f} |")
    print(f"| hpcvmc | {our_med:.2f} | {our_lo:.2f}-{our_hi:.2f} |")
    print(f"| ratio NetKet / hpcvmc (per alternated pair) | {np.median(ratios):.2f} "
          f"| {np.percentile(ratios, 25):.2f}-{np.percentile(ratios, 75):.2f} |")
    phases = {k: np.median([t[k] for t in alt.phase_times]) for k in common.PHASES}
    total = sum(phases.values())
    print("| hpcvmc phase | s | share |")
    print("|---|---|---|")
    for name, seconds in phases.items():
        print(f"| {name} | {seconds:.2f} | {seconds / total:.0%} |")
    print(f"| sum of phases (vs step {our_med:.2f}) | {total:.2f} | |")
    traj = trajectory_check(alt.energies)
    print(f"# local energies on the same samples: max |E_NetKet/4 - E_hpcvmc| / max|E| = "
          f"{e_check:.1e}")
    print(f"# energy trajectories over {len(alt.energies['netket'])} steps: chi2/step "
          f"{traj['chi2_per_step']:.2f}, mean z {traj['mean_z']:+.2f}, max |z| "
          f"{traj['max_abs_z']:.2f}")
    print("# step, E hpcvmc, err, E NetKet/4, err")
    for k, (a, b) in enumerate(zip(alt.energies["hpcvmc"], alt.energies["netket"])):
        print(f"# {k} {a[0]:.5f} {a[1]:.5f} {b[0]:.5f} {b[1]:.5f}")


def main() -> None:
    """Build both codes, alternate their steps, print the results."""
    args = parse_args()
    args.set = common.BENCH_DEFAULTS + args.set
    load_before = common.load_average()
    comm = common.start(args)
    if comm.size != 1:
        raise SystemExit("vs_netket.py compares single processes; run it without mpirun")
    from hpcvmc.driver import fresh_state

    setup = common.build_setup(args.job, args.set, comm)
    state = fresh_state(setup)
    driver, hamiltonian = netket_driver(setup, state.params, state.chains.x, args.netket_on_the_fly)
    e_check = local_energy_check(setup, hamiltonian, state.params, state.chains.x)
    alt = Alternation(setup, state, args)
    driver.run(args.warmup + args.steps, out=(), show_progress=False, callback=alt)
    report(alt, args, common.count_params(state.params), e_check, load_before)


if __name__ == "__main__":
    main()
