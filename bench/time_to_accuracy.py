"""Time to accuracy: how fast a 4 x 4 ViT optimized from Monte Carlo samples reaches the exact energy.

Run from the repository root (``PYTHONPATH=.`` unless hpcvmc is installed); one process on one
XLA thread (``taskset -c K`` pins it to a core)::

    python bench/time_to_accuracy.py                  # both codes, 3 sampler seeds each
    python bench/time_to_accuracy.py --codes hpcvmc --seeds 1 --first-seed 1
    python bench/time_to_accuracy.py --codes hpcvmc --job jobs/vit_4x4_factored_mc_fast.toml
    python bench/time_to_accuracy.py --codes hpcvmc --set model.symmetrize=none \
        --stage '300:model.symmetrize=full'           # a recipe in stages

Both codes optimize the same flax module (hpcvmc's ViT of ``--job``, by default
``jobs/vit_4x4_factored_mc.toml``: 4 x 4 J1-J2 at J2 = 0.5, d = 16, 2 layers, projected onto
the space group x spin flip) from the same initial parameters (``run.seed``) with exchange-move
Metropolis samples; run k seeds the sampler with ``SEED_BASE + k``. Every ``--every`` steps,
outside the timed steps, the exact variational energy E of the current parameters is summed
over the Sz = 0 sector (over its 107 symmetry orbits for a projected model,
:class:`hpcvmc.sampling.ExactSampler`) and compared with the ground-state energy E0 (Lanczos):
relative error ``(E - E0) / |E0|``.

hpcvmc runs the job's settings with ``--set`` overrides; ``--stage STEP:overrides`` adds
overrides from step STEP on (e.g. the symmetry projection switched on late, more samples), the
parameters, optimizer state and chains carried over (a later stage's first step includes its
compilation). NetKet 3.23 runs ``VMC_SR`` with the
tangent kernel (``use_ntk``: minSR) at the settings of its ViT tutorial (NetKet repository,
docs/tutorials/ViT-wave-function: ``Sgd(learning_rate = 0.0075)``, ``diag_shift = 1e-4``, no
momentum, as many chains as samples, one sweep per sample, no burn-in) with
``--netket-samples`` samples. Its Heisenberg uses Pauli matrices: its energies are 4 x ours and
its learning rate 0.0075 is an hpcvmc learning rate of 0.06 (bench/vs_netket.py).

Reported per run: wall seconds of the timed steps (process CPU seconds beside them; the first,
compiling step counts as long as the second), steps and samples until the relative error first
falls below 1e-3, 5e-4 and 1e-4 (checked every ``--every`` steps), and the relative error
reached after 1/4, 1/2, 3/4 and all of the budget; per code the median over runs. A run stops at 1e-4 or once its timed steps pass ``--budget``
seconds (default 1200: 10 minutes of 2 cores, spent on one; the last step is evaluated then).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import common  # noqa: E402

DEFAULT_JOB = "jobs/vit_4x4_factored_mc.toml"
SEED_BASE = 2000
TARGETS = (1e-3, 5e-4, 1e-4)
NETKET_TUTORIAL = {"learning_rate": 0.0075, "diag_shift": 1e-4}
NETKET_CHUNK = 256
"""NetKet's local-energy chunk in samples (each with its 65 padded connected configurations, times
the model's symmetry terms): bounds its memory at 4096 samples."""


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    common.add_common_args(parser)
    parser.set_defaults(job=DEFAULT_JOB)
    parser.add_argument("--codes", nargs="+", choices=("hpcvmc", "netket"),
                        default=["hpcvmc", "netket"], help="which codes to run")
    parser.add_argument("--seeds", type=int, default=3, help="runs (sampler seeds) per code")
    parser.add_argument("--first-seed", type=int, default=0, help="k of the first run")
    parser.add_argument("--budget", type=float, default=1200.0,
                        help="wall seconds of timed steps per run (default: 10 minutes of 2 cores)")
    parser.add_argument("--every", type=int, default=5, help="steps between exact evaluations")
    parser.add_argument("--max-steps", type=int, default=100_000, help="steps per run at most")
    parser.add_argument("--netket-samples", type=int, default=4096,
                        help="NetKet's samples per step (its tutorial: 4096)")
    parser.add_argument(
        "--stage", action="append", default=[], metavar="STEP:SECTION.KEY=VALUE[,...]",
        help="hpcvmc only: from step STEP on, run with these overrides added (repeatable; e.g. "
             "'150:model.symmetrize=\"full\",sampler.n_samples=1024')")
    return parser.parse_args()


