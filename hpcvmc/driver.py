"""The VMC loop: sample, local energy, statistics, Jacobian, natural-gradient update.

One step is a single jitted function of (params, opt_state, chains, step) whose collectives run
through mpi4jax inside the computation, so there is no host round trip inside a step. Between
steps the driver logs, checks for non-finite energies (NaN guard), honours stop signals and
writes checkpoints at the configured cadence.

Exit codes of a run: 0 finished, 2 bad input or checkpoint (or the run folder is in use by
another run), 3 stopped on a non-finite energy or parameter (the last good state is
checkpointed), 74 a file of the run folder could not be written, 75 stopped by a signal after a
checkpoint. Rank 0 holds the run folder's lock (:mod:`hpcvmc.runlock`) for the whole run.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hpcvmc import checkpoint as ckpt
from hpcvmc import export
from hpcvmc.build import Setup
from hpcvmc.config import InputError, loads
from hpcvmc.deduplication import ROW_CHUNK, grouped_local_energy, solve_on_leading_rows
from hpcvmc.measure import FINAL_FILE, final_measurement, read_final
from hpcvmc.optim.jacobian import centred_scaled, jacobian
from hpcvmc.outputs import OutputError, cannot_write, write_text_atomic, writing
from hpcvmc.progress import Progress
from hpcvmc.runlock import LOCK_FILE, locked
from hpcvmc.sampling import ChainState
from hpcvmc.signals import EXIT_INTERRUPTED, StopFlag
from hpcvmc.stats import Stats, clip_local_energy, summarize, summarize_weighted

EXIT_OK, EXIT_INPUT, EXIT_NONFINITE = 0, 2, 3
HISTORY_KEYS = (
    "energy", "energy_imag", "error", "variance", "tau", "r_hat", "acceptance", "n_samples",
    "learning_rate", "diag_shift", "condition", "residual", "update_norm", "update_scale",
    "fallback", "seconds",
)
INPUT_FILE = "input.toml"
HISTORY_CSV = "history.csv"


class StepOutput(NamedTuple):
    """What one step returns (all replicated except ``chains``)."""

    params: Any
    opt_state: Any
    chains: ChainState | None
    stats: Stats
    acceptance: jax.Array
    info: dict[str, jax.Array]


def make_step(setup: Setup) -> Callable[..., StepOutput]:
    """The jitted VMC step (params, opt_state, chains, step) -> StepOutput.

    The energy statistics describe the parameters *before* the update of this step.
    """
    comm, system, sampler = setup.comm, setup.system, setup.sampler
    chunk = setup.optimizer.jacobian_chunk
    clip = setup.optimizer.clip_local_energy
    grouping = getattr(sampler, "deduplication", None)
    chain_ids = jnp.asarray(setup.chain_ids)

    def step_fn(params: Any, opt_state: Any, chains: ChainState | None, step: jax.Array) -> StepOutput:
        batch, new_chains = sampler.sample(setup.logpsi, params, chains, chain_ids, step)
        acceptance = sampler.acceptance(chains, new_chains, comm)
        chains = new_chains
        shape = batch.x.shape[:2]
        x = batch.x.reshape((-1,) + batch.x.shape[2:])
        e_loc, classes = grouped_local_energy(
            lambda rows: system.local_energy(setup.logpsi, params, rows), x, grouping)
        weights = None if batch.weights is None else batch.weights.reshape(-1)
        if weights is None:
            stats = summarize(e_loc.reshape(shape), comm)
        else:
            stats = summarize_weighted(e_loc, weights, comm)
        # the clipping window is an unweighted statistic: weighted (exact) batches are not clipped
        e_update = e_loc if clip == 0.0 or weights is not None else clip_local_energy(e_loc, clip, comm)
        if classes is None:
            jac = jacobian(setup.logpsi, params, x, chunk)
        else:  # one row per class, weighted by its multiplicity (hpcvmc.deduplication)
            jac = jacobian(setup.logpsi, params, x[classes.first], min(chunk, ROW_CHUNK),
                           classes.count)
            e_update, weights = e_update[classes.first], classes.multiplicity
        O, eps = centred_scaled(jac, e_update, comm, weights=weights)

        def update(O: jax.Array, eps: jax.Array, n_rows_max: int) -> tuple[Any, Any, Any]:
            return setup.optimizer.update(O, eps, opt_state, params, comm, n_rows_max=n_rows_max)

        if classes is None:  # every rank holds the same number of rows (split evenly)
            updates, opt_state, info = update(O, eps, x.shape[0])
        else:  # the classes come first, the zero rows after them are left out of the kernel
            updates, opt_state, info = solve_on_leading_rows(update, O, eps, classes.count, comm)
        params = optax.apply_updates(params, updates)
        return StepOutput(params, opt_state, chains, stats, acceptance, info)

    return jax.jit(step_fn)


def samples_per_step(setup: Setup) -> int:
    """Configurations in one step's energy and gradient, all ranks; collective."""
    return setup.sampler.samples_per_step(setup.comm)


