"""Search for the lowest unrestricted Hartree-Fock state from many varied starting points.

Every starting density matrix P0 is converged by `hpcvmc.reference.hf.run_scf` (DIIS, then the
optimal damping algorithm; converged = energy change < `hf.E_TOL` E0 and max |FP - PF| <
`hf.COMMUTATOR_TOL` E0). The converged runs are grouped into distinct solutions (total energies
within `DISTINCT_TOL` E0 are one solution; translated copies of a state have equal energies) and
the lowest converged solution is kept.

Starting points (families), for N electrons in the plane-wave basis of `hf.supercell_basis`:
    fermi_liquid  the uniform band state: aufbau of h (the N lowest plane-wave band states);
    honeycomb     for each sqrt3 x sqrt3 sublattice s = 0, 1, 2: sites of s repelled (the two
                  others filled), on cells that fit sqrt3 order ("honeycomb_s": only s);
    triangular    for each sublattice s: sites of s attracted ("triangular_s": only s);
    waves         single-Q density waves w_R = +-W cos(k . R) for every non-zero crystal momentum
                  k of the torus up to sign (stripes along the lattice directions, and the sqrt3
                  order at the K points);
    random        random Gaussian wells w_R ~ W N(0, 1) on the moire sites (`n_random` seeds);
    orbitals      random orbitals: P0 projects on a random N-dimensional subspace of the 3N
                  lowest plane-wave band states (`n_random` seeds).
The seed potentials sum_R w_R exp(-|r - R|^2 / (2 sigma^2)) (W = 10 max(V, E0), sigma = 0.25 a_M)
only shape P0 = aufbau(h + seed); the SCF runs with the true Fock operator.

With `screen_q_max`, all starts are first converged in the smaller basis |Q| <= screen_q_max
|g_1| (cheap), and each distinct solution found there is then re-converged in the full basis,
starting from its density matrix (the smaller basis is a subset of the larger).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from hpcvmc.reference import hf
from hpcvmc.systems.moire_lattice import (
    MoireParameters,
    moire_sites,
    sqrt3_sublattice,
    supercell_kpoints,
    supercell_reciprocal,
    supports_sqrt3,
)

FAMILIES = ("fermi_liquid", "honeycomb", "triangular", "waves", "random", "orbitals")
DEFAULT_RANDOM = 6
"""Seeds of each random family (random wells, random orbitals)."""
DISTINCT_TOL = 1e-4
"""Converged runs with total energies closer than this (E0) are one solution."""


@dataclasses.dataclass(frozen=True)
class SearchSettings:
    """What the search (:func:`search`) converges and in which basis."""

    q_max: float = hf.DEFAULT_Q_MAX
    """Plane-wave cut-off of the result, in units of |g_1|."""
    families: Sequence[str] = FAMILIES
    """Which starting points (module docstring)."""
    n_random: int = DEFAULT_RANDOM
    """Seeds of each random family."""
    seed: int = 0
    """Base random seed."""
    screen_q_max: float | None = None
    """Cut-off of a first, cheaper search (None: search in the full basis only)."""
    max_iter: int = 150
    """Maximum Fock builds per SCF stage."""
    n_refine: int | None = None
    """With screening, refine only the lowest ``n_refine`` distinct screened solutions (all if
    None); the starts of the others are reported with their screening energies."""


def site_potential(
    params: MoireParameters, basis: hf.SupercellBasis, amplitudes: np.ndarray, width: float = 0.25
) -> np.ndarray:
    """Matrix of W(r) = sum_R w_R sum_L exp(-|r - R - L|^2/(2 sigma^2)) over the moire sites R.

    <a|W|b> = W_{Q_a - Q_b}, W_p = (2 pi sigma^2 / A) exp(-sigma^2 p^2/2) sum_R w_R exp(-i p.R).

    Args:
        params: model parameters.
        basis: the plane-wave basis.
        amplitudes: w_R in E0 for each site of `moire_sites(params.M)`, shape (N_sites,).
        width: sigma in a_M.

    Returns:
        Hermitian matrix, shape (n, n), in E0.
    """
    sites, _ = moire_sites(params.M)
    p = basis.diff_int @ supercell_reciprocal(params.M)
    structure = np.exp(-1j * p @ sites.T) @ amplitudes
    gauss = np.exp(-0.5 * width**2 * np.sum(p**2, axis=-1))
    return (2.0 * np.pi * width**2 / basis.area * gauss * structure)[basis.diff_index]


def site_patterns(
    params: MoireParameters, families: Sequence[str], n_random: int, seed: int
) -> list[tuple[str, np.ndarray | None]]:
    """(label, w_R in E0) of every seeded start; w_R is None for the fermi_liquid and orbitals
    starts (no seed potential; orbitals carry their seed in the label).

    Raises:
        ValueError: for an unknown family.
    """
    single = {f"{f}_{s}" for f in ("honeycomb", "triangular") for s in range(3)}
    unknown = set(families) - set(FAMILIES) - single
    if unknown:
        raise ValueError(f"unknown Hartree-Fock guesses {sorted(unknown)}: use {FAMILIES}")
    strength = 10.0 * max(params.V_E0, 1.0)
    sites, integers = moire_sites(params.M)
    sublattice = sqrt3_sublattice(integers)
    out: list[tuple[str, np.ndarray | None]] = []
    for family in families:
        if family == "fermi_liquid":
            out.append(("fermi_liquid", None))
        elif family.startswith(("honeycomb", "triangular")) and supports_sqrt3(params.M):
            name, _, which = family.partition("_")
            sign = 1.0 if name == "honeycomb" else -1.0
            chosen = range(3) if not which else [int(which)]
            out += [(f"{name}_{s}", sign * strength * (sublattice == s)) for s in chosen]
        elif family == "waves":
            seen: list[np.ndarray] = []
            for j, kj in enumerate(supercell_kpoints(params.M)[1:], start=1):
                wave = np.cos(sites @ kj)
                if any(np.allclose(wave, other) for other in seen):
                    continue
                seen.append(wave)
                out += [(f"wave_{j}+", strength * wave), (f"wave_{j}-", -strength * wave)]
        elif family == "random":
            out += [(f"random_{r}",
                     strength * np.random.default_rng([seed, 1, r]).normal(size=len(sites)))
                    for r in range(n_random)]
        elif family == "orbitals":
            out += [(f"orbitals_{r}", None) for r in range(n_random)]
    return out


def initial_density(
    params: MoireParameters,
    basis: hf.SupercellBasis,
    h: np.ndarray,
    label: str,
    pattern: np.ndarray | None,
    seed: int,
) -> np.ndarray:
    """Starting density matrix of one start of `site_patterns` (module docstring)."""
    n = params.n_electrons
    if label.startswith("orbitals_"):
        r = int(label.split("_")[1])
        rng = np.random.default_rng([seed, 2, r])
        m = min(len(h), 3 * n)
        bands = np.linalg.eigh(h)[1][:, :m]
        mix = np.linalg.qr(rng.normal(size=(m, n)) + 1j * rng.normal(size=(m, n)))[0]
        C = bands @ mix
        return C @ C.conj().T
    seeded = h if pattern is None else h + site_potential(params, basis, pattern)
    return hf._occupied_density(seeded, n)


@dataclasses.dataclass
class Solution:
    """One distinct self-consistent solution."""

    energy: float
    """Total energy in E0 (including N U xi / 2)."""
    run: dict[str, Any]
    """The `hf.run_scf` result of its lowest representative."""
    guesses: list[str]
    """Labels of the starts that reached it."""


def _group(runs: list[tuple[str, dict[str, Any]]], tol: float) -> list[Solution]:
    """Distinct solutions: converged runs first, each sorted by energy and grouped within tol."""
    solutions: list[Solution] = []
    for converged in (True, False):
        chosen = sorted((r for r in runs if r[1]["converged"] == converged),
                        key=lambda r: r[1]["energy"])
        for label, run in chosen:
            last = solutions[-1] if solutions else None
            if (last is not None and last.run["converged"] == converged
                    and abs(run["energy"] - last.energy) < tol):
                last.guesses.append(label)
            else:
                solutions.append(Solution(run["energy"], run, [label]))
    return solutions


def _embed(P: np.ndarray, small: hf.SupercellBasis, large: hf.SupercellBasis) -> np.ndarray:
    """Density matrix of the smaller basis written in the larger one (zero elsewhere)."""
    index = {tuple(q): i for i, q in enumerate(large.Q_int.tolist())}
    rows = np.array([index[tuple(q)] for q in small.Q_int.tolist()])
    out = np.zeros((len(large.Q), len(large.Q)), dtype=complex)
    out[np.ix_(rows, rows)] = P
    return out


def search(
    params: MoireParameters,
    settings: SearchSettings = SearchSettings(),
    log: Callable[[str], None] | None = None,
) -> tuple[hf.SupercellBasis, list[Solution], dict[str, dict[str, Any]]]:
    """Converge every start and group the results into distinct solutions (module docstring).

    Args:
        params: model parameters (spin-polarized).
        settings: the starts, the bases and the SCF limit.
        log: called with one line per converged start.

    Returns:
        The basis, the distinct solutions (converged ones first, each group by ascending
        energy) and a record per start ("energy_E0", "converged", "iterations", "method" of its
        SCF, in the screening basis when screening; "solution": index into the solutions, None
        for a screened solution that was not refined).
    """
    def scf_all(basis, starts):
        builder = hf.fock_builder(params, basis)
        h = hf.one_body_matrix(params, basis)
        runs = []
        for label, make in starts:
            t0 = time.perf_counter()
            run = hf.run_scf(params, builder, h, make(basis, h), max_iter=settings.max_iter)
            runs.append((label, run))
            if log is not None:
                log(f"  {label:>16}: E = {run['energy'] * params.E0_meV / params.n_electrons:.6f} "
                    f"meV/e, {'converged' if run['converged'] else 'NOT converged'} after "
                    f"{run['iterations']} ({run['method']}), {time.perf_counter() - t0:.1f} s")
        return runs

    def start(label, pattern):
        return lambda basis, h: initial_density(params, basis, h, label, pattern, settings.seed)

    starts = [(label, start(label, pattern)) for label, pattern in
              site_patterns(params, settings.families, settings.n_random, settings.seed)]
    full = hf.supercell_basis(params, settings.q_max)
    screen_q_max, n_refine = settings.screen_q_max, settings.n_refine
    if screen_q_max is None:
        runs = scf_all(full, starts)
        solutions = _group(runs, DISTINCT_TOL)
    else:
        small = hf.supercell_basis(params, screen_q_max)
        screened = _group(scf_all(small, starts), DISTINCT_TOL)
        if log is not None:
            log(f"  {len(screened)} distinct solutions at q_max = {screen_q_max}; refining")
        kept = screened if n_refine is None else screened[:n_refine]
        refine = [(s.guesses[0], (lambda P: lambda basis, h: _embed(P, small, basis))(s.run["P"]))
                  for s in kept]
        refined = scf_all(full, refine)
        solutions = _group(refined, DISTINCT_TOL)
        owner = {s.guesses[0]: s.guesses for s in kept}
        for s in solutions:
            s.guesses = [g for first in s.guesses for g in owner[first]]
        runs = [(label, s.run) for s in screened for label in s.guesses]
    where = {g: i for i, s in enumerate(solutions) for g in s.guesses}
    record = {
        label: {"energy_E0": run["energy"], "converged": run["converged"],
                "iterations": run["iterations"], "method": run["method"],
                "solution": where.get(label)}
        for label, run in runs
    }
    return full, solutions, record


def run_hf(
    params: MoireParameters,
    settings: SearchSettings = SearchSettings(),
    density_points_per_aM: float = 12.0,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Unrestricted HF: the robust search (`search`), reporting every distinct solution.

    Args:
        params: model parameters (spin-polarized only).
        settings: the search's starts, bases and SCF limit.
        density_points_per_aM: resolution of the returned density.
        log: progress callback (one line per start).

    Returns:
        JSON-able dict: "energy_E0", "energy_meV", "energy_per_electron_E0",
        "energy_per_electron_meV" (lowest converged solution, totals include N U xi / 2),
        "terms_E0", "madelung_xi", "converged", "iterations", "commutator_E0", "fock_gap_meV",
        "state" (guess, classification, site and sublattice charges), "density" (rho in 1/a_M^2
        at r_ij = (i/m_1) L_1 + (j/m_2) L_2), "solutions" (every distinct solution: energies,
        converged, commutator, Fock gap, sublattice charges, classification, the starts that
        reached it), "guesses" (per start), "tolerances", "basis_size", "q_max", "wall_s".

    Raises:
        NotImplementedError: for an unpolarized system.
    """
    if not params.spin_polarized:
        raise NotImplementedError(
            "run_hf supports spin-polarized systems only (set spin_polarized = true)"
        )
    start = time.perf_counter()
    basis, solutions, record = search(params, settings, log)
    n = params.n_electrons
    table = []
    for s in solutions:
        charges = hf.site_charges(params, basis, s.run["P"])
        sub = hf.sublattice_charges(params, charges)
        table.append({
            "energy_E0": s.energy,
            "energy_per_electron_meV": s.energy * params.E0_meV / n,
            "converged": s.run["converged"],
            "commutator_E0": s.run["commutator"],
            "fock_gap_meV": s.run["gap"] * params.E0_meV,
            "sublattice_charges": sub.tolist(),
            "classification": hf.classify_state(params, sub, charges),
            "site_contrast": float(np.ptp(charges)),
            "site_charges": charges.tolist(),
            "guesses": s.guesses,
        })
    best, best_row = solutions[0], table[0]
    rho = hf.density_on_grid(params, basis, best.run["P"], density_points_per_aM)
    return {
        "method": "unrestricted Hartree-Fock (spin-polarized)",
        "energy_E0": best.energy,
        "energy_meV": best.energy * params.E0_meV,
        "energy_per_electron_E0": best.energy / n,
        "energy_per_electron_meV": best.energy * params.E0_meV / n,
        "terms_E0": best.run["terms"],
        "madelung_xi": hf.madelung_constant(params.cell),
        "converged": best.run["converged"],
        "iterations": best.run["iterations"],
        "commutator_E0": best.run["commutator"],
        "fock_gap_meV": best.run["gap"] * params.E0_meV,
        "state": {
            "guess": best.guesses[0],
            "classification": best_row["classification"],
            "sublattice_charges": best_row["sublattice_charges"],
            "site_charges": best_row["site_charges"],
            "sites": moire_sites(params.M)[0].tolist(),
        },
        "density": {"cell": params.cell.tolist(), "rho": rho.tolist()},
        "solutions": [{k: v for k, v in row.items() if k != "site_charges"} for row in table],
        "guesses": record,
        "tolerances": {"energy_E0": hf.E_TOL, "commutator_E0": hf.COMMUTATOR_TOL,
                       "distinct_E0": DISTINCT_TOL},
        "basis_size": len(basis.Q),
        "q_max": settings.q_max,
        "screen_q_max": settings.screen_q_max,
        "n_refine": settings.n_refine,
        "wall_s": time.perf_counter() - start,
    }