@dataclasses.dataclass
class Trace:
    """One run: per exact evaluation the step, cumulative wall and CPU seconds, samples and
    relative error."""

    code: str
    seed: int
    steps: list[int] = dataclasses.field(default_factory=list)
    wall: list[float] = dataclasses.field(default_factory=list)
    cpu: list[float] = dataclasses.field(default_factory=list)
    samples: list[int] = dataclasses.field(default_factory=list)
    rel_error: list[float] = dataclasses.field(default_factory=list)

    def record(self, step: int, wall: float, cpu: float, samples: int, rel: float) -> None:
        """Append one evaluation and print it."""
        self.steps.append(step)
        self.wall.append(wall)
        self.cpu.append(cpu)
        self.samples.append(samples)
        self.rel_error.append(rel)
        print(f"# {self.code} seed {self.seed}: step {step} wall {wall:.1f} s cpu {cpu:.1f} s "
              f"samples {samples} rel. error {rel:.3e}", flush=True)

    def error_at(self, wall: float) -> float:
        """Relative error of the last evaluation at or before ``wall`` seconds of steps."""
        return [rel for t, rel in zip(self.wall, self.rel_error) if t <= wall][-1]

    def first_below(self, target: float) -> tuple[float, float, int, int] | None:
        """(wall, cpu, steps, samples) at the first evaluation below ``target``, or None."""
        for i, rel in enumerate(self.rel_error):
            if rel < target:
                return self.wall[i], self.cpu[i], self.steps[i], self.samples[i]
        return None