def _row(out: StepOutput, n_samples: int, seconds: float) -> dict[str, float]:
    """One history row (host floats) from a step's output."""
    s, info = out.stats, out.info
    return {
        "energy": float(jnp.real(s.mean)), "energy_imag": float(jnp.imag(s.mean)),
        "error": float(s.error), "variance": float(s.variance), "tau": float(s.tau),
        "r_hat": float(s.r_hat), "acceptance": float(out.acceptance), "n_samples": float(n_samples),
        "learning_rate": float(info["learning_rate"]), "diag_shift": float(info["diag_shift"]),
        "condition": float(info["condition"]), "residual": float(info["residual"]),
        "update_norm": float(info["update_norm"]), "update_scale": float(info["update_scale"]),
        "fallback": float(info["fallback"]), "seconds": seconds,
    }


def _all_finite(row: dict[str, float], params: Any) -> bool:
    leaves_ok = all(bool(jnp.isfinite(leaf).all()) for leaf in jax.tree_util.tree_leaves(params))
    return leaves_ok and np.isfinite(row["energy"]) and np.isfinite(row["variance"])


class RunState(NamedTuple):
    """The state a checkpoint captures."""

    step: int
    params: Any
    opt_state: Any
    chains: ChainState | None
    history: dict[str, list[float]]


def _gather_chains(setup: Setup, chains: ChainState | None) -> dict[str, np.ndarray] | None:
    """This run's chains in global order on rank 0 (None elsewhere and for the exact sampler)."""
    if chains is None:
        return None
    gathered = {k: setup.comm.gather_rows(np.asarray(v)) for k, v in chains._asdict().items()}
    return gathered if setup.comm.is_root else None


def share_failure(comm: Any, failure: str | None) -> None:
    """Rank 0's write failure (or None) reaches every rank, which all raise it (collective)."""
    failure = comm.bcast(failure)
    if failure is not None:
        raise OutputError(failure)


def save_checkpoint(setup: Setup, state: RunState) -> Path | None:
    """Write the state as a checkpoint (collective: every rank must call it).

    Raises:
        OutputError: on every rank when rank 0's write failed (the earlier checkpoints stay).
    """
    chains = _gather_chains(setup, state.chains)
    path, failure = None, None
    if setup.comm.is_root:
        snap = ckpt.Snapshot(
            step=state.step, params=jax.device_get(state.params),
            opt_state=jax.device_get(state.opt_state), chains=chains,
            history={k: np.asarray(v, dtype=float) for k, v in state.history.items()},
            input_toml=setup.config.text, physics_hash=setup.config.physics_hash(),
            seed=setup.config.run.seed, n_ranks=setup.comm.size,
            slurm_job_id=os.environ.get("SLURM_JOB_ID", ""),
        )
        try:
            path = ckpt.save(snap, setup.config.run.output, setup.config.run.keep_checkpoints)
        except OutputError as exc:
            failure = str(exc)
    share_failure(setup.comm, failure)
    return path


def _changed_keys(old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]],
                  sections: tuple[str, ...]) -> list[str]:
    """'section.key: old -> new' for every key that differs."""
    return [f"{sec}.{k}: {old[sec].get(k)!r} -> {new[sec].get(k)!r}" for sec in sections
            for k in sorted(set(old[sec]) | set(new[sec])) if old[sec].get(k) != new[sec].get(k)]


