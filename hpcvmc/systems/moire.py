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
from typing import Any, Callable, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from hpcvmc.config import REQUIRED, InputError, option
from hpcvmc.laplacian import METHODS as LAPLACIAN_METHODS
from hpcvmc.progress import format_energy
from hpcvmc.registry import Component, register
from hpcvmc.systems.ewald import Ewald2D
from hpcvmc.systems.lattice import map_in_chunks
from hpcvmc.systems.moire_lattice import (
    NAMED_SUPERCELLS,
    MoireParameters,
    moire_sites,
    potential_wave_vectors,
)

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

    observables = "hpcvmc.observables:MOIRE_OBSERVABLES"
    """The final measurement's density, S(q) and rho_K (:mod:`hpcvmc.observables`)."""

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
        cell = jnp.asarray(self.cell)
        frac = x @ jnp.asarray(np.linalg.inv(self.cell))
        return (frac - jnp.floor(frac)) @ cell

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


@dataclass(frozen=True, kw_only=True)
class MoireConfig:
    """2D electrons in a triangular moire potential with Coulomb repulsion on a supercell torus.

    Lengths in a_M, energies in E0 = hbar^2 / (m* a_M^2) (see docs/physics.md section 4).
    """

    type: str = option("moire", "System type.")
    m_star: float = option(0.35, "Effective mass m* in units of the electron mass.", positive=True)
    a_M: float = option(8.031, "Moire period a_M in nm.", positive=True)
    V: float = option(15.0, "Moire potential amplitude V in meV.")
    phi: float = option(45.0, "Moire potential phase phi in degrees.")
    epsilon: float = option(10.0, "Dielectric constant epsilon.", positive=True)
    V_E0: float | None = option(None, "V / E0 directly (overrides V when set).")
    U: float | None = option(
        None, "Coulomb strength U = a_M / a_B* directly (overrides epsilon when set).", minimum=0.0
    )
    sites: int = option(
        9, "Named supercell: its number of moire sites.",
        choices=tuple(sorted(NAMED_SUPERCELLS)),
    )
    supercell: list[list[int]] | None = option(
        None, "General supercell as an integer matrix [[M00, M01], [M10, M11]] (overrides sites)."
    )
    n_electrons: int = option(REQUIRED, "Number of electrons N.", positive=True)
    spin_polarized: bool = option(True, "All electrons spin up (else N/2 up, N/2 down).")
    chunk_size: int = option(
        256, "Walkers per local-energy chunk (bounds the Laplacian's memory).", positive=True,
        numerical=True,
    )
    laplacian: str = option(
        "forward", "Laplacian of log psi in the kinetic energy: forward (folx forward Laplacian), "
        "loop (nested jvp per coordinate) or hessian (trace of the full Hessian, for checks).",
        choices=tuple(LAPLACIAN_METHODS), numerical=True,
    )

    capabilities: ClassVar[frozenset[str]] = frozenset({"continuum", "moire"})

    @property
    def memory_footprint(self) -> tuple[int, int, str]:
        """Bytes of one walker (16 N_e), forward passes per walker of the Laplacian (2 + 2 N_e:
        the gradient over the 2 N_e coordinates rides along) and the key of the system size
        (:mod:`hpcvmc.resources`)."""
        return 16 * self.n_electrons, 2 + 2 * self.n_electrons, "system.n_electrons"

    def validate(self, cfg: Any) -> None:
        """Cross-key checks."""
        if self.supercell is not None:
            shape_ok = len(self.supercell) == 2 and all(len(row) == 2 for row in self.supercell)
            if not shape_ok:
                raise InputError("system.supercell must be a 2 x 2 integer matrix")
            (m00, m01), (m10, m11) = self.supercell
            if m00 * m11 - m01 * m10 == 0:
                raise InputError("system.supercell is singular (zero area)")
        if not self.spin_polarized and self.n_electrons % 2:
            raise InputError(
                f"system.n_electrons = {self.n_electrons} is odd: an unpolarized state needs an "
                "even number (or set system.spin_polarized = true)"
            )


register(Component("system", "moire", MoireConfig, from_config))
