r"""Slater determinants of supercell plane waves, with an optional two-body Jastrow factor.

psi(r_1..r_N) = exp(J) sum_k w_k det[phi^{k,up}_j(r_i)] det[phi^{k,down}_j(r_i)],

    phi^k_j(r) = sum_Q C^k[Q, j] exp(i Q . r),

with Q over the supercell reciprocal lattice (Q . L in 2 pi Z for every supercell vector L, so
every orbital, and psi, is periodic on the supercell torus), |Q| <= g_max |g_1|
(|g_1| = 4 pi / sqrt3 / a_M). The complex coefficients C^k and weights w_k are stored as real and
imaginary parameter arrays (the Jacobian code needs real parameters). The Q set is
:func:`hpcvmc.systems.moire_lattice.supercell_plane_waves`, the basis of the Hartree-Fock
reference ``hpcvmc.reference.hf`` for g_max = q_max, so one
determinant represents the Hartree-Fock state exactly (``init = "hf"``), and the optimized
single determinant is a variational HF in that basis (the non-attention limit of the Psiformer).
With twist k_s = 0 the plane waves exp(i (k_s + G) . r) are exactly these exp(i Q . r).

log psi = J + log sum_k exp(log w_k + log det_k^up + log det_k^down) is evaluated as a
log-sum-exp with the phase kept (:mod:`hpcvmc.logdet`: LU per determinant, complex logarithms).

Jastrow (optional): J = sum_{i<j} u_{s_i s_j}(d_ij), u(d) = c d / (1 + b d), b = softplus(theta)
learnable per spin channel (same, opposite), and d_ij the periodic distance

    d(r)^2 = (1 / 4 pi^2) sum_{a,b} (L L^T)_{ab} [sin w_a sin w_b + (1 - cos w_a)(1 - cos w_b)],
    w = 2 pi s, s = r L^{-1} the fractional coordinates,

which is smooth, periodic, zero only on the lattice and equals |r| (1 + O(r^2)) near r = 0.
Cusp conditions (2D; kinetic -1/2 nabla^2 per electron and Coulomb U / r, energies in E0,
lengths in a_M). Near the coalescence of electrons i and j the relative motion has reduced mass
1/2, kinetic operator -nabla_r^2. For a relative state r^l exp(u(r)) exp(i l theta) the 2D
radial Laplacian gives

    -nabla_r^2 psi / psi = -(u'' + u'^2) - (2 l + 1) u' / r,

so the 1/r divergence cancels against U / r if and only if

    du/dr(0) = U / (2 l + 1):  c = U for opposite spins (l = 0), c = U / 3 for equal spins (l = 1).

(In 3D the same algebra gives U / (2 l + 2), the familiar 1/2 and 1/4 in Hartree units; the 2D
values are twice and 4/3 times larger.) The determinant supplies the factor r^l (it vanishes
linearly when two equal spins meet), the Jastrow the cusp. Without the Jastrow the local energy
diverges as U / r where two electrons meet: for equal spins (|psi|^2 ~ r^2) the variance stays
finite; for opposite spins (|psi|^2 ~ const) the variance diverges logarithmically in 2D.

Plane-wave Jastrow terms (optional, ``jastrow_shells`` = S > 0): J gains

    J_p = sum_{i<j} sum_{s=1..S} a_{c_ij, s} sum_{G in shell s} cos(G . (r_i - r_j)),

G != 0 over the S shortest shells of supercell reciprocal vectors (:func:`reciprocal_shells`),
c_ij = equal or opposite spins, a learnable and 0 at the start. The terms are smooth and even
in r_i - r_j, so the cusps stay those of u; they give the pair correlation a free shape on the
scales 2 pi / |G| of the cell (the "p" term of periodic Jastrow factors in quantum Monte Carlo).
On the triangular supercells the shells hold 6, 6, 6, 12, 6, 6, 12, 6, ... vectors with
|G|^2 / |G_1|^2 = 1, 3, 4, 7, 9, 12, 13, 16, ...; on the 3 x 3 cell of 9 sites the moire
vectors g_n are shell 5 (|g_1| = 3 |G_1|).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hpcvmc.config import InputError, option
from hpcvmc.logdet import log_det, log_sum_exp
from hpcvmc.reference import hf, hf_search
from hpcvmc.registry import Component, register
from hpcvmc.systems.moire_lattice import (MoireParameters, lattice_shell, supercell_plane_waves,
                                          supercell_reciprocal)

@dataclass(frozen=True, eq=False)
class Orbitals:
    """The plane-wave basis and the starting orbitals (compared by identity inside the module).

    The starting coefficients are computed on first use, i.e. when parameters are initialized:
    a run restored from a checkpoint never solves the (Hartree-Fock) problem behind them.

    Attributes:
        Q: Cartesian plane-wave vectors, shape (n_Q, 2), in 1/a_M.
        n_up, n_down: number of spin-up and spin-down orbitals.
        solve: returns the starting coefficients, complex, shape (n_Q, max(n_up, n_down)); the
            up block is its first n_up columns, the down block its first n_down columns.
    """

    Q: np.ndarray
    n_up: int
    n_down: int
    solve: Callable[[], np.ndarray]

    @functools.cached_property
    def coefficients(self) -> np.ndarray:
        """The starting coefficients (``solve()``, computed once)."""
        return np.asarray(self.solve())

    def block(self, spin: str) -> np.ndarray:
        """Starting coefficients of the ``"up"`` or ``"down"`` orbitals, shape (n_Q, n_spin)."""
        return self.coefficients[:, : self.n_orbitals(spin)]

    def initializer(self, spin: str, part: str) -> Callable[[jax.Array, tuple[int, ...]], jax.Array]:
        """Flax initializer: the real or imaginary ``part`` of ``block(spin)`` broadcast to
        (K, n_Q, n_spin). The values enter through a host callback, so a shape-only evaluation
        (``jax.eval_shape``, the template of a checkpoint restore) never calls ``solve``."""

        def init(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
            def values() -> np.ndarray:
                return np.ascontiguousarray(np.broadcast_to(getattr(self.block(spin), part), shape))

            return jax.pure_callback(values, jax.ShapeDtypeStruct(shape, jnp.float64))

        return init

    def n_orbitals(self, spin: str) -> int:
        """n_up for ``"up"``, n_down for ``"down"``."""
        return self.n_up if spin == "up" else self.n_down


def band_orbitals(params: MoireParameters, g_max: float, n_orbitals: int) -> np.ndarray:
    """The n lowest eigenvectors of the non-interacting Hamiltonian in the plane-wave basis.

    h[a, b] = 1/2 |Q_a|^2 delta_ab + V_{Q_a - Q_b} (in E0; ``hpcvmc.reference.hf.one_body_matrix``)
    on the plane waves |Q| <= g_max |g_1|. Its lowest eigenvectors are the Bloch states of the
    lowest band(s) at the supercell k-points (for V = 0, plane waves in order of |Q|). When the
    last occupied level is degenerate with the first empty one (open shell) the occupied
    combination is the one ``numpy.linalg.eigh`` returns.

    Args:
        params: model parameters.
        g_max: plane-wave cut-off in units of |g_1|.
        n_orbitals: number of orbitals.

    Returns:
        Coefficients on ``supercell_plane_waves(params.M, g_max)``, complex, shape
        (n_Q, n_orbitals), orthonormal columns.
    """
    h = hf.one_body_matrix(params, hf.supercell_basis(params, g_max))
    return np.linalg.eigh(h)[1][:, :n_orbitals].astype(complex)


HF_SCREEN_ABOVE = 200
"""Plane waves above which the Hartree-Fock start is searched in a smaller basis first."""
HF_SCREEN_Q_MAX = 1.5
"""Cut-off (units of |g_1|) of that screening search."""
HF_REFINE = 4
"""Lowest screened solutions refined in the full basis."""


def hf_orbitals(
    params: MoireParameters, Q_int: np.ndarray, g_max: float, seed: int = 0
) -> np.ndarray:
    """Occupied orbitals of the lowest unrestricted (spin-polarized) Hartree-Fock solution.

    Runs the robust search of ``hpcvmc.reference.hf_search`` (all start families, the same
    defaults as ``hpcvmc reference hf``) in the basis q_max = g_max, keeps the lowest converged
    solution (the lowest of all when none converged) and takes the eigenvectors of its density
    matrix P with eigenvalue 1. Bases of more than HF_SCREEN_ABOVE plane waves are searched at
    q_max = HF_SCREEN_Q_MAX first and the HF_REFINE lowest solutions refined.

    Args:
        params: model parameters (spin-polarized).
        Q_int: this model's plane waves on (B_1, B_2), shape (n_Q, 2).
        g_max: cut-off in units of |g_1| (passed to the search as q_max).
        seed: base seed of the random starts.

    Returns:
        Coefficients on ``Q_int``, complex, shape (n_Q, N).

    Raises:
        ValueError: if the HF basis is not contained in ``Q_int``.
    """
    screen = len(Q_int) > HF_SCREEN_ABOVE and g_max > HF_SCREEN_Q_MAX
    basis, solutions, _ = hf_search.search(params, hf_search.SearchSettings(
        q_max=g_max, seed=seed, screen_q_max=HF_SCREEN_Q_MAX if screen else None,
        n_refine=HF_REFINE if screen else None))
    occupied = np.linalg.eigh(solutions[0].run["P"])[1][:, -params.n_electrons:]
    index = {tuple(q): i for i, q in enumerate(Q_int.tolist())}
    rows = [index.get(tuple(q), -1) for q in basis.Q_int.tolist()]
    if min(rows) < 0:
        raise ValueError("the Hartree-Fock basis has plane waves outside the model's basis")
    out = np.zeros((len(Q_int), params.n_electrons), dtype=complex)
    out[rows] = occupied
    return out


def periodic_distance(r: jax.Array, cell: np.ndarray) -> jax.Array:
    """Smooth periodic distance on the torus (see the module docstring), |r| near r = 0.

    Args:
        r: displacements, shape (..., 2), in a_M (not a lattice vector: the derivative of the
            square root is infinite there).
        cell: supercell vectors, shape (2, 2), rows L_1, L_2, in a_M.

    Returns:
        d(r) in a_M, shape (...).
    """
    w = 2.0 * jnp.pi * (r @ jnp.asarray(np.linalg.inv(cell)))
    metric = jnp.asarray(cell @ cell.T)
    sin, one_minus_cos = jnp.sin(w), 1.0 - jnp.cos(w)
    quad = (jnp.einsum("...a,ab,...b->...", sin, metric, sin)
            + jnp.einsum("...a,ab,...b->...", one_minus_cos, metric, one_minus_cos))
    return jnp.sqrt(quad) / (2.0 * jnp.pi)


def reciprocal_shells(cell: np.ndarray, n_shells: int) -> tuple[np.ndarray, np.ndarray]:
    """The supercell reciprocal vectors G != 0 of the ``n_shells`` smallest lengths |G|.

    G = n_1 B_1 + n_2 B_2 with B = 2 pi (L^{-1})^T, so G . L_a is in 2 pi Z and exp(i G . r)
    is periodic on the supercell torus. A shell holds every G of one length (all of them: a
    shell is invariant under the lattice's point group).

    Args:
        cell: supercell vectors, shape (2, 2), rows L_1, L_2, in a_M.
        n_shells: number of shells S (>= 1).

    Returns:
        (G, shell): G of shape (n_G, 2) in 1/a_M, ordered by length; shell index 0..S-1 of each.
    """
    basis = 2.0 * np.pi * np.linalg.inv(cell).T
    cutoff = float(np.min(np.linalg.norm(basis, axis=1)))
    while True:
        G = lattice_shell(basis, cutoff)[1:] @ basis  # the zero vector comes first
        norm = np.linalg.norm(G, axis=1)
        lengths, shell = np.unique(np.round(norm / norm[0], 8), return_inverse=True)
        if len(lengths) >= n_shells:  # every G of length <= cutoff is in G: shells are whole
            keep = shell < n_shells
            return G[keep], shell[keep]
        cutoff *= 1.5


def plane_wave_jastrow(module: nn.Module, x: jax.Array, n_up: int, cell: np.ndarray,
                       n_shells: int) -> jax.Array:
    """J_p = sum_{i<j} sum_s a_{c_ij, s} sum_{G in shell s} cos(G . (r_i - r_j)).

    The plane-wave ("p") term of periodic Jastrow factors: smooth, even and periodic in every
    pair separation, so it leaves the cusps of :func:`two_body_jastrow` unchanged and adds the
    pair correlation on the scale of the cell (shell s of :func:`reciprocal_shells`, wavelength
    2 pi / |G_s|). The coefficients a (parameter ``jastrow_plane_waves``, shape (2, S), rows
    c = 0 for equal spins and c = 1 for opposite spins) start at 0: J_p = 0 at initialization.
    Call it from inside the ``nn.compact`` method of ``module``.

    Args:
        module: the flax module that owns the parameter.
        x: positions, shape (batch, N, 2), in a_M; electrons 0..n_up-1 are spin up.
        n_up: number of spin-up electrons.
        cell: supercell vectors, shape (2, 2), rows L_1, L_2, in a_M.
        n_shells: number of shells S.

    Returns:
        J_p, dimensionless, shape (batch,).
    """
    G, shell = reciprocal_shells(cell, n_shells)
    n = x.shape[1]
    i, j = np.triu_indices(n, k=1)
    channel = np.where((i < n_up) == (j < n_up), 0, 1)
    a = module.param("jastrow_plane_waves", nn.initializers.zeros, (2, n_shells))
    cosines = jnp.cos((x[:, i] - x[:, j]) @ jnp.asarray(G.T, x.dtype))  # (batch, pairs, n_G)
    per_shell = cosines @ jnp.asarray(np.eye(n_shells)[shell], x.dtype)  # (batch, pairs, S)
    return jnp.sum(per_shell * a[channel].astype(x.dtype), axis=(1, 2))


JASTROW_SHELLS_DOC = (
    "Plane-wave Jastrow terms: sum over pairs of a_s sum_{G in shell s} cos(G . r_ij) for the "
    "shortest shells s of supercell reciprocal vectors G, learnable a_s per spin channel "
    "starting at 0 (needs model.jastrow = true); 0: none.")


def two_body_jastrow(module: nn.Module, x: jax.Array, n_up: int, cell: np.ndarray,
                     U: float) -> jax.Array:
    """J = sum_{i<j} c_{ij} d_ij / (1 + b_{ij} d_ij) with the 2D cusps (module docstring).

    c = U / 3 for equal spins, U for opposite spins; b = softplus(theta) per spin channel, the
    parameters ``jastrow_same`` and ``jastrow_opposite`` of ``module`` (b = 1 / a_M initially).
    Call it from inside the ``nn.compact`` method of ``module``.

    Args:
        module: the flax module that owns the two parameters.
        x: positions, shape (batch, N, 2), in a_M; electrons 0..n_up-1 are spin up.
        n_up: number of spin-up electrons.
        cell: supercell vectors, shape (2, 2), rows L_1, L_2, in a_M.
        U: Coulomb strength (a_M / a_B*).

    Returns:
        J, dimensionless, shape (batch,).
    """
    n = x.shape[1]
    i, j = np.triu_indices(n, k=1)
    same = (i < n_up) == (j < n_up)
    d = periodic_distance(x[:, i] - x[:, j], cell)  # (batch, n_pairs)
    b_init = nn.initializers.constant(float(np.log(np.expm1(1.0))))  # b = 1 / a_M
    b_same = nn.softplus(module.param("jastrow_same", b_init, ()))
    b_opp = nn.softplus(module.param("jastrow_opposite", b_init, ()))
    c = jnp.where(same, U / 3.0, U)
    b = jnp.where(same, b_same, b_opp)
    return jnp.sum(c * d / (1.0 + b * d), axis=-1)


class Slater(nn.Module):
    """Sum of Slater determinants of periodic plane-wave orbitals, optional Jastrow.

    Attributes:
        orbitals: the plane waves and starting coefficients (:class:`Orbitals`).
        cell: supercell vectors, shape (2, 2), rows L_1, L_2, in a_M (for the Jastrow).
        n_determinants: number K of determinants.
        init_noise: every coefficient of every determinant gets complex Gaussian noise of standard
            deviation init_noise / sqrt(n_Q) at initialization (the noise of one orbital has norm
            ~ init_noise relative to the unit-norm orbital).
        jastrow: include the two-body Jastrow factor.
        jastrow_shells: shells S of the plane-wave Jastrow term (0: none).
        U: Coulomb strength (a_M / a_B*): fixes the cusps c = U (opposite), U / 3 (same spin).
    """

    orbitals: Orbitals
    cell: np.ndarray
    n_determinants: int = 1
    init_noise: float = 0.0
    jastrow: bool = False
    jastrow_shells: int = 0
    U: float = 0.0

    def _coefficients(self, spin: str) -> jax.Array:
        """Learnable (K, n_Q, n_orb) complex coefficients, stored as real and imaginary parts."""
        n_Q = len(self.orbitals.Q)
        shape = (self.n_determinants, n_Q, self.orbitals.n_orbitals(spin))
        scale = self.init_noise / np.sqrt(n_Q)

        def init(part: str) -> Any:
            def fn(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
                base = self.orbitals.initializer(spin, part)(key, shape)
                return base + scale * jax.random.normal(key, shape)

            return fn

        re = self.param(f"{spin}_re", init("real"), shape)
        im = self.param(f"{spin}_im", init("imag"), shape)
        return jax.lax.complex(re, im)

    def _log_dets(self, plane_waves: jax.Array, spin: str) -> jax.Array:
        """log det[phi^k_j(r_i)] of one spin block, complex, shape (batch, K)."""
        if self.orbitals.n_orbitals(spin) == 0:
            return jnp.zeros(plane_waves.shape[:1] + (self.n_determinants,), plane_waves.dtype)
        C = self._coefficients(spin)
        return log_det(jnp.einsum("bnq,kqj->bknj", plane_waves, C))

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """log psi of walkers x of shape (batch, N, 2) (Cartesian, a_M) -> complex (batch,)."""
        n_up = self.orbitals.n_up
        phases = x @ jnp.asarray(self.orbitals.Q.T)  # (batch, N, n_Q)
        plane_waves = jnp.exp(1j * phases)
        log_dets = (self._log_dets(plane_waves[:, :n_up], "up")
                    + self._log_dets(plane_waves[:, n_up:], "down"))
        if self.n_determinants == 1:
            log_psi = log_dets[:, 0]
        else:
            w_re = self.param("weights_re", nn.initializers.ones, (self.n_determinants,))
            w_im = self.param("weights_im", nn.initializers.zeros, (self.n_determinants,))
            log_psi = log_sum_exp(log_dets + jnp.log(jax.lax.complex(w_re, w_im)))
        if self.jastrow:
            log_psi = log_psi + two_body_jastrow(self, x, n_up, self.cell, self.U)
        if self.jastrow_shells:
            log_psi = log_psi + plane_wave_jastrow(self, x, n_up, self.cell, self.jastrow_shells)
        return log_psi


def initial_orbitals(params: MoireParameters, g_max: float, init: str, seed: int = 0) -> Orbitals:
    """Plane waves of the basis and the starting orbitals of the up and down blocks.

    Args:
        params: model parameters.
        g_max: plane-wave cut-off in units of |g_1|.
        init: "bands" (lowest non-interacting orbitals; the same N/2 for both spins when
            unpolarized) or "hf" (the lowest spin-polarized Hartree-Fock state).
        seed: base seed of the Hartree-Fock random guesses.

    Returns:
        The :class:`Orbitals`.

    Raises:
        ValueError: for an unknown ``init``, or "hf" on an unpolarized system.
    """
    Q_int = supercell_plane_waves(params.M, g_max)
    Q = Q_int @ supercell_reciprocal(params.M)
    n = params.n_electrons
    n_up = n if params.spin_polarized else n // 2
    if init == "bands":
        def solve() -> np.ndarray:
            return band_orbitals(params, g_max, n_up)
    elif init == "hf":
        if not params.spin_polarized:
            raise ValueError("init = 'hf' needs a spin-polarized system (hf.py is polarized only)")

        def solve() -> np.ndarray:
            return hf_orbitals(params, Q_int, g_max, seed)
    else:
        raise ValueError(f"unknown orbital initialization {init!r}: use 'bands' or 'hf'")
    return Orbitals(Q=Q, n_up=n_up, n_down=n - n_up, solve=solve)


def from_config(cfg: Any, system: Any) -> Slater:
    """Build the model from a validated ``[model] type = "slater"`` section and a Moire system."""
    params = system.params
    orbitals = initial_orbitals(params, cfg.g_max, cfg.init)
    return Slater(orbitals=orbitals, cell=params.cell, n_determinants=cfg.n_determinants,
                  init_noise=cfg.init_noise, jastrow=cfg.jastrow,
                  jastrow_shells=cfg.jastrow_shells, U=params.U)


@dataclass(frozen=True, kw_only=True)
class SlaterConfig:
    """Slater determinants of periodic supercell plane waves, optional two-body Jastrow (moire).

    psi = exp(J) sum_k w_k det[phi^k_j(r_i)], phi^k_j(r) = sum_Q C^k[Q, j] exp(i Q.r) over the
    supercell reciprocal vectors |Q| <= g_max |g_1| (hpcvmc/models/slater.py).
    """

    type: str = option("slater", "Model type.")
    n_determinants: int = option(1, "Number of determinants K (summed with learnable weights).",
                                 positive=True)
    g_max: float = option(
        3.0, "Plane-wave cut-off: norm of Q at most g_max times that of g_1 (4 pi/sqrt3 per a_M); "
        "3.0 = the default Hartree-Fock basis.",
        positive=True,
    )
    init: str = option(
        "bands", "Initial orbitals: lowest non-interacting (band) orbitals or the lowest "
        "spin-polarized Hartree-Fock state (hpcvmc.reference.hf, basis cut-off q_max = g_max).",
        choices=("bands", "hf"),
    )
    init_noise: float = option(
        0.0, "Random perturbation of the initial orbitals (relative norm; > 0 needed for K > 1).",
        minimum=0.0,
    )
    jastrow: bool = option(
        False, "Two-body Jastrow u(d) = c d/(1 + b d) with the 2D cusps c = U (opposite spins), U/3 "
        "(equal spins) and a periodic distance d.",
    )
    jastrow_shells: int = option(0, JASTROW_SHELLS_DOC, minimum=0, hashed_when_set=True)

    requires: ClassVar[frozenset[str]] = frozenset({"moire"})

    def validate(self, cfg: Any) -> None:
        """Cross-key checks: K > 1 needs noise, hf needs spin polarization, enough plane waves."""
        check_plane_wave_basis(cfg.system, self.g_max)
        if self.n_determinants > 1 and self.init_noise == 0.0:
            raise InputError(
                f"model.n_determinants = {self.n_determinants} with model.init_noise = 0: the "
                "determinants would start equal and stay equal; set model.init_noise > 0"
            )
        if self.init == "hf" and not cfg.system.spin_polarized:
            raise InputError("model.init = 'hf' needs system.spin_polarized = true "
                             "(the Hartree-Fock reference is spin-polarized only)")
        check_jastrow_shells(self.jastrow, self.jastrow_shells)


def check_jastrow_shells(jastrow: bool, jastrow_shells: int) -> None:
    """``model.jastrow_shells`` > 0 extends the two-body Jastrow: it needs ``model.jastrow``."""
    if jastrow_shells and not jastrow:
        raise InputError(f"model.jastrow_shells = {jastrow_shells} needs model.jastrow = true "
                         "(the plane-wave terms extend the two-body Jastrow)")


def check_plane_wave_basis(system: Any, g_max: float) -> None:
    """Plane-wave orbitals hold at most as many electrons (per spin) as there are supercell
    plane waves with norm of Q at most g_max times that of g_1.

    Raises:
        InputError: naming system.n_electrons and the number of plane waves.
    """
    params = MoireParameters.from_config(system)
    n_q = len(supercell_plane_waves(params.M, g_max))
    per_spin = system.n_electrons if system.spin_polarized else system.n_electrons // 2
    if per_spin > n_q:
        raise InputError(
            f"system.n_electrons = {system.n_electrons}: {per_spin} electrons of one spin need as "
            f"many orbitals, but model.g_max = {g_max} gives {n_q} plane waves on this "
            f"supercell ({params.n_sites} sites); raise model.g_max or lower the electron count"
        )


register(Component("model", "slater", SlaterConfig, from_config))