def _check_compatible(setup: Setup, snap: ckpt.Snapshot, source: str,
                      say: Callable[[str], None]) -> None:
    """Refuse a checkpoint whose physics (system, model) differs from the input; log the
    allowed changes (sampler, optimizer, run: length, schedules, cadence)."""
    theirs, ours = loads(snap.input_toml).to_dict(), setup.config.to_dict()
    if snap.physics_hash != setup.config.physics_hash():
        diff = [c.split(":")[0] for c in _changed_keys(theirs, ours, ("system", "model"))]
        why = (f"{', '.join(diff)} differ" if diff else
               "same keys, physics hash of another hpcvmc version; start from its parameters "
               "with run.init_params")
        raise InputError(
            f"{source}: checkpoint is of a different system/model ({why}); "
            "use another run.output or the matching input"
        )
    for change in _changed_keys(theirs, ours, ("sampler", "optimizer", "run")):
        say(f"input changed since the checkpoint: {change}")


def restore(setup: Setup, snap: ckpt.Snapshot, source: Path) -> RunState:
    """Turn a checkpoint into this run's state, redistributing chains over this rank count.

    The parameter template is shape-only (``jax.eval_shape``): no initializer runs, so
    starting orbitals (a Hartree-Fock solve) are never computed for a resume. A checkpoint
    without chains (exact sampler) continued with Markov chains burns in new ones.
    """
    params_t = jax.eval_shape(setup.init_params)
    params = ckpt.restore_tree(params_t, snap.params, "params", source)
    opt_state_t = jax.eval_shape(setup.optimizer.init, params_t)
    opt_state = ckpt.restore_tree(opt_state_t, snap.opt_state, "opt_state", source)
    chains = None
    if len(setup.chain_ids) and snap.chains is None:  # written by the exact sampler
        chains = _burnt_in_chains(setup, params)
    elif len(setup.chain_ids):
        n_chains = setup.sampler.n_chains
        all_chains = ckpt.redistribute_chains(snap.chains, n_chains)
        local = {k: jnp.asarray(v[setup.chain_ids]) for k, v in all_chains.items()}
        chains = setup.sampler.State(**local)
    n_rows = len(snap.history.get("energy", []))
    # a quantity the writing version did not log (e.g. n_samples before it was added) reads as NaN
    history = {k: list(map(float, snap.history.get(k, np.full(n_rows, np.nan)))) for k in HISTORY_KEYS}
    return RunState(snap.step, params, opt_state, chains, history)


def fresh_state(setup: Setup, params: Any = None) -> RunState:
    """Step 0: the given parameters (default: the model's initializer), a fresh optimizer state
    and burnt-in chains."""
    params = setup.init_params() if params is None else params
    chains = _burnt_in_chains(setup, params) if len(setup.chain_ids) else None
    return RunState(0, params, setup.optimizer.init(params), chains, {k: [] for k in HISTORY_KEYS})


def _params_from(setup: Setup, source: Path, say: Callable[[str], None]) -> Any:
    """The parameters of checkpoint file ``source``, of the newest valid one in run folder
    ``source`` or of exported state ``source`` (:mod:`hpcvmc.export`), shaped for this run's
    model. The model may extend the stored one (:func:`hpcvmc.checkpoint.restore_extended`):
    parameters the source lacks keep their initial values, and are named.

    Raises:
        InputError: naming ``run.init_params`` (missing, corrupt, or another parameter tree).
    """
    template = jax.eval_shape(setup.init_params)
    reasons: list[str] = []
    kept: list[str] = []

    def use(snap: ckpt.Snapshot, path: Path) -> tuple[int, Any]:
        try:
            params, fresh = ckpt.restore_extended(template, snap.params, "params", path,
                                                  setup.init_params)
        except ckpt.CheckpointError as exc:
            reasons.append(str(exc))
            raise
        kept[:] = fresh
        return snap.step, params

    try:
        if export.is_exported(source):
            step, params = use(export.read(source), source)
        elif source.is_dir():
            found = ckpt.newest_usable(source, use, say)
            if found is None:
                why = f" ({reasons[0]})" if reasons else ""
                raise ckpt.CheckpointError(f"{source}: no usable checkpoint{why}")
            step, params = found[1]
        else:
            step, params = use(ckpt.read(source), source)
    except (OSError, ckpt.CheckpointError) as exc:
        raise InputError(f"run.init_params: {exc}") from None
    say(f"initial parameters from {source} (step {step} of that run)")
    if kept:
        say(f"parameters not in {source}, kept at their initial values: {', '.join(kept)}")
    return params


