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
           "U": MoireParameters.from_config(config.system).U, "n_electrons": obs.n_electrons,
           "n_sites": len(obs.sites), "energy_meV": energy, "error_meV": error,
           "n_samples": obs.n_samples, **order_parameters(obs)}
    return row, obs


def transition_table(run_dirs: list[str | Path]) -> tuple[list[dict[str, Any]], list[Observables]]:
    """Rows and observables of the given runs, sorted by epsilon."""
    pairs = sorted((read_run(d) for d in run_dirs), key=lambda pair: pair[0]["epsilon"])
    return [row for row, _ in pairs], [obs for _, obs in pairs]


def format_table(rows: list[dict[str, Any]]) -> str:
    """Plain-text table, one line per run."""
    lines = ["epsilon        U   E (meV/el)           <|rho_K|>  S(K)    |<rho_K>|  "
             "sublattice occupations  contrast"]
    for r in rows:
        occ = " ".join(f"{v:.3f}" for v in r["sublattice_occupations"])
        lines.append(f"{r['epsilon']:7.3g} {r['U']:8.4f}   {r['energy_meV']:10.5f} +- "
                     f"{r['error_meV']:.5f}   {r['rho_K_abs']:.4f}    {r['S_K']:6.3f}  "
                     f"{r['rho_K_mean_abs']:.4f}     {occ}     {r['contrast']:.3f}")
    return "\n".join(lines)


def plot_transition(rows: list[dict[str, Any]], observables: list[Observables],
                    out: str | Path) -> Path:
    """PNG: order parameters against epsilon, and the densities at both ends of the sweep.

    Args:
        rows: from :func:`transition_table` (sorted by epsilon).
        observables: the matching observables.
        out: the PNG path.

    Returns:
        The path written.
    """
    ends = [0, len(rows) - 1] if len(rows) > 1 else [0]
    fig = Figure(figsize=(5.5 + 5.0 * len(ends), 4.6))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 1 + len(ends))
    eps = [r["epsilon"] for r in rows]
    ax = axes[0]
    ax.plot(eps, [r["rho_K_abs"] for r in rows], "o-", label=r"$\langle|\rho_K|\rangle$")
    ax.plot(eps, [r["rho_K_mean_abs"] for r in rows], "s-", label=r"$|\langle\rho_K\rangle|$")
    ax.plot(eps, [r["contrast"] / 2 for r in rows], "^-", label="sublattice contrast / 2")
    ax.axhline(0.5, color="0.5", lw=0.8, ls="--", label="perfect honeycomb crystal")
    ax.set_xscale("log")
    ax.set_xticks(eps, [f"{e:g}" for e in eps], minor=False)
    ax.set_xticks([], minor=True)
    ax.set_xlabel(r"$\epsilon$ (weaker Coulomb repulsion $\rightarrow$)")
    ax.set_ylabel("order parameter")
    ax.set_ylim(0, 0.6)
    ax.legend(fontsize=7)
    ax.set_title(f"N = {rows[0]['n_electrons']} on {rows[0]['n_sites']} sites", fontsize=9)
    for index, ax_map in zip(ends, axes[1:]):
        draw_density(fig, ax_map, observables[index])
        ax_map.set_title(f"epsilon = {rows[index]['epsilon']:g}\n" + ax_map.get_title(),
                         fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    return Path(out)
