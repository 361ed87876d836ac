r"""Fermi liquid -> generalized Wigner crystal at nu = 2/3: order parameters along an epsilon sweep.

Reads the run folders of a moire sweep (each with its ``input.toml`` and the ``observables.h5``
of its final measurement) and reports, per dielectric constant epsilon
(U = a_M / a_B* = 53.1174 / epsilon at the default m*, a_M):

* E: energy per electron in meV, with its error bar;
* <|rho_K|>: the mean over the six moire K points of <|rho_K|>, rho_K = N^-1 sum_i exp(i K . r_i);
  1/2 for a perfect honeycomb crystal (two of the three sqrt3 sublattices full), O(N^-1/2) in a
  liquid, so on small cells it has a finite-size floor (measure the sweep's weak-coupling end);
* S(K) = N <|rho_K|^2> = <|sum_i exp(i K . r_i)|^2> / N: the structure factor at K, of order N in
  the crystal and O(1) in a liquid;
* |<rho_K>|: the symmetry-broken order parameter, the mean over K of |<rho_K>|; zero for a state
  invariant under the supercell translations (a liquid, or a crystal in a superposition of its
  three translates), 1/2 for a perfect crystal pinned to one set of sublattices;
* sublattice occupations: the density integrated over the Voronoi cell of each moire site
  (nearest site on the torus), averaged over each sqrt3 sublattice and sorted, in electrons per
  site: (1, 1, 0) for the honeycomb crystal, (2/3, 2/3, 2/3) for a uniform state; their contrast
  c = max - min (1 for the crystal, 0 when uniform).

:func:`transition_table` builds the rows, :func:`format_table` prints them and
:func:`plot_transition` draws the order parameters against epsilon next to the density maps of
the smallest and the largest epsilon (the two sides of the transition).

Both sides of the transition. Each run is labelled by its start, ``model.init``: "hf" (the
lowest Hartree-Fock state, a crystal at strong coupling) or "bands" (the non-interacting band
orbitals, the liquid). A run *ended crystalline* when its sublattice contrast exceeds
``CRYSTAL_CONTRAST`` = 0.5, halfway between the uniform state (0) and the honeycomb crystal (1).
The contrast sees the symmetry-broken crystal that VMC states keep; a translation-symmetric
superposition of the three crystal translates (the exact ground state of a finite cell) has a
uniform density and counts as liquid here: compare S(K), which is of order N for both.
At each epsilon the lowest energy among the crystalline runs, E_c, and among the others, E_l,
give dE = E_c - E_l with the combined error sigma = (sigma_c^2 + sigma_l^2)^(1/2); the lower
energy decides the phase. :func:`crystal_onset` finds where dE changes sign from negative
(crystal lower, small epsilon) to positive: epsilon_c by linear interpolation of dE between the
two neighbouring epsilons, its range from the crossings of dE - sigma and dE + sigma. Where only
one kind of state was reached at some epsilon, the onset is bracketed by the phases of the
lowest runs.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from hpcvmc.config import InputError, load
from hpcvmc.observables import OBSERVABLES_FILE, Observables, draw_density, read_observables
from hpcvmc.systems.moire_lattice import MoireParameters

CRYSTAL_CONTRAST = 0.5
"""Sublattice contrast above which a measured state counts as the honeycomb crystal."""


def site_occupations(obs: Observables) -> np.ndarray:
    """Electrons in the Voronoi cell of each moire site (nearest site on the torus).

    Each density bin (its centre) goes to the nearest site among all periodic images; the
    occupation of site s is sum over its bins of rho * bin area, so the occupations sum to N.

    Args:
        obs: measured observables (density on the supercell grid, sites, cell).

    Returns:
        Occupations, shape (N_sites,), in electrons.
    """
    m1, m2 = obs.density.shape
    a, b = np.meshgrid((np.arange(m1) + 0.5) / m1, (np.arange(m2) + 0.5) / m2, indexing="ij")
    centres = np.stack([a.ravel(), b.ravel()], axis=1) @ obs.cell
    images = np.array(list(itertools.product((-1, 0, 1), repeat=2))) @ obs.cell
    offsets = centres[:, None, None, :] - obs.sites[None, :, None, :] - images[None, None]
    nearest = np.argmin(np.min(np.linalg.norm(offsets, axis=-1), axis=2), axis=1)
    bin_area = abs(np.linalg.det(obs.cell)) / (m1 * m2)
    return np.bincount(nearest, weights=obs.density.ravel() * bin_area, minlength=len(obs.sites))


def sublattice_occupations(obs: Observables) -> np.ndarray:
    """Mean site occupation of each sqrt3 sublattice, sorted largest first, shape (3,)."""
    occupation = site_occupations(obs)
    means = [occupation[obs.sublattice == label].mean() for label in range(3)]
    return np.sort(np.asarray(means))[::-1]


def order_parameters(obs: Observables) -> dict[str, Any]:
    """The order parameters of the module docstring for one measurement.

    Args:
        obs: observables of a cell that fits the sqrt3 x sqrt3 order (six K points).

    Returns:
        Dict with ``rho_K_abs``, ``S_K``, ``rho_K_mean_abs``, ``sublattice_occupations`` (list)
        and ``contrast``.
    """
    occupations = sublattice_occupations(obs)
    return {
        "rho_K_abs": float(np.mean(obs.rho_K_abs)),
        "S_K": float(obs.n_electrons * np.mean(obs.rho_K_sq)),
        "rho_K_mean_abs": float(np.mean(np.abs(obs.rho_K_mean))),
        "sublattice_occupations": [float(v) for v in occupations],
        "contrast": float(occupations[0] - occupations[-1]),
    }


def read_run(run_dir: str | Path) -> tuple[dict[str, Any], Observables]:
    """One row of the table (epsilon, U, energy, order parameters) and the run's observables.

    Raises:
        InputError: the folder has no moire ``input.toml``, no ``observables.h5``, or its cell
            has no K points.
    """
    run_dir = Path(run_dir)
    config = load(run_dir / "input.toml")
    if "moire" not in getattr(config.system, "capabilities", ()):
        raise InputError(f"{run_dir}: system.type = {config.system.type!r}, not a moire run")
    path = run_dir / OBSERVABLES_FILE
    if not path.is_file():
        raise InputError(f"{path}: missing (run with run.measure_steps > 0 to measure it)")
    obs = read_observables(path)
    if len(obs.k_points) == 0:
        raise InputError(f"{run_dir}: its supercell has no moire K points (no sqrt3 order)")
    energy, error = obs.energy_per_electron_meV
    row = {"run": str(run_dir), "epsilon": config.system.epsilon,
           "start": getattr(config.model, "init", "-"),
           "U": MoireParameters.from_config(config.system).U, "n_electrons": obs.n_electrons,
           "n_sites": len(obs.sites), "energy_meV": energy, "error_meV": error,
           "n_samples": obs.n_samples, **order_parameters(obs)}
    return row, obs


def transition_table(run_dirs: list[str | Path]) -> tuple[list[dict[str, Any]], list[Observables]]:
    """Rows and observables of the given runs, sorted by epsilon, then start."""
    pairs = sorted((read_run(d) for d in run_dirs),
                   key=lambda pair: (pair[0]["epsilon"], pair[0]["start"]))
    return [row for row, _ in pairs], [obs for _, obs in pairs]


def is_crystal(row: dict[str, Any]) -> bool:
    """Whether the run ended in the honeycomb crystal (contrast > CRYSTAL_CONTRAST)."""
    return row["contrast"] > CRYSTAL_CONTRAST


def energy_differences(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per epsilon: the lowest run, its phase and, where both kinds were reached, dE = E_c - E_l.

    Returns:
        One dict per epsilon (ascending): ``epsilon``, ``phase`` ("crystal" or "liquid", of the
        lowest-energy run), ``dE_meV`` and ``error_meV`` (None where one kind is missing).
    """
    out = []
    for epsilon in sorted({r["epsilon"] for r in rows}):
        runs = [r for r in rows if r["epsilon"] == epsilon]
        lowest = min(runs, key=lambda r: r["energy_meV"])
        crystal = [r for r in runs if is_crystal(r)]
        liquid = [r for r in runs if not is_crystal(r)]
        entry = {"epsilon": epsilon, "phase": "crystal" if is_crystal(lowest) else "liquid",
                 "dE_meV": None, "error_meV": None}
        if crystal and liquid:
            lowest_crystal = min(crystal, key=lambda r: r["energy_meV"])
            lowest_liquid = min(liquid, key=lambda r: r["energy_meV"])
            entry["dE_meV"] = lowest_crystal["energy_meV"] - lowest_liquid["energy_meV"]
            entry["error_meV"] = float(np.hypot(lowest_crystal["error_meV"],
                                                lowest_liquid["error_meV"]))
        out.append(entry)
    return out