def _burnt_in_chains(setup: Setup, params: Any) -> ChainState:
    """This rank's Markov chains, started and burnt in with ``params``."""
    return jax.jit(lambda p: setup.sampler.init(setup.logpsi, p, jnp.asarray(setup.chain_ids)))(params)


def run_files(out: Path) -> list[Path]:
    """What a run folder holds besides its lock file (empty when it does not exist)."""
    return [p for p in out.iterdir() if p.name != LOCK_FILE] if out.is_dir() else []


def check_output_folder(config: Any) -> None:
    """Refuse, without touching it, an output folder that is not a run of this physics.

    Raises:
        InputError: ``run.output`` is a file, or a folder holding something other than an
            hpcvmc run, or a run of another system/model.
    """
    out = Path(config.run.output)
    if out.exists() and not out.is_dir():
        raise InputError(f"run.output = {str(out)!r}: exists and is not a folder")
    if not run_files(out):
        return
    saved_input = out / INPUT_FILE
    if not saved_input.is_file():
        raise InputError(f"{out}: output folder exists and is not an hpcvmc run; "
                         "choose another run.output")
    try:
        text = saved_input.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{saved_input}: cannot read ({exc})") from None
    saved = loads(text, source=str(saved_input))
    if saved.physics_hash() != config.physics_hash():
        raise InputError(f"{out}: output folder holds a run of a different system/model "
                         f"(see {saved_input}); choose another run.output")


def _newest_restorable(setup: Setup, out: Path, say: Callable[[str], None]
                       ) -> tuple[ckpt.Snapshot, RunState] | None:
    """The newest checkpoint of ``out`` that reads and restores into this run (collective
    reads on every rank); unusable ones are reported by name and skipped.

    Raises:
        InputError: a valid checkpoint of another system/model.
    """
    def use(snap: ckpt.Snapshot, path: Path) -> tuple[ckpt.Snapshot, RunState]:
        _check_compatible(setup, snap, str(out), say)
        return snap, restore(setup, snap, path)

    found = ckpt.newest_usable(out, use, say)
    return None if found is None else found[1]


def prepare_output(setup: Setup, restart: str | None, say: Callable[[str], None]) -> RunState:
    """Decide between a fresh start, an automatic resume and an explicit restart.

    An output folder that holds a run of a different input (or anything else) is refused and
    left untouched; one of the same physics resumes from its newest valid checkpoint. A fresh
    start takes its parameters from ``run.init_params`` when that is set.

    Raises:
        InputError: a foreign output folder, a bad or mismatched checkpoint (also of
            ``run.init_params``).
    """
    out = Path(setup.config.run.output)
    if restart is not None:
        path = Path(restart)
        try:
            snap = ckpt.read(path)
            _check_compatible(setup, snap, str(path), say)
            state = restore(setup, snap, path)
        except ckpt.CheckpointError as exc:
            raise InputError(f"--restart: {exc}") from None
        say(f"restarting from {path} (step {snap.step})")
        return state
    check_output_folder(setup.config)
    if run_files(out):
        found = _newest_restorable(setup, out, say)
        if found is not None:
            snap, state = found
            say(f"resuming {out} from step {snap.step} (written by {snap.n_ranks} rank(s))")
            return state
    source = setup.config.run.init_params
    return fresh_state(setup, _params_from(setup, Path(source), say) if source else None)


