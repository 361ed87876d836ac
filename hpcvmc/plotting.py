"""PNG figures of a run (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def read_history_csv(run_dir: Path) -> dict[str, np.ndarray]:
    """The per-step history of a run folder (history.csv) as columns."""
    data = np.genfromtxt(run_dir / "history.csv", delimiter=",", names=True, ndmin=1)
    return {name: np.asarray(data[name]) for name in data.dtype.names}


def plot_energy(run_dir: Path, out: Path, exact: float | None = None, title: str = "") -> None:
    """Energy vs step with error bars; the exact energy as a horizontal line when known."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
