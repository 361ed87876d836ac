"""Memory budget of a momentum-resolved exact diagonalization, estimated before anything is built.

For spin-polarized fermions in n_modes single-particle modes with momentum labels l_m (integer
2-vectors mod n_k), the dimension of the sector of total momentum K is the coefficient of
x^N z^K in prod_m (1 + x z^{l_m}), computed by dynamic programming over the modes.

The sparse sector Hamiltonian stores the lower triangle (with the diagonal). Its non-zeros per row
are estimated from the two-body terms: a state has C(N, 2) occupied pairs; each can hop to the
t_mean momentum-conserving pairs of its two-body term, of which a fraction
C(n_modes - N + 2, 2) / C(n_modes, 2) is free of the other N - 2 electrons (Pauli), and half of
the hops land in the lower triangle:

    nnz_per_row ~ 1 + C(N, 2) t_mean C(n_modes - N + 2, 2) / (2 C(n_modes, 2)).

Bytes (the peaks of the build as implemented in `hpcvmc.reference.bped`):
    Fock space: BYTES_PER_FOCK_STATE per state of the full N-particle space (bit strings, momentum
    codes, the rank table and their temporaries);
    matrix: BYTES_PER_NONZERO per stored non-zero (COO triplets of int32, int32, complex128, their
    concatenation and the CSR conversion; the peak resident memory of 9-site sectors with
    6e6 and 8e7 stored non-zeros was 75 bytes per non-zero, all included, with the non-zeros
    per row overestimated by 12 %);
    Lanczos: LANCZOS_VECTORS complex vectors of the sector dimension (ARPACK's 20 Lanczos vectors
    and the work arrays of the matrix-vector product);
    two-body tensors: BYTES_PER_TENSOR_ELEMENT per element of the n_modes^4 tensors W and A;
    BASE_BYTES for the interpreter and libraries.
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np

BYTES_PER_FOCK_STATE = 48
BYTES_PER_NONZERO = 72
LANCZOS_VECTORS = 26
BYTES_PER_TENSOR_ELEMENT = 80
BASE_BYTES = 100_000_000


class MemoryBudgetError(ValueError):
    """The estimated memory of a diagonalization exceeds the allowed budget."""


def available_memory_bytes() -> int:
    """Currently free physical memory, os.sysconf(SC_AVPHYS_PAGES) x page size, in bytes."""
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def sector_dimensions(mode_labels: np.ndarray, n_particles: int, n_k: int) -> np.ndarray:
    """Number of N-particle Fock states of every total momentum code l_1 n_k + l_2.

    Args:
        mode_labels: momentum label of each mode, integers, shape (n_modes, 2).
        n_particles: number of electrons N.
        n_k: labels are taken mod n_k.

    Returns:
        int64 array of length n_k^2 (zero for codes that are not momenta of the torus).
    """
    codes = np.arange(n_k * n_k)
    label = np.stack([codes // n_k, codes % n_k], axis=1)
    counts = np.zeros((n_particles + 1, n_k * n_k), dtype=np.int64)
    counts[0, 0] = 1
    for m_label in np.asarray(mode_labels):
        shifted = np.mod(label + m_label, n_k)
        target = shifted[:, 0] * n_k + shifted[:, 1]
        for n in range(n_particles, 0, -1):
            np.add.at(counts[n], target, counts[n - 1])
    return counts[n_particles]


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """Estimated peak memory of the largest requested sector, in bytes."""

    dimension: int
    """Largest sector dimension among those requested."""
    nnz_per_row: float
    """Estimated stored non-zeros per row (lower triangle with diagonal)."""
    fock_bytes: int
    matrix_bytes: int
    lanczos_bytes: int
    tensor_bytes: int

    @property
    def total_bytes(self) -> int:
        """Fock space + matrix + Lanczos vectors + two-body tensors + the interpreter."""
        return (self.fock_bytes + self.matrix_bytes + self.lanczos_bytes + self.tensor_bytes
                + BASE_BYTES)


def estimate_memory(
    n_modes: int, n_particles: int, dimension: int, mean_pair_targets: float
) -> MemoryEstimate:
    """Peak memory of building and diagonalizing one sector (module docstring).

    Args:
        n_modes: number of single-particle modes.
        n_particles: number of electrons N.
        dimension: sector dimension D.
        mean_pair_targets: mean number of momentum-conserving pairs a pair can hop to.

    Returns:
        The estimate.
    """
    free = math.comb(n_modes - n_particles + 2, 2) / max(1, math.comb(n_modes, 2))
    per_row = 1.0 + 0.5 * math.comb(n_particles, 2) * mean_pair_targets * free
    return MemoryEstimate(
        dimension=int(dimension),
        nnz_per_row=per_row,
        fock_bytes=BYTES_PER_FOCK_STATE * math.comb(n_modes, n_particles),
        matrix_bytes=int(BYTES_PER_NONZERO * per_row * dimension),
        lanczos_bytes=LANCZOS_VECTORS * 16 * int(dimension),
        tensor_bytes=BYTES_PER_TENSOR_ELEMENT * n_modes**4,
    )