class StepClock:
    """Cumulative wall and CPU seconds of the timed steps. The first step compiles: its time is
    replaced by the second step's (both codes alike)."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0
        self.count = 0

    def add(self, wall: float, cpu: float) -> None:
        """Count one step that took ``wall`` and ``cpu`` seconds."""
        self.count += 1
        if self.count == 2:
            wall, cpu = 2 * wall, 2 * cpu
        if self.count >= 2:
            self.wall += wall
            self.cpu += cpu


def exact_energy_fn(setup: Any) -> Callable[[Any], float]:
    """params -> exact variational energy of ``setup``'s model (jitted): the sum over the
    symmetry orbits for a fully projected model, else over all Sz = 0 configurations."""
    import jax
    import jax.numpy as jnp

    from hpcvmc.build import build
    from hpcvmc.config import from_tables

    tables = setup.config.to_dict()
    orbits = "space_group_invariant" in setup.config.model.capabilities
    tables["sampler"] = {"type": "exact", "orbits": orbits}
    exact = build(from_tables(tables, Path(".")), setup.comm)

    @jax.jit
    def energy(params: Any) -> jax.Array:
        batch, _ = exact.sampler.sample(exact.logpsi, params, None, jnp.zeros(0, int), 0)
        x = batch.x.reshape((-1,) + batch.x.shape[2:])
        e_loc = exact.system.local_energy(exact.logpsi, params, x)
        return jnp.real(jnp.sum(batch.weights.reshape(-1) * e_loc))

    return lambda params: float(energy(params))


def ground_energy(setup: Any) -> float:
    """E0 of the system by Lanczos (the system config's exact solver)."""
    from hpcvmc import registry

    system = setup.config.system
    return float(registry.load_object(system.exact_solver, "system.exact_solver")(system, False)[0])


def parse_stages(specs: list[str]) -> list[tuple[int, list[str]]]:
    """``--stage`` options as (first step, overrides), sorted by step."""
    stages = []
    for spec in specs:
        step, _, sets = spec.partition(":")
        stages.append((int(step), [item for item in sets.split(",") if item]))
    return sorted(stages)


class Stages:
    """hpcvmc's set-up at every step: the job with ``--set``, plus each ``--stage``'s overrides
    from its step on (cumulative). Each set-up's step function and exact evaluator are built
    once."""

    def __init__(self, args: argparse.Namespace, comm: Any, seed: int) -> None:
        self.args, self.comm, self.seed = args, comm, seed
        self.stages = [(0, [])] + parse_stages(args.stage)
        self.built: dict[int, tuple[Any, Any, Callable[[Any], float]]] = {}

    def at(self, step: int) -> tuple[Any, Any, Callable[[Any], float]]:
        """(set-up, jitted step, exact energy function) in force at ``step``."""
        from hpcvmc.driver import make_step

        index = max(i for i, (first, _) in enumerate(self.stages) if first <= step)
        if index not in self.built:
            overrides = self.args.set + [o for _, sets in self.stages[:index + 1] for o in sets]
            setup = common.build_setup(self.args.job, overrides, self.comm)
            setup = dataclasses.replace(
                setup, sampler=dataclasses.replace(setup.sampler, seed=self.seed))
            self.built[index] = (setup, make_step(setup), exact_energy_fn(setup))
        return self.built[index]


def run_hpcvmc(start: Any, seed: int, args: argparse.Namespace, comm: Any, e0: float) -> Trace:
    """hpcvmc's driver step with the sampler seeded ``seed``, from ``start``, through the
    stages of ``--stage``."""
    import jax
    import jax.numpy as jnp

    stages = Stages(args, comm, seed)
    trace = Trace("hpcvmc", seed)
    params, opt_state, chains = start.params, start.opt_state, start.chains
    clock = StepClock()
    samples = 0
    for step in range(args.max_steps + 1):
        setup, step_fn, evaluate = stages.at(step)
        if step % args.every == 0 or clock.wall > args.budget:
            rel = (evaluate(params) - e0) / abs(e0)
            trace.record(step, clock.wall, clock.cpu, samples, rel)
            if rel < TARGETS[-1] or clock.wall > args.budget:
                break
        t0, c0 = time.perf_counter(), time.process_time()
        out = step_fn(params, opt_state, chains, jnp.asarray(step))
        jax.block_until_ready(out.params)
        clock.add(time.perf_counter() - t0, time.process_time() - c0)
        params, opt_state, chains = out.params, out.opt_state, out.chains
        samples += setup.sampler.samples_per_step(comm)
    return trace


def run_netket(setup: Any, start: Any, seed: int, args: argparse.Namespace,
               e0: float) -> Trace:
    """NetKet's VMC_SR (minSR) at its ViT tutorial's settings, sampler seeded ``seed``."""
    import jax
    import netket as nk
    import optax

    from vs_netket import netket_j1j2

    system = setup.system
    graph, hilbert, hamiltonian = netket_j1j2(system)
    n = args.netket_samples
    sampler = nk.sampler.MetropolisExchange(hilbert, graph=graph, d_max=1, n_chains=n,
                                            sweep_size=system.n_sites)
    vstate = nk.vqs.MCState(sampler, setup.model, n_samples=n, n_discard_per_chain=0,
                            chunk_size=NETKET_CHUNK,
                            seed=setup.config.run.seed, sampler_seed=seed)
    vstate.parameters = start.params
    driver = nk.driver.VMC_SR(hamiltonian, optax.sgd(NETKET_TUTORIAL["learning_rate"]),
                              diag_shift=NETKET_TUTORIAL["diag_shift"], variational_state=vstate,
                              chunk_size_bwd=setup.config.optimizer.chunk_size, mode="complex",
                              use_ntk=True, on_the_fly=False,
                              linear_solver=nk.optimizer.solver.cholesky)
    evaluate = exact_energy_fn(setup)
    trace = Trace("netket", seed)
    clock = StepClock()
    started = [0.0, 0.0]

    def check(step: int, params: Any) -> bool:
        rel = (evaluate(params) - e0) / abs(e0)
        trace.record(step, clock.wall, clock.cpu, step * n, rel)
        return rel >= TARGETS[-1] and clock.wall <= args.budget

    def callback(step: int, log_data: dict, drv: Any) -> bool:
        jax.block_until_ready(drv.state.parameters)
        clock.add(time.perf_counter() - started[0], time.process_time() - started[1])
        go_on = step + 1 < args.max_steps
        if (step + 1) % args.every == 0 or clock.wall > args.budget:
            go_on = check(step + 1, drv.state.parameters) and go_on
        started[:] = time.perf_counter(), time.process_time()
        return go_on

    check(0, start.params)
    started[:] = time.perf_counter(), time.process_time()
    driver.run(args.max_steps, out=(), show_progress=False, callback=callback)
    return trace


def report(traces: list[Trace], args: argparse.Namespace, setup: Any, n_params: int) -> None:
    """Per run and per code (median over seeds): time, steps and samples to each target."""
    cfg = setup.config
    print(f"# {common.machine()}; load {common.load_average()}; one process, platform "
          f"{args.platform}, threads {args.threads}")
    stages = " ".join(f"--stage {spec}" for spec in args.stage)
    print(f"# {args.job} {' '.join(args.set)} {stages}: P = {n_params}; hpcvmc N_s = "
          f"{cfg.sampler.n_samples}, NetKet N_s = {args.netket_samples} (lr "
          f"{NETKET_TUTORIAL['learning_rate']}, diag_shift {NETKET_TUTORIAL['diag_shift']}); "
          f"exact energy every {args.every} steps; budget {args.budget:.0f} s per run")
    head = " | ".join(f"to {t:.0e}: s (cpu s) / steps / samples" for t in TARGETS)
    marks = [args.budget * q for q in (0.25, 0.5, 0.75, 1.0)]
    print(f"| code | seed | {head} | " + " | ".join(f"rel. error at {m:.0f} s" for m in marks)
          + " | steps run |")
    print("|---|---|" + "---|" * (len(TARGETS) + len(marks)) + "---|")
    for tr in traces:
        cells = []
        for t in TARGETS:
            hit = tr.first_below(t)
            cells.append("not reached" if hit is None else
                         f"{hit[0]:.0f} ({hit[1]:.0f}) / {hit[2]} / {hit[3]}")
        at = " | ".join(f"{tr.error_at(m):.2e}" for m in marks)
        print(f"| {tr.code} | {tr.seed} | {' | '.join(cells)} | {at} | {tr.steps[-1]} |")
    for code in dict.fromkeys(tr.code for tr in traces):
        runs = [tr for tr in traces if tr.code == code]
        cells = []
        for t in TARGETS:
            hits = [tr.first_below(t) for tr in runs]
            reached = [h for h in hits if h is not None]
            if len(reached) * 2 <= len(runs):
                cells.append(f"{len(reached)}/{len(runs)} reached")
            else:
                # runs that never reached count as infinitely slow: the median of all runs
                walls = [h[0] for h in reached] + [np.inf] * (len(runs) - len(reached))
                steps = [h[2] for h in reached] + [np.inf] * (len(runs) - len(reached))
                cells.append(f"median {np.median(walls):.0f} s / {np.median(steps):.0f} steps "
                             f"({len(reached)}/{len(runs)})")
        last = np.median([tr.rel_error[-1] for tr in runs])
        print(f"# {code}: " + "; ".join(f"{t:.0e}: {c}" for t, c in zip(TARGETS, cells))
              + f"; median last rel. error {last:.2e}")


def main() -> None:
    """Every run of every code from the same start; print the table."""
    args = parse_args()
    comm = common.start(args)
    if comm.size != 1:
        raise SystemExit("time_to_accuracy.py runs single processes; run it without mpirun")
    from hpcvmc.driver import fresh_state

    setup = common.build_setup(args.job, args.set, comm)
    start = fresh_state(setup)
    e0 = ground_energy(setup)
    print(f"# E0 = {e0:.8f}", flush=True)
    traces = []
    for k in range(args.first_seed, args.first_seed + args.seeds):
        for code in args.codes:
            if code == "hpcvmc":
                traces.append(run_hpcvmc(start, SEED_BASE + k, args, comm, e0))
            else:
                traces.append(run_netket(setup, start, SEED_BASE + k, args, e0))
    report(traces, args, setup, common.count_params(start.params))


if __name__ == "__main__":
    main()