def _write_history_csv(out: Path, history: dict[str, list[float]]) -> None:
    """Rewrite the per-step CSV log from the history (at start and on resume; atomic)."""
    n = len(history["energy"])
    lines = ["step," + ",".join(HISTORY_KEYS)]
    lines += [f"{i + 1}," + ",".join(repr(history[k][i]) for k in HISTORY_KEYS) for i in range(n)]
    write_text_atomic(out / HISTORY_CSV, "\n".join(lines) + "\n")


def run(setup: Setup, restart: str | None = None, progress_every: int = 1,
        stop: StopFlag | None = None) -> int:
    """Run (or resume) the optimization to ``run.steps``; returns the exit code.

    The output folder is checked (read-only) first, then locked for the whole run: a second run
    on the same folder is refused with InputError before it reads or writes anything there.

    Args:
        setup: the built run.
        restart: a checkpoint to start from instead of the output folder's newest.
        progress_every: batch mode: print every this many steps.
        stop: the installed stop-signal flag (installed here when None).

    Raises:
        InputError: a foreign or locked output folder, a bad checkpoint.
        OutputError: a file of the run folder could not be written.
    """
    say = Progress(setup.config.run.steps, setup.comm.is_root).message
    check_output_folder(setup.config)
    with locked(setup.config.run.output, setup.comm, say):
        return _run_locked(setup, restart, progress_every, stop, say)


def _run_locked(setup: Setup, restart: str | None, progress_every: int, stop: StopFlag | None,
                say: Callable[[str], None]) -> int:
    """:func:`run` once the output folder is locked."""
    comm, cfg = setup.comm, setup.config
    out = Path(cfg.run.output)
    state = prepare_output(setup, restart, say)
    failure = None
    if comm.is_root:
        try:
            write_text_atomic(out / INPUT_FILE, cfg.text)
            _write_history_csv(out, state.history)
        except OutputError as exc:
            failure = str(exc)
    share_failure(comm, failure)
    n_params = sum(int(np.size(p)) for p in jax.tree_util.tree_leaves(state.params))
    say(f"hpcvmc: {cfg.system.type} with {setup.system.n_sites} sites, model {cfg.model.type} "
        f"with {n_params} parameters, {comm.size} rank(s), steps {state.step} -> {cfg.run.steps}")
    if state.step >= cfg.run.steps:
        say("nothing to do: the run has reached run.steps")
        _measure_if_missing(setup, state, say)
        return EXIT_OK
    progress = Progress(cfg.run.steps, comm.is_root, every=progress_every,
                        energy_text=setup.system.progress_energy)
    stop = stop if stop is not None else StopFlag().install()
    step_fn = make_step(setup)
    n_samples = samples_per_step(setup)
    last_checkpoint = time.monotonic()
    csv_path = out / HISTORY_CSV
    csv = None
    if comm.is_root:
        with writing(csv_path):
            csv = open(csv_path, "a")
    try:
        while state.step < cfg.run.steps:
            start = time.perf_counter()
            result = step_fn(state.params, state.opt_state, state.chains, jnp.asarray(state.step))
            row = _row(result, n_samples, 0.0)  # blocks until the step is done
            row["seconds"] = time.perf_counter() - start
            if not _all_finite(row, result.params):
                save_checkpoint(setup, state)
                say(f"hpcvmc: non-finite energy or parameters at step {state.step + 1}; stopped. "
                    f"The last good state (step {state.step}) is checkpointed in {out}")
                return EXIT_NONFINITE
            for key in HISTORY_KEYS:
                state.history[key].append(row[key])
            state = RunState(state.step + 1, result.params, result.opt_state, result.chains,
                             state.history)
            progress.update(state.step, row)
            if csv is not None:
                try:
                    csv.write(f"{state.step}," + ",".join(repr(row[k]) for k in HISTORY_KEYS)
                              + "\n")
                    csv.flush()
                except OSError as exc:
                    failure = str(cannot_write(csv_path, exc))
            share_failure(comm, failure)
            minutes = cfg.run.checkpoint_minutes
            due_time = minutes > 0 and time.monotonic() - last_checkpoint > 60 * minutes
            due = (state.step % cfg.run.checkpoint_every == 0 or state.step == cfg.run.steps
                   or comm.any(due_time))
            stopping = comm.any(bool(stop))
            if due or stopping:
                save_checkpoint(setup, state)
                last_checkpoint = time.monotonic()
            if stopping:
                say(f"hpcvmc: stopped by signal after step {state.step}; checkpoint written, "
                    "run the same command again to resume")
                return EXIT_INTERRUPTED
    finally:
        if csv is not None:
            try:
                csv.close()
            except OSError:
                pass  # the row that could not be flushed is re-written from the checkpoint
    say(f"done after {state.step} steps (last step, before its update): "
        f"{setup.system.format_energy(state.history['energy'][-1], state.history['error'][-1])}; "
        f"output in {out}")
    _measure_if_missing(setup, state, say)
    return EXIT_OK


