r"""Observables of electrons on the moire supercell torus: density, S(q), rho_K; HDF5 and PNGs.

With samples r_i (i = 1..N, positions in a_M) of |psi|^2:

* density rho(r): histogram of the positions on an m_1 x m_2 grid of the supercell
  (bin (a, b) holds the fractional coordinates s in [a/m_1, (a+1)/m_1) x [b/m_2, (b+1)/m_2)),
  rho = <counts> / (bin area), in 1/a_M^2, so that sum(rho) * bin area = N;
* structure factor S(q) = <|rho_q|^2> / N with rho_q = sum_i exp(-i q . r_i), for q on the
  supercell reciprocal lattice with |q| <= q_max |g_1| (S(0) = N); also the connected part
  S_c(q) = (<|rho_q|^2> - |<rho_q>|^2) / N;
* rho_K = N^-1 sum_i exp(i K . r_i) at the six corners K of the moire Brillouin zone
  (|K| = 4 pi / 3 / a_M), kept when they are supercell reciprocal vectors (cells that fit the
  sqrt3 x sqrt3 order): <|rho_K|> and <|rho_K|^2>. On the moire sites exp(i K . R) is a cube root
  of unity fixed by the sqrt3 sublattice, so |rho_K| = 1/2 for the honeycomb crystal at
  nu = 2/3, 1 for a triangular crystal on one sublattice and O(N^-1/2) for a uniform liquid.

Sums are accumulated per rank (:func:`accumulate`, jittable) and reduced with the Comm
collectives (:func:`reduce`); :func:`measure` runs a measurement phase with fixed parameters
(and the energy, with its error bar from the spread of the per-step means);
:func:`write_observables` / :func:`read_observables` store an :class:`Observables` in
``RUN_DIR/observables.h5``; :func:`plot_density`, :func:`plot_structure_factor` and
:func:`plot_observables` draw PNGs.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, NamedTuple

import h5py
import jax
import jax.numpy as jnp
import numpy as np

from hpcvmc.fixed_sampling import sample_fixed
from hpcvmc.outputs import cannot_write, remove_quietly, temporary_name, writing
from hpcvmc.parallel import Comm
from hpcvmc.systems.moire_lattice import G_NORM, moire_sites, sqrt3_sublattice, supercell_reciprocal

OBSERVABLES_FILE = "observables.h5"
K_NORM = 4.0 * np.pi / 3.0
"""|K| of the moire Brillouin-zone corners, in 1/a_M."""


@dataclasses.dataclass(frozen=True, eq=False)
class Geometry:
    """Where the observables are measured.

    Attributes:
        cell: supercell vectors, shape (2, 2), rows L_1, L_2, in a_M.
        grid: density grid (m_1, m_2) along L_1, L_2.
        q: supercell reciprocal vectors of S(q), shape (n_q, 2), in 1/a_M, sorted by |q|.
        k_points: moire BZ corners that are supercell reciprocal vectors, shape (n_K, 2), in 1/a_M
            (n_K = 6, or 0 for cells without sqrt3 order).
        sites: moire sites in the cell, shape (N_sites, 2), in a_M.
        sublattice: sqrt3 sublattice label of each site, shape (N_sites,).
        n_electrons: N.
        E0_meV: the energy unit E0 in meV.
    """

    cell: np.ndarray
    grid: tuple[int, int]
    q: np.ndarray
    k_points: np.ndarray
    sites: np.ndarray
    sublattice: np.ndarray
    n_electrons: int
    E0_meV: float


def brillouin_zone_corners() -> np.ndarray:
    """The six corners K_j = (4 pi / 3)(cos(j pi/3), sin(j pi/3)) of the moire BZ, shape (6, 2)."""
    angles = np.arange(6) * np.pi / 3.0
    return K_NORM * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def make_geometry(system: Any, points_per_aM: float = 12.0, q_max: float = 2.0) -> Geometry:
    """Measurement geometry of a moire system.

    Args:
        system: the :class:`hpcvmc.systems.moire.Moire` system.
        points_per_aM: density grid points per a_M along each supercell vector.
        q_max: S(q) is measured for |q| <= q_max |g_1| (|g_1| = 4 pi / sqrt3 / a_M).

    Returns:
        The geometry.
    """
    params = system.params
    cell = np.asarray(params.cell)
    grid = tuple(int(np.ceil(points_per_aM * n)) for n in np.linalg.norm(cell, axis=1))
    B = supercell_reciprocal(params.M)
    r = int(np.ceil(q_max * G_NORM / np.min(np.linalg.svd(B, compute_uv=False)))) + 1
    span = np.arange(-r, r + 1)
    q = np.stack(np.meshgrid(span, span, indexing="ij"), axis=-1).reshape(-1, 2) @ B
    norm = np.linalg.norm(q, axis=1)
    q = q[norm <= q_max * G_NORM + 1e-9]
    q = q[np.argsort(np.linalg.norm(q, axis=1), kind="stable")]
    corners = brillouin_zone_corners()
    phase = corners @ cell.T / (2.0 * np.pi)
    on_lattice = np.all(np.abs(phase - np.round(phase)) < 1e-9, axis=1)
    sites, integer = moire_sites(params.M)
    return Geometry(cell=cell, grid=grid, q=q, k_points=corners[on_lattice], sites=sites,
                    sublattice=sqrt3_sublattice(integer), n_electrons=params.n_electrons,
                    E0_meV=params.E0_meV)


class Accumulator(NamedTuple):
    """Running sums over samples (per rank until :func:`reduce`).

    Attributes:
        n_samples: number of samples, scalar.
        density: position counts per grid bin, shape (m_1, m_2).
        rho_q: sum of rho_q, complex, shape (n_q,).
        rho_q_sq: sum of |rho_q|^2, shape (n_q,).
        rho_K: sum of rho_K, complex, shape (n_K,).
        rho_K_abs: sum of |rho_K|, shape (n_K,).
        rho_K_sq: sum of |rho_K|^2, shape (n_K,).
    """

    n_samples: jax.Array
    density: jax.Array
    rho_q: jax.Array
    rho_q_sq: jax.Array
    rho_K: jax.Array
    rho_K_abs: jax.Array
    rho_K_sq: jax.Array


def empty(geometry: Geometry) -> Accumulator:
    """All sums zero."""
    n_q, n_k = len(geometry.q), len(geometry.k_points)
    zeros = jnp.zeros
    return Accumulator(zeros(()), zeros(geometry.grid), zeros(n_q, complex), zeros(n_q),
                       zeros(n_k, complex), zeros(n_k), zeros(n_k))


def accumulate(acc: Accumulator, x: jax.Array, geometry: Geometry) -> Accumulator:
    """Add samples to the sums (jittable, this rank only).

    Args:
        acc: the sums so far.
        x: positions, shape (n, N, 2), in a_M.
        geometry: the measurement geometry.

    Returns:
        The updated sums.
    """
    m1, m2 = geometry.grid
    frac = x @ jnp.asarray(np.linalg.inv(geometry.cell))
    frac = frac - jnp.floor(frac)
    bins = (frac * jnp.asarray([m1, m2])).astype(jnp.int32)
    bins = jnp.minimum(bins, jnp.asarray([m1 - 1, m2 - 1]))  # s = 1 - eps rounding up
    counts = jnp.zeros(m1 * m2).at[(bins[..., 0] * m2 + bins[..., 1]).reshape(-1)].add(1.0)
    rho_q = jnp.sum(jnp.exp(-1j * (x @ jnp.asarray(geometry.q.T))), axis=1)  # (n, n_q)
    rho_k = jnp.mean(jnp.exp(1j * (x @ jnp.asarray(geometry.k_points.T))), axis=1)  # (n, n_K)
    return Accumulator(
        n_samples=acc.n_samples + x.shape[0],
        density=acc.density + counts.reshape(m1, m2),
        rho_q=acc.rho_q + rho_q.sum(0),
        rho_q_sq=acc.rho_q_sq + jnp.sum(jnp.abs(rho_q) ** 2, axis=0),
        rho_K=acc.rho_K + rho_k.sum(0),
        rho_K_abs=acc.rho_K_abs + jnp.sum(jnp.abs(rho_k), axis=0),
        rho_K_sq=acc.rho_K_sq + jnp.sum(jnp.abs(rho_k) ** 2, axis=0),
    )


def reduce(acc: Accumulator, comm: Comm) -> Accumulator:
    """Sum the accumulators of all ranks (equal on every rank afterwards; jittable)."""
    return comm.sum(acc)


@dataclasses.dataclass(frozen=True, eq=False)
class Observables:
    """Measured observables (numpy), as written to ``observables.h5``.

    Attributes:
        cell: supercell vectors, shape (2, 2), in a_M.
        sites: moire sites, shape (N_sites, 2), in a_M.
        sublattice: sqrt3 sublattice of each site, shape (N_sites,).
        n_electrons: N.
        E0_meV: energy unit in meV.
        n_samples: samples measured (all ranks).
        density: rho on the grid (bins along L_1, L_2), shape (m_1, m_2), in 1/a_M^2.
        q: wave vectors, shape (n_q, 2), in 1/a_M.
        S_q: <|rho_q|^2> / N, shape (n_q,).
        S_q_connected: (<|rho_q|^2> - |<rho_q>|^2) / N, shape (n_q,).
        k_points: moire BZ corners, shape (n_K, 2), in 1/a_M.
        rho_K_abs: <|rho_K|>, shape (n_K,).
        rho_K_sq: <|rho_K|^2>, shape (n_K,).
        rho_K_mean: <rho_K>, complex, shape (n_K,).
        energy_E0: total energy in E0 (NaN when not measured).
        energy_error_E0: its error bar in E0 (largest of the spread of the per-step means and
            the combined autocorrelation-corrected per-step errors).
        energy_variance_E0: variance of the local energy in E0^2.
    """

    cell: np.ndarray
    sites: np.ndarray
    sublattice: np.ndarray
    n_electrons: int
    E0_meV: float
    n_samples: int
    density: np.ndarray
    q: np.ndarray
    S_q: np.ndarray
    S_q_connected: np.ndarray
    k_points: np.ndarray
    rho_K_abs: np.ndarray
    rho_K_sq: np.ndarray
    rho_K_mean: np.ndarray
    energy_E0: float = float("nan")
    energy_error_E0: float = float("nan")
    energy_variance_E0: float = float("nan")

    @property
    def energy_per_electron_meV(self) -> tuple[float, float]:
        """(energy, error) per electron in meV."""
        scale = self.E0_meV / self.n_electrons
        return self.energy_E0 * scale, self.energy_error_E0 * scale


def finalize(acc: Accumulator, geometry: Geometry, energy: tuple[float, float, float] | None = None
             ) -> Observables:
    """Turn reduced sums into observables.

    Args:
        acc: the sums over all ranks (after :func:`reduce`).
        geometry: the measurement geometry.
        energy: (total energy, error, variance) in E0, or None.

    Returns:
        The observables.
    """
    n = float(acc.n_samples)
    n_el = geometry.n_electrons
    bin_area = abs(np.linalg.det(geometry.cell)) / (geometry.grid[0] * geometry.grid[1])
    rho_q = np.asarray(acc.rho_q) / n
    s_q = np.asarray(acc.rho_q_sq) / n / n_el
    energy_values = energy if energy is not None else (float("nan"),) * 3
    return Observables(
        cell=geometry.cell, sites=geometry.sites, sublattice=geometry.sublattice,
        n_electrons=n_el, E0_meV=geometry.E0_meV, n_samples=int(n),
        density=np.asarray(acc.density) / n / bin_area, q=geometry.q, S_q=s_q,
        S_q_connected=s_q - np.abs(rho_q) ** 2 / n_el, k_points=geometry.k_points,
        rho_K_abs=np.asarray(acc.rho_K_abs) / n, rho_K_sq=np.asarray(acc.rho_K_sq) / n,
        rho_K_mean=np.asarray(acc.rho_K) / n, energy_E0=energy_values[0],
        energy_error_E0=energy_values[1], energy_variance_E0=energy_values[2],
    )


def measure(setup: Any, params: Any, chains: Any, n_steps: int, geometry: Geometry | None = None,
            ) -> tuple[Observables, Any]:
    """Measurement phase with fixed parameters: sample, local energy, observables.

    Runs ``n_steps`` sampler steps (streams tagged PURPOSE_MEASURE, step 0..n_steps-1, so they
    never repeat an optimization step), evaluates the local energy of every sample and
    accumulates the observables; collective (every rank must call it).

    Args:
        setup: the run's :class:`hpcvmc.build.Setup` (moire system, Gaussian sampler).
        params: model parameters.
        chains: this rank's chains (e.g. the final state of a run).
        n_steps: measurement steps (>= 2 for an error bar from the per-step means).
        geometry: the measurement geometry (default ``make_geometry(setup.system)``).

    Returns:
        (observables, the chains after the measurement).
    """
    geometry = make_geometry(setup.system) if geometry is None else geometry
    energy, acc, chains = sample_fixed(setup, params, chains, n_steps,
                                       lambda acc, x: accumulate(acc, x, geometry), empty(geometry))
    acc = jax.jit(lambda a: reduce(a, setup.comm))(acc)
    return finalize(acc, geometry, energy), chains


def write_observables(run_dir: str | Path, obs: Observables) -> Path:
    """Write ``RUN_DIR/observables.h5`` (one dataset per array field, scalars as attributes).

    Call on rank 0 only. Written to a temporary name and renamed (atomic). Returns the path.

    Raises:
        OutputError: naming the file; the temporary file is removed, an older file is kept.
    """
    path = Path(run_dir) / OBSERVABLES_FILE
    tmp = temporary_name(path)
    try:
        with h5py.File(tmp, "w") as f:
            for item in dataclasses.fields(obs):
                value = getattr(obs, item.name)
                if isinstance(value, np.ndarray):
                    f.create_dataset(item.name, data=value)
                else:
                    f.attrs[item.name] = value
            f.attrs["units"] = ("lengths in a_M, wave vectors in 1/a_M, density in 1/a_M^2, "
                                "energies in E0 (totals for the supercell)")
        os.replace(tmp, path)
    except OSError as exc:
        remove_quietly(tmp)
        raise cannot_write(path, exc) from None
    return path


def read_observables(path: str | Path) -> Observables:
    """Read an ``observables.h5`` written by :func:`write_observables`."""
    values: dict[str, Any] = {}
    with h5py.File(path, "r") as f:
        for item in dataclasses.fields(Observables):
            values[item.name] = f[item.name][()] if item.name in f else f.attrs[item.name]
    values["n_electrons"] = int(values["n_electrons"])
    values["n_samples"] = int(values["n_samples"])
    return Observables(**values)


class MoireObservables:
    """The final-measurement observables of a moire system (:class:`hpcvmc.protocols.Observables`):
    density, S(q) and rho_K beside the energy, written to ``observables.h5`` with PNGs."""

    def measure(self, setup: Any, params: Any, chains: Any, n_steps: int
                ) -> tuple[tuple[float, float, float], int, Observables]:
        """Energy (total in E0: mean, error, variance), samples and observables; collective."""
        obs, _ = measure(setup, params, chains, n_steps)
        energy = (obs.energy_E0, obs.energy_error_E0, obs.energy_variance_E0)
        return energy, obs.n_samples, obs

    def write(self, run_dir: str | Path, result: Observables) -> None:
        """``observables.h5``, ``density.png`` and ``structure_factor.png`` in ``run_dir``."""
        write_observables(run_dir, result)
        plot_observables(run_dir)


MOIRE_OBSERVABLES = MoireObservables()
"""Named by :attr:`hpcvmc.systems.moire.Moire.observables`."""


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def draw_density(fig: Any, ax: Any, obs: Observables) -> None:
    """Draw rho(r) over the supercell into ``ax`` (colour bar on ``fig``), moire sites by sqrt3
    sublattice, with N, samples, energy and <|rho_K|> in the title."""
    m1, m2 = obs.density.shape
    a, b = np.meshgrid(np.arange(m1 + 1) / m1, np.arange(m2 + 1) / m2, indexing="ij")
    corners = np.stack([a, b], axis=-1) @ obs.cell
    mesh = ax.pcolormesh(corners[..., 0], corners[..., 1], obs.density, cmap="viridis",
                         shading="flat")
    fig.colorbar(mesh, ax=ax, label=r"$\rho(r)$ ($a_M^{-2}$)", shrink=0.7)
    for label, marker in zip(range(3), ("o", "s", "^")):
        on = obs.sublattice == label
        ax.scatter(obs.sites[on, 0], obs.sites[on, 1], marker=marker, s=30, facecolors="none",
                   edgecolors="w", linewidths=1.0, label=f"moire sites, sublattice {label}")
    energy, error = obs.energy_per_electron_meV
    title = f"N = {obs.n_electrons} on {len(obs.sites)} sites, {obs.n_samples} samples"
    if np.isfinite(energy):
        title += f"\nE = {energy:.4f} +- {error:.4f} meV per electron"
    if len(obs.k_points):
        title += f", <|rho_K|> = {np.mean(obs.rho_K_abs):.3f}"
    ax.set_title(title, fontsize=9)
    ax.set_aspect("equal")
    ax.set_xlabel(r"$x$ ($a_M$)")
    ax.set_ylabel(r"$y$ ($a_M$)")
    ax.legend(fontsize=7, loc="upper left", facecolor="0.35", labelcolor="w", framealpha=0.8)


def plot_density(obs: Observables, out: str | Path) -> Path:
    """PNG of rho(r) over the supercell with the moire sites marked by sqrt3 sublattice.

    Args:
        obs: measured observables.
        out: the PNG path.

    Returns:
        The path written.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    draw_density(fig, ax, obs)
    fig.tight_layout()
    try:
        with writing(out):
            fig.savefig(out, dpi=130)
    finally:
        plt.close(fig)
    return Path(out)


