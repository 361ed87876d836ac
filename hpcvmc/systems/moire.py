"""2D electrons in a triangular moire potential on a supercell torus (docs/physics.md section 4).

H = -1/2 sum_i nabla_i^2 - 2 V sum_i sum_{n=1..3} cos(g_n . r_i + phi) + U E_ewald({r})

in units of E0 = hbar^2 / (m* a_M^2), lengths in a_M. E_ewald = 1/2 sum_{i != j} phi(r_i - r_j)
+ N xi / 2 is the Coulomb energy per supercell of the electrons and a uniform neutralizing
background (``hpcvmc.systems.ewald.Ewald2D``). Energies returned by this module are **totals**
for the supercell in E0; :meth:`Moire.to_meV` and :meth:`Moire.format_energy` convert them
(per electron and total).

A configuration is an array (N, 2) of Cartesian positions in a_M; electrons 0..n_up-1 are spin
up, the rest spin down (all up when spin-polarized).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from hpcvmc.chunking import map_in_chunks
from hpcvmc.laplacian import METHODS as LAPLACIAN_METHODS
from hpcvmc.progress import format_energy
from hpcvmc.systems.ewald import Ewald2D
from hpcvmc.systems.moire_lattice import MoireParameters, moire_sites, potential_wave_vectors
from hpcvmc.torus import wrap_into_cell

LogPsi = Callable[[Any, jax.Array], jax.Array]
"""log psi(params, x): x of shape (batch, N, 2) -> complex log psi of shape (batch,)."""


@dataclass(frozen=True, eq=False)
class Moire:
    """The moire system: geometry, potential, Ewald sum and the local energy.

    Attributes:
        params: dimensionless parameters (V/E0, phi, U, E0 in meV, supercell M, N, spin).
        chunk_size: walkers per chunk of the local-energy evaluation (bounds the Laplacian's
            memory, which is 2N times the forward activations of one walker per walker).
        laplacian: name of the Laplacian method in ``hpcvmc.laplacian.METHODS`` ("forward",
            "loop" or "hessian").
        ewald: the Ewald sum of the supercell (built from ``params.cell``).
    """

    params: MoireParameters
    chunk_size: int = 256
    laplacian: str = "forward"
    ewald: Ewald2D = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ewald", Ewald2D(self.params.cell))

    @property
    def n_sites(self) -> int:
        """Number of moire sites in the supercell."""
        return self.params.n_sites

    @property
    def n_electrons(self) -> int:
        """Number of electrons N."""
        return self.params.n_electrons

    @property
    def n_up(self) -> int:
        """Spin-up electrons: N when spin-polarized, else N/2 (electrons 0..n_up-1)."""
        return self.n_electrons if self.params.spin_polarized else self.n_electrons // 2

    @property
    def config_shape(self) -> tuple[int, int]:
        """Shape of one configuration: (N, 2) Cartesian positions in a_M."""
        return (self.n_electrons, 2)

    @property
    def cell(self) -> np.ndarray:
        """Supercell vectors, shape (2, 2), rows L_1, L_2 in a_M."""
        return self.params.cell

    @property
    def madelung(self) -> float:
        """Madelung constant xi of the supercell in 1/a_M (N U xi / 2 is part of every energy)."""
        return self.ewald.madelung

    def site_positions(self) -> np.ndarray:
        """Moire sites in the cell (potential minima for V > 0, |phi| < 60 deg), (N_sites, 2), a_M."""
        return moire_sites(self.params.M)[0]

    def wrap(self, x: jax.Array) -> jax.Array:
        """Map positions into the supercell: fractional coordinates s = r L^-1 taken mod 1.

        Args:
            x: positions, shape (..., 2), in a_M.

        Returns:
            Equivalent positions r = (s mod 1) L, shape (..., 2).
        """
        return wrap_into_cell(x, self.cell)

    def potential_energy(self, x: jax.Array) -> jax.Array:
        """Moire potential of all electrons, V(r) = -2 (V/E0) sum_i sum_n cos(g_n . r_i + phi).

        Args:
            x: positions, shape (..., N, 2), in a_M.

        Returns:
            Total potential energy in E0, shape (...).
        """
        g = jnp.asarray(potential_wave_vectors())
        phases = x @ g.T + self.params.phi  # (..., N, 3)
        return -2.0 * self.params.V_E0 * jnp.sum(jnp.cos(phases), axis=(-2, -1))

    def coulomb_energy(self, x: jax.Array) -> jax.Array:
        """Coulomb energy U E_ewald with the neutralizing background (0 when U = 0).

        Args:
            x: positions, shape (n, N, 2), in a_M (no two electrons of a walker coincide).

        Returns:
            U [1/2 sum_{i != j} phi(r_i - r_j) + N xi / 2] in E0 (total), shape (n,).
        """
        if self.params.U == 0.0:
            return jnp.zeros(x.shape[0], dtype=x.dtype)
        return self.params.U * jax.vmap(self.ewald.energy)(x)

    def kinetic_energy(self, logpsi: LogPsi, params: Any, x: jax.Array) -> jax.Array:
        """Local kinetic energy -1/2 sum_i [nabla_i^2 log psi + (nabla_i log psi)^2].

        The square is the complex square (not the modulus) when log psi is complex; the
        derivatives come from the method ``self.laplacian`` of ``hpcvmc.laplacian.METHODS``.

        Args:
            logpsi: the model's log psi(params, x) for x of shape (batch, N, 2).
            params: model parameters.
            x: positions, shape (n, N, 2), in a_M.

        Returns:
            Complex kinetic local energy in E0 (total), shape (n,).
        """
        method = LAPLACIAN_METHODS[self.laplacian]

        def one(walker: jax.Array) -> jax.Array:
            lap, grad = method(lambda r: logpsi(params, r[None])[0], walker)
            return -0.5 * (lap + jnp.sum(grad * grad))

        return jax.vmap(one)(x)

    def local_energy(self, logpsi: LogPsi, params: Any, x: jax.Array) -> jax.Array:
        """Local energy E_L = H psi / psi of every walker, in chunks of ``chunk_size`` walkers.

        E_L = -1/2 sum_i [nabla_i^2 log psi + (nabla_i log psi)^2]
              - 2 V sum_i sum_n cos(g_n . r_i + phi) + U E_ewald.

        Args:
            logpsi: the model's log psi(params, x) for x of shape (batch, N, 2).
            params: model parameters.
            x: positions, shape (n, N, 2), in a_M.

        Returns:
            Complex local energies in E0, totals for the supercell, shape (n,).
        """

        def chunk(xc: jax.Array) -> jax.Array:
            kinetic = self.kinetic_energy(logpsi, params, xc)
            return kinetic + self.potential_energy(xc) + self.coulomb_energy(xc)

        return map_in_chunks(chunk, x, self.chunk_size)

    def to_meV(self, energy_E0: float | np.ndarray) -> float | np.ndarray:
        """Convert an energy from E0 to meV (E0 = ``params.E0_meV`` meV)."""
        return energy_E0 * self.params.E0_meV

    def per_electron_meV(self, energy_E0: float | np.ndarray) -> float | np.ndarray:
        """Total supercell energy in E0 -> energy per electron in meV."""
        return energy_E0 * self.params.E0_meV / self.n_electrons

    energy_unit = "E0 (total of the supercell; E0 = hbar^2 / (m* a_M^2))"

    def progress_energy(self, mean_E0: float, error_E0: float) -> str:
        """The energy of the progress line: '<total> +- <err> E0 = <meV> +- <err> meV/el'."""
        scale = self.params.E0_meV / self.n_electrons
        return (f"{format_energy(mean_E0, error_E0)} E0 = {mean_E0 * scale:.3f} +- "
                f"{error_E0 * scale:.3f} meV/el")

    def format_energy(self, mean_E0: float, error_E0: float) -> str:
        """One line with a total energy in E0 and meV, and per electron in meV.

        Args:
            mean_E0: total energy in E0.
            error_E0: its error bar in E0.

        Returns:
            "E = <E0> +- <err> E0 total = <meV> +- <err> meV total = <meV/N> +- <err> meV per
            electron".
        """
        n, e0 = self.n_electrons, self.params.E0_meV
        return (f"E = {mean_E0:.6f} +- {error_E0:.6f} E0 total"
                f" = {mean_E0 * e0:.5f} +- {error_E0 * e0:.5f} meV total"
                f" = {mean_E0 * e0 / n:.5f} +- {error_E0 * e0 / n:.5f} meV per electron")


def from_config(cfg: Any) -> Moire:
    """Build the system from a validated ``[system] type = "moire"`` section."""
    return Moire(MoireParameters.from_config(cfg), chunk_size=cfg.chunk_size,
                 laplacian=cfg.laplacian)