def _zero_of_line(x0: float, y0: float, x1: float, y1: float) -> float | None:
    """Where the straight line through (x0, y0), (x1, y1) crosses zero, if inside [x0, x1]."""
    if y0 == y1 or y0 * y1 > 0:
        return None
    return x0 + (x1 - x0) * y0 / (y0 - y1)


def crystal_onset(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Where the crystal sets in along the sweep (module docstring).

    Returns:
        ``bracket``: (epsilon_low, epsilon_high), the neighbouring epsilons between which the
        lowest state changes from crystal to liquid (None if it never does); ``epsilon_c`` and
        ``range``: the energy crossing and its range (None where dE is missing at either end of
        the bracket; a range end is None where dE -+ sigma does not cross inside it).
    """
    diffs = energy_differences(rows)
    result: dict[str, Any] = {"bracket": None, "epsilon_c": None, "range": None}
    for a, b in zip(diffs, diffs[1:]):
        if a["phase"] == "crystal" and b["phase"] == "liquid":
            result["bracket"] = (a["epsilon"], b["epsilon"])
            if a["dE_meV"] is not None and b["dE_meV"] is not None:
                result["epsilon_c"] = _zero_of_line(a["epsilon"], a["dE_meV"],
                                                    b["epsilon"], b["dE_meV"])
                result["range"] = tuple(  # dE + sigma crosses first, dE - sigma last
                    _zero_of_line(a["epsilon"], a["dE_meV"] + sign * a["error_meV"],
                                  b["epsilon"], b["dE_meV"] + sign * b["error_meV"])
                    for sign in (+1, -1))
            break
    return result


def format_table(rows: list[dict[str, Any]]) -> str:
    """Plain-text table, one line per run, then the phase at each epsilon and the onset."""
    lines = ["epsilon start        U   E (meV/el)           <|rho_K|>  S(K)    |<rho_K>|  "
             "sublattice occupations  contrast  ended"]
    for r in rows:
        occ = " ".join(f"{v:.3f}" for v in r["sublattice_occupations"])
        ended = "crystal" if is_crystal(r) else "liquid"
        lines.append(f"{r['epsilon']:7.3g} {r['start']:5s} {r['U']:8.4f}   {r['energy_meV']:10.5f} +- "
                     f"{r['error_meV']:.5f}   {r['rho_K_abs']:.4f}    {r['S_K']:6.3f}  "
                     f"{r['rho_K_mean_abs']:.4f}     {occ}     {r['contrast']:.3f}     {ended}")
    lines.append("")
    lines.append("epsilon  lowest   dE = E_crystal - E_liquid (meV/el)")
    for d in energy_differences(rows):
        de = ("-" if d["dE_meV"] is None
              else f"{d['dE_meV']:+.5f} +- {d['error_meV']:.5f}")
        lines.append(f"{d['epsilon']:7.3g}  {d['phase']:7s}  {de}")
    onset = crystal_onset(rows)
    if onset["bracket"] is None:
        lines.append("crystal onset: the lowest state does not change from crystal to liquid "
                     "along this sweep")
    else:
        low, high = onset["bracket"]
        text = f"crystal onset: between epsilon = {low:g} (crystal) and {high:g} (liquid)"
        if onset["epsilon_c"] is not None:
            lo, hi = onset["range"]  # None: dE -+ sigma does not cross inside the bracket
            lo = f"< {low:g}" if lo is None else f"{lo:.3g}"
            hi = f"> {high:g}" if hi is None else f"{hi:.3g}"
            text += (f"; energy crossing at epsilon_c = {onset['epsilon_c']:.3g} "
                     f"(dE +- sigma: {lo} to {hi})")
        lines.append(text)
    return "\n".join(lines)


def plot_transition(rows: list[dict[str, Any]], observables: list[Observables],
                    out: str | Path) -> Path:
    """PNG: order parameters against epsilon (one branch per start), dE = E_c - E_l where both
    kinds of state were reached, and the density maps of the lowest runs at both ends.

    Args:
        rows: from :func:`transition_table` (sorted by epsilon).
        observables: the matching observables.
        out: the PNG path.

    Returns:
        The path written.
    """
    eps_all = sorted({r["epsilon"] for r in rows})

    def lowest_run(epsilon: float) -> int:
        """Index in rows of the lowest-energy run at this epsilon."""
        at_epsilon = [i for i, r in enumerate(rows) if r["epsilon"] == epsilon]
        return min(at_epsilon, key=lambda i: rows[i]["energy_meV"])

    ends = [lowest_run(e) for e in dict.fromkeys((eps_all[0], eps_all[-1]))]
    diffs = [d for d in energy_differences(rows) if d["dE_meV"] is not None]
    n_plots = 1 + bool(diffs) + len(ends)
    fig = Figure(figsize=(5.0 * n_plots + 0.5, 4.6))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n_plots)
    ax = axes[0]
    for start, fill in zip(sorted({r["start"] for r in rows}), ("full", "none", "left", "right")):
        branch = [r for r in rows if r["start"] == start]
        eps = [r["epsilon"] for r in branch]
        ax.plot(eps, [r["rho_K_abs"] for r in branch], "o-", fillstyle=fill, color="C0",
                label=rf"$\langle|\rho_K|\rangle$, start {start}")
        ax.plot(eps, [r["contrast"] / 2 for r in branch], "^--", fillstyle=fill, color="C2",
                label=f"sublattice contrast / 2, start {start}")
    ax.axhline(0.5, color="0.5", lw=0.8, ls="--", label="perfect honeycomb crystal")
    ax.axhline(CRYSTAL_CONTRAST / 2, color="0.7", lw=0.8, ls=":", label="crystal threshold")
    for a in axes[:1 + bool(diffs)]:
        a.set_xscale("log")
        a.set_xticks(eps_all, [f"{e:g}" for e in eps_all], minor=False)
        a.set_xticks([], minor=True)
        a.set_xlabel(r"$\epsilon$ (weaker Coulomb repulsion $\rightarrow$)")
    ax.set_ylabel("order parameter")
    ax.set_ylim(0, 0.6)
    ax.legend(fontsize=6)
    ax.set_title(f"N = {rows[0]['n_electrons']} on {rows[0]['n_sites']} sites", fontsize=9)
    if diffs:
        ax_de = axes[1]
        ax_de.errorbar([d["epsilon"] for d in diffs], [d["dE_meV"] for d in diffs],
                       yerr=[d["error_meV"] for d in diffs], fmt="o-", capsize=3)
        ax_de.axhline(0.0, color="0.5", lw=0.8)
        onset = crystal_onset(rows)
        if onset["epsilon_c"] is not None:
            ax_de.axvline(onset["epsilon_c"], color="C3", lw=1.0,
                          label=rf"$\epsilon_c$ = {onset['epsilon_c']:.3g}")
            ax_de.legend(fontsize=7)
        ax_de.set_ylabel(r"$E_{crystal} - E_{liquid}$ (meV / electron)")
        ax_de.set_title("lower energy decides the phase", fontsize=9)
    for index, ax_map in zip(ends, axes[1 + bool(diffs):]):
        draw_density(fig, ax_map, observables[index])
        ax_map.set_title(f"epsilon = {rows[index]['epsilon']:g}, start {rows[index]['start']}\n"
                         + ax_map.get_title(), fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    return Path(out)
