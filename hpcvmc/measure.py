"""The final measurement of a run: sample with the optimized parameters fixed.

After the last optimization step the driver runs ``[run] measure_steps`` more sampler steps
(random streams tagged PURPOSE_MEASURE, so they never repeat an optimization step) without
updating the parameters and reports

    E = (1/K) sum_k mean_k,   error = max(sqrt(sum_k err_k^2) / K, std_k(mean_k) / sqrt(K))

over the K steps (:func:`hpcvmc.stats.combine_steps`): the energy of the final state from
K times the samples of one step, instead of the last step's noisy estimate of the state before
the last update. A system that names ``observables`` (:class:`hpcvmc.protocols.Observables`)
measures them from the same samples: for the moire system the density, S(q) and rho_K
(:mod:`hpcvmc.observables`, written to ``observables.h5`` with PNGs). With the exact sampler
one full sum gives the exact energy of the final state (error 0).

The result goes to ``RUN_DIR/final.json`` (written by rank 0, atomically):
``{"step", "measure_steps", "n_samples", "energy": {"mean", "error", "variance"}, "units",
"summary"}``; energies are totals of the whole system in the system's unit (J1 for spins,
E0 for moire electrons; ``summary`` also gives per site / per electron in meV).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hpcvmc import registry
from hpcvmc.build import Setup
from hpcvmc.fixed_sampling import sample_fixed
from hpcvmc.outputs import OutputError, write_text_atomic
from hpcvmc.protocols import Observables

FINAL_FILE = "final.json"


def _energy_steps(setup: Setup, params: Any, chains: Any, n_steps: int) -> tuple[float, float, float, int]:
    """(mean, error, variance, n_samples) of the local energy over ``n_steps`` sampler steps
    (one step of an exact sampler: every step would give the same full sum)."""
    n_steps = 1 if setup.sampler.is_exact else n_steps
    (mean, error, variance), _, _ = sample_fixed(setup, params, chains, n_steps)
    return mean, error, variance, n_steps * setup.sampler.samples_per_step(setup.comm)


def system_observables(system: Any) -> Observables | None:
    """The observables a system names in its optional ``observables`` attribute ("module:Name"
    of an :class:`hpcvmc.protocols.Observables`), or None."""
    spec = getattr(system, "observables", None)
    return None if spec is None else registry.load_object(spec, "system.observables")


def final_measurement(setup: Setup, params: Any, chains: Any, step: int, n_steps: int) -> dict[str, Any]:
    """Measure the final state and write ``final.json`` (and the moire observables); collective.

    Args:
        setup: the built run.
        params: the optimized parameters.
        chains: this rank's chains after the last step (None for the exact sampler).
        step: the optimization step the parameters belong to.
        n_steps: measurement steps (>= 1).

    Returns:
        The dictionary written to ``final.json`` (equal on every rank).

    Raises:
        OutputError: on every rank when rank 0 could not write the files.
    """
    out = Path(setup.config.run.output)
    extra, found = system_observables(setup.system), None
    if extra is not None:
        (mean, error, variance), n_samples, found = extra.measure(setup, params, chains, n_steps)
    else:
        mean, error, variance, n_samples = _energy_steps(setup, params, chains, n_steps)
    result = {
        "step": step, "measure_steps": n_steps, "n_samples": n_samples,
        "energy": {"mean": mean, "error": error, "variance": variance},
        "units": setup.system.energy_unit, "summary": setup.system.format_energy(mean, error),
    }
    failure = None
    if setup.comm.is_root:
        try:
            if found is not None:
                extra.write(out, found)
            write_text_atomic(out / FINAL_FILE, json.dumps(result, indent=1) + "\n")
        except OutputError as exc:
            failure = str(exc)
    failure = setup.comm.bcast(failure)
    if failure is not None:
        raise OutputError(failure)
    return result


def read_final(run_dir: str | Path) -> dict[str, Any] | None:
    """The final measurement of a run folder, or None when there is none (or it is unreadable)."""
    try:
        return json.loads((Path(run_dir) / FINAL_FILE).read_text())
    except (OSError, ValueError):
        return None