def measure_newest(setup: Setup, say: Callable[[str], None]) -> int:
    """The final measurement of the newest valid checkpoint in ``run.output`` (collective).

    For a run stopped before its last step or still going: the energy (and moire observables)
    of the parameters of its newest checkpoint, written to ``final.json`` like the measurement
    at the end of a run (nothing is done when ``final.json`` already holds that step). A run
    resumed later measures again at its own end.

    Raises:
        InputError: no valid checkpoint, or one of a different input.
    """
    out = Path(setup.config.run.output)
    found = _newest_restorable(setup, out, say)
    if found is None:
        raise InputError(f"{out}: no valid checkpoint to measure")
    state = found[1]
    if not _measure_if_missing(setup, state, say):
        say(f"{out / FINAL_FILE} already holds the measurement of step {state.step}")
    return EXIT_OK


def measure_exported(setup: Setup, source: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """The final measurement of exported state ``source`` (collective).

    Fresh chains burnt in with its parameters (seeded by ``run.seed``), then
    ``run.measure_steps`` sampler steps with the parameters fixed (one full sum with the exact
    sampler); the result goes to ``final.json`` (and the moire observables) in ``run.output``.

    Returns:
        The dictionary written to ``final.json``.

    Raises:
        InputError: an unreadable or corrupt file, or an input whose system/model differs from
            the state's.
    """
    try:
        state = export.read(source)
    except ckpt.CheckpointError as exc:
        raise InputError(str(exc)) from None
    if state.physics_hash != setup.config.physics_hash():
        theirs, ours = loads(state.input_toml).to_dict(), setup.config.to_dict()
        diff = [c.split(":")[0] for c in _changed_keys(theirs, ours, ("system", "model"))]
        raise InputError(f"{source}: the state is of another system/model ({', '.join(diff)} "
                         "changed by --set)")
    try:
        params = ckpt.restore_tree(jax.eval_shape(setup.init_params), state.params, "params", source)
    except ckpt.CheckpointError as exc:
        raise InputError(str(exc)) from None
    chains = _burnt_in_chains(setup, params) if len(setup.chain_ids) else None
    n_steps = setup.config.run.measure_steps
    say(f"measurement: {n_steps} steps with the parameters of step {state.step}")
    result = final_measurement(setup, params, chains, state.step, n_steps)
    say(f"final: {result['summary']} ({result['n_samples']} samples); "
        f"in {Path(setup.config.run.output) / FINAL_FILE}")
    return result


def _measure_if_missing(setup: Setup, state: RunState, say: Callable[[str], None]) -> bool:
    """The final measurement (``run.measure_steps`` > 0) unless ``final.json`` has this step.

    Also runs when a finished run is started again after being killed during its measurement.
    Returns whether it measured.
    """
    n_steps = setup.config.run.measure_steps
    done = read_final(setup.config.run.output)
    if n_steps == 0 or (done is not None and done.get("step") == state.step
                        and done.get("measure_steps") == n_steps):
        return False
    say(f"final measurement: {n_steps} steps with the parameters of step {state.step}")
    result = final_measurement(setup, state.params, state.chains, state.step, n_steps)
    say(f"final: {result['summary']} ({result['n_samples']} samples); "
        f"in {Path(setup.config.run.output) / FINAL_FILE}")
    return True