def plot_structure_factor(obs: Observables, out: str | Path) -> Path:
    """PNG of S(q): a map over the q-plane (moire K points marked) and S against |q| (q != 0).

    Args:
        obs: measured observables.
        out: the PNG path.

    Returns:
        The path written.
    """
    plt = _pyplot()
    nonzero = np.linalg.norm(obs.q, axis=1) > 1e-9
    q, s = obs.q[nonzero], obs.S_q[nonzero]
    fig, (ax_map, ax_line) = plt.subplots(1, 2, figsize=(11, 4.8))
    points = ax_map.scatter(q[:, 0], q[:, 1], c=s, s=40 * s / max(s.max(), 1e-12) + 5,
                            cmap="magma")
    fig.colorbar(points, ax=ax_map, label=r"$S(q)$")
    hexagon = np.vstack([brillouin_zone_corners(), brillouin_zone_corners()[:1]])
    ax_map.plot(hexagon[:, 0], hexagon[:, 1], "c-", lw=0.8, label="moire BZ")
    if len(obs.k_points):
        ax_map.scatter(obs.k_points[:, 0], obs.k_points[:, 1], marker="x", c="c", s=50, label="K")
    ax_map.set_aspect("equal")
    ax_map.set_xlabel(r"$q_x$ ($a_M^{-1}$)")
    ax_map.set_ylabel(r"$q_y$ ($a_M^{-1}$)")
    ax_map.legend(fontsize=7)
    ax_line.plot(np.linalg.norm(q, axis=1), s, ".", label=r"$S(q)$")
    ax_line.plot(np.linalg.norm(q, axis=1), obs.S_q_connected[nonzero], "x", ms=4,
                 label=r"connected $S_c(q)$")
    ax_line.axvline(K_NORM, color="c", lw=0.8, ls="--", label=r"$|K|$")
    ax_line.set_xlabel(r"$|q|$ ($a_M^{-1}$)")
    ax_line.set_ylabel(r"$S(q) = \langle|\rho_q|^2\rangle / N$")
    ax_line.legend(fontsize=7)
    fig.suptitle(f"structure factor, N = {obs.n_electrons} on {len(obs.sites)} sites", fontsize=9)
    fig.tight_layout()
    try:
        with writing(out):
            fig.savefig(out, dpi=130)
    finally:
        plt.close(fig)
    return Path(out)


def plot_observables(run_dir: str | Path) -> list[Path]:
    """Read ``RUN_DIR/observables.h5``; write ``density.png`` and ``structure_factor.png`` there.

    Returns:
        The paths written.
    """
    run_dir = Path(run_dir)
    obs = read_observables(run_dir / OBSERVABLES_FILE)
    return [plot_density(obs, run_dir / "density.png"),
            plot_structure_factor(obs, run_dir / "structure_factor.png")]
