"""Exact diagonalization of the J1-J2 model in the total Sz = 0 sector (Lanczos).

Independent of the VMC code paths: the Hamiltonian is built here from bit strings, with no
Marshall sign (it is a basis-independent reference). Energies are totals in units of J1 with
S = sigma / 2. Lattices up to 4 x 4 (12,870 states) take well under a second; 6 x 6
(9.1e9 states) is out of reach and its published values are given instead.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.sparse
import scipy.sparse.linalg

from hpcvmc.config import InputError
from hpcvmc.systems.lattice import square_bonds

MAX_ED_SITES = 20

# Published 6 x 6 ground-state energies (totals, S = sigma/2): Schulz, Ziman, Poilblanc,
# J. Phys. I 6, 675 (1996); see docs/physics.md section 1.
KNOWN_6X6 = {0.0: -24.439397, 0.5: -18.13716}


def sz0_basis(n_sites: int) -> np.ndarray:
    """Sorted integers whose n_sites bits hold n_sites/2 ones (bit s set = spin up on site s)."""
    states = np.arange(1 << n_sites, dtype=np.int64)
    counts = np.zeros_like(states)
    for s in range(n_sites):
        counts += (states >> s) & 1
    return states[counts == n_sites // 2]


def hamiltonian(L: int, J1: float, J2: float) -> scipy.sparse.csr_matrix:
    """Sparse H = sum_b J_b S_i . S_j on the Sz = 0 basis of :func:`sz0_basis`.

    S_i . S_j = s_i s_j / 4 + (S_i^+ S_j^- + S_i^- S_j^+) / 2 with s = +-1; the exchange term
    connects states that differ by swapping antiparallel spins i, j with amplitude 1/2.
    """
    n = L * L
    if n > MAX_ED_SITES:
        raise ValueError(f"exact diagonalization is limited to {MAX_ED_SITES} sites, got {n}")
    basis = sz0_basis(n)
    nn, nnn = square_bonds(L)
    diagonal = np.zeros(len(basis))
    rows, cols, vals = [], [], []
    for bonds, coupling in ((nn, J1), (nnn, J2)):
        if coupling == 0.0:
            continue
        for i, j in bonds:
            bi, bj = (basis >> i) & 1, (basis >> j) & 1
            diagonal += coupling * np.where(bi == bj, 0.25, -0.25)
            differ = np.nonzero(bi != bj)[0]
            flipped = basis[differ] ^ ((1 << int(i)) | (1 << int(j)))
            rows.append(differ)
            cols.append(np.searchsorted(basis, flipped))
            vals.append(np.full(len(differ), 0.5 * coupling))
    dim = len(basis)
    off = scipy.sparse.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(dim, dim)
    )
    return off + scipy.sparse.diags(diagonal)


def ground_state_energy(L: int, J1: float = 1.0, J2: float = 0.0) -> float:
    """Lowest eigenvalue of H in the Sz = 0 sector (Lanczos, tolerance 1e-12), total energy."""
    H = hamiltonian(L, J1, J2)
    v0 = np.random.default_rng(0).standard_normal(H.shape[0])
    (energy,) = scipy.sparse.linalg.eigsh(H, k=1, which="SA", v0=v0, tol=1e-12,
                                          return_eigenvectors=False)
    return float(energy)


def known_energy(L: int, J1: float, J2: float) -> float | None:
    """A published ground-state energy (total) when one is known, else None."""
    if L == 6 and J1 == 1.0:
        return KNOWN_6X6.get(J2)
    return None


def exact_energy(system: Any, allow_known: bool) -> tuple[float, str]:
    """(ground-state energy in J1, source) of a ``[system] type = "j1j2"`` config: Lanczos up
    to MAX_ED_SITES sites, else the published value when ``allow_known``.

    Raises:
        InputError: naming system.L when the lattice is too large.
    """
    if system.n_sites <= MAX_ED_SITES:
        return ground_state_energy(system.L, system.J1, system.J2), "Lanczos ED, Sz = 0"
    known = known_energy(system.L, system.J1, system.J2)
    if known is not None and allow_known:
        return known, "published (Schulz, Ziman, Poilblanc 1996)"
    hint = " (pass --known for the published value)" if known is not None else ""
    raise InputError(
        f"system.L = {system.L}: exact diagonalization is limited to {MAX_ED_SITES} sites{hint}"
    )


def n_states(L: int) -> int:
    """Dimension of the Sz = 0 sector of L x L spins."""
    return math.comb(L * L, L * L // 2)
