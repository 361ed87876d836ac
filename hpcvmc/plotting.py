"""PNG figures of a run (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np

TITLE_WIDTH = 120
"""Characters per line of a figure title (the run's system and model, wrapped)."""


def pyplot() -> Any:
    """``matplotlib.pyplot`` with the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def read_history_csv(run_dir: Path) -> dict[str, np.ndarray]:
    """The per-step history of a run folder (history.csv) as columns."""
    data = np.genfromtxt(run_dir / "history.csv", delimiter=",", names=True, ndmin=1)
    return {name: np.asarray(data[name]) for name in data.dtype.names}


def plot_energy(run_dir: Path, out: Path, exact: float | None = None, title: str = "") -> None:
    """Energy vs step with error bars; the exact energy as a horizontal line when known."""
    plt = pyplot()

    h = read_history_csv(run_dir)
    fig, (ax, ax_rel) = plt.subplots(2, 1, figsize=(7, 6), sharex=True,
                                     gridspec_kw={"height_ratios": [2, 1]})
    ax.errorbar(h["step"], h["energy"], yerr=h["error"], fmt=".", ms=3, lw=0.8, label="VMC")
    if exact is not None:
        ax.axhline(exact, color="k", ls="--", lw=1, label=f"exact {exact:.6f}")
        rel = np.abs((h["energy"] - exact) / exact)
        ax_rel.semilogy(h["step"], np.maximum(rel, 1e-12), ".", ms=3)
        ax_rel.set_ylabel("|E - E0| / |E0|")
    else:
        ax_rel.semilogy(h["step"], h["variance"], ".", ms=3)
        ax_rel.set_ylabel("variance")
    ax.set_ylabel("energy (total)")
    ax_rel.set_xlabel("step")
    ax.legend()
    ax.set_title("\n".join(textwrap.wrap(title, TITLE_WIDTH)), fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def plot_reference_density(result: dict, out: Path) -> None:
    """Charge density of a Hartree-Fock reference (``hpcvmc reference hf`` JSON) over the
    supercell, the moire sites marked; a 3 x 3 tiling of the cell shows the pattern.

    The density grid holds rho(r_ij) in 1/a_M^2 at r_ij = (i/m_1) L_1 + (j/m_2) L_2.
    """
    plt = pyplot()

    rho = np.asarray(result["density"]["rho"])
    cell = np.asarray(result["density"]["cell"])
    m1, m2 = rho.shape
    s1, s2 = np.meshgrid(np.arange(m1) / m1, np.arange(m2) / m2, indexing="ij")
    fig, ax = plt.subplots(figsize=(6, 5))
    sites = np.asarray(result["state"]["sites"])
    for a in (-1, 0, 1):
        for b in (-1, 0, 1):
            frac = np.stack([s1 + a, s2 + b], axis=-1).reshape(-1, 2)
            xy = frac @ cell
            mesh = ax.tripcolor(xy[:, 0], xy[:, 1], rho.ravel(), shading="gouraud",
                                vmin=rho.min(), vmax=rho.max(), cmap="viridis")
            shifted = sites + a * cell[0] + b * cell[1]
            ax.plot(shifted[:, 0], shifted[:, 1], "w+", ms=5)
    corners = np.array([[0, 0], cell[0], cell[0] + cell[1], cell[1], [0, 0]])
    ax.plot(corners[:, 0], corners[:, 1], "r-", lw=1)
    fig.colorbar(mesh, ax=ax, label="rho (1 / a_M^2)")
    ax.set_aspect("equal")
    ax.set_xlabel("x (a_M)")
    ax.set_ylabel("y (a_M)")
    charges = [round(c, 3) for c in result["state"]["sublattice_charges"]]
    ax.set_title(f"HF: {result['state']['classification']}, "
                 f"{result['energy_per_electron_meV']:.4f} meV/electron\n"
                 f"sqrt3 sublattice charges {charges}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
