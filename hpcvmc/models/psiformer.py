r"""Psiformer on the supercell torus: self-attention orbitals, a sum of determinants, Jastrow.

von Glehn, Spencer, Pfau, ICLR 2023; the periodic version of Geier, Nazaryan, Zaklama, Fu,
PRB 112, 045119 (2025) (docs/physics.md section 4). Lengths in a_M.

Features. Electron i at r_i (Cartesian, a_M) has fractional coordinates s_i = r_i L^{-1}
(rows of L: the supercell vectors L_1, L_2) and the input

    f_i = [sin 2 pi s_i1, sin 2 pi s_i2, cos 2 pi s_i1, cos 2 pi s_i2, sigma_i],

sigma_i = +1 (up) / -1 (down), left out when spin-polarized (``features = "supercell"``, the
published input). ``features = "moire"`` adds, before sigma_i, the moire harmonics

    [sin g_1 . r_i, sin g_2 . r_i, sin g_3 . r_i, cos g_1 . r_i, cos g_2 . r_i, cos g_3 . r_i]

(g_n the wave vectors of the moire potential, |g_n| = 4 pi / sqrt3 per a_M): the supercell
harmonics vary on the scale of the whole cell (3 a_M at 9 sites), so without them the network
must build the moire-scale position of an electron (which site, where in it) from products of
slow functions. f_i is periodic on the torus either way (every g_n is a supercell reciprocal
vector).

Network (width d, H heads of dimension d_k = d / H, ``n_layers`` blocks):

    h_i <- W_E f_i
    h_i <- LayerNorm(h_i + W_O concat_h sum_j softmax_j(q^h_i . k^h_j / sqrt d_k) v^h_j)
    h_i <- LayerNorm(h_i + tanh(W h_i + b))

with q, k, v linear in h (no bias). The attention makes h_i depend on all electrons and is
equivariant under permutations of the electrons.

Orbitals. Spin channel sigma (n_sigma electrons, its own heads) has K n_sigma complex orbitals

    phi^k_j(r_i; {r}) = a^k_j(h_i) chi^k_j(r_i),   a^k_j(h) = (W^re h + b^re) + i (W^im h + b^im),

with the plane-wave envelope chi^k_j(r) = sum_Q C^k[Q, j] exp(i Q . r) over the supercell
reciprocal vectors |Q| <= g_max |g_1| (``envelope = "plane_waves"``, learnable complex C, the
basis of ``hpcvmc.models.slater``) or chi = 1 (``envelope = "none"``, the published network).
Every factor is periodic under r_i -> r_i + L for each electron separately, so psi is too.
The envelope starts from the band or Hartree-Fock orbitals (``init``); the head starts at
b^re = 1, b^im = 0 and W ~ N(0, (w^2 / d)) with w = ``head_noise`` (default HEAD_NOISE), so
that a fresh model is the HF (or band) determinant times factors 1 + O(w) that differ between
determinants. The gradient of log psi with respect to every attention weight is proportional to
W, so w also sets how strongly the attention takes part from the start: with a small w the
natural gradient moves the envelope and the Jastrow and leaves the attention near its
initialization (docs/results.md, "9 sites: towards convergence"). With the envelope
and all attention weights removed the model is a Slater determinant (slater.py), i.e. one
variational Hartree-Fock state.

Wave function and log space:

    psi = exp(J) sum_k det[phi^{k,up}] det[phi^{k,down}]   (block-diagonal per spin),

log det by the LU of :func:`hpcvmc.logdet.log_det` (complex logarithms, phase kept) and
a log-sum-exp over k. J is the two-body Jastrow of slater.py (2D cusps U, U/3; optional), with
its plane-wave terms when ``jastrow_shells`` > 0. The
output is complex128 log psi; ``dtype = "float32"`` computes the network in float32 while the
parameters stay float64.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hpcvmc.config import DTYPES, InputError, option
from hpcvmc.logdet import log_det, log_sum_exp
from hpcvmc.models.slater import (JASTROW_SHELLS_DOC, Orbitals, check_jastrow_shells,
                                  check_plane_wave_basis, initial_orbitals, plane_wave_jastrow,
                                  two_body_jastrow)
from hpcvmc.registry import Component, register
from hpcvmc.systems.moire_lattice import potential_wave_vectors

HEAD_NOISE = 0.1
"""Standard deviation of a^k_j(h) - 1 at initialization (unit-variance LayerNorm output h)."""


def periodic_features(x: jax.Array, cell: np.ndarray, n_up: int, polarized: bool,
                      moire_harmonics: bool = False) -> jax.Array:
    """Per-electron input f_i = [sin 2 pi s_i, cos 2 pi s_i, (sin g_n . r_i, cos g_n . r_i),
    (sigma_i)], s_i = r_i L^{-1} (module doc).

    Args:
        x: positions, shape (batch, N, 2), in a_M.
        cell: supercell vectors, shape (2, 2), rows L_1, L_2, in a_M.
        n_up: electrons 0..n_up-1 are spin up (sigma = +1), the rest down (-1).
        polarized: leave the (constant) spin feature out.
        moire_harmonics: append sin and cos of g_n . r_i for the three moire wave vectors.

    Returns:
        Features, shape (batch, N, 4 + 6 moire_harmonics + (not polarized)).
    """
    angle = 2.0 * jnp.pi * (x @ jnp.asarray(np.linalg.inv(cell), dtype=x.dtype))
    features = [jnp.sin(angle), jnp.cos(angle)]
    if moire_harmonics:
        g_dot_r = x @ jnp.asarray(potential_wave_vectors(), dtype=x.dtype).T
        features += [jnp.sin(g_dot_r), jnp.cos(g_dot_r)]
    if not polarized:
        spin = np.where(np.arange(x.shape[1]) < n_up, 1.0, -1.0)
        features.append(jnp.broadcast_to(jnp.asarray(spin, x.dtype)[:, None], x.shape[:2] + (1,)))
    return jnp.concatenate(features, axis=-1)


def softmax(logits: jax.Array) -> jax.Array:
    """softmax over the last axis, exp(l_j - m) / sum_j exp(l_j - m), m = max_j l_j held fixed.

    Written out (instead of ``jax.nn.softmax``, a custom_jvp) so that the forward Laplacian
    traces it as plain elementwise operations; m cancels, so stopping its gradient is exact.
    """
    shifted = jnp.exp(logits - jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True)))
    return shifted / jnp.sum(shifted, axis=-1, keepdims=True)


class AttentionBlock(nn.Module):
    """One Psiformer block: post-LayerNorm multi-head self-attention and tanh MLP, residuals.

    Attributes:
        width: d.
        n_heads: H (d divisible by H).
        dtype: compute dtype.
    """

    width: int
    n_heads: int
    dtype: Any = jnp.float64

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        """h of shape (batch, N, d) -> (batch, N, d)."""
        batch, n, _ = h.shape
        d_k = self.width // self.n_heads

        def project(name: str) -> jax.Array:
            dense = nn.Dense(self.width, use_bias=False, dtype=self.dtype,
                             param_dtype=jnp.float64, name=name)
            return dense(h).reshape(batch, n, self.n_heads, d_k)

        q, k, v = project("query"), project("key"), project("value")
        weights = softmax(jnp.einsum("bihd,bjhd->bhij", q, k) / np.sqrt(d_k))
        mixed = jnp.einsum("bhij,bjhd->bihd", weights, v).reshape(batch, n, self.width)
        out = nn.Dense(self.width, dtype=self.dtype, param_dtype=jnp.float64, name="out")(mixed)
        h = nn.LayerNorm(dtype=self.dtype, param_dtype=jnp.float64, name="norm_attention")(h + out)
        mlp = jnp.tanh(nn.Dense(self.width, dtype=self.dtype, param_dtype=jnp.float64,
                                name="mlp")(h))
        return nn.LayerNorm(dtype=self.dtype, param_dtype=jnp.float64, name="norm_mlp")(h + mlp)


class Psiformer(nn.Module):
    """Self-attention orbitals, sum of block-diagonal determinants, optional Jastrow (module doc).

    Attributes:
        cell: supercell vectors, shape (2, 2), rows L_1, L_2, in a_M.
        n_up: spin-up electrons (electrons 0..n_up-1).
        n_down: spin-down electrons (0 when spin-polarized).
        n_layers: attention blocks.
        n_heads: heads H per block.
        width: d (divisible by H).
        n_determinants: K.
        envelope: initial plane-wave envelope coefficients (``Orbitals``), or None for chi = 1.
        jastrow: include the two-body Jastrow of slater.py.
        jastrow_shells: shells S of the plane-wave Jastrow term of slater.py (0: none).
        moire_harmonics: add the moire-scale input features (``features = "moire"``).
        head_noise: standard deviation of a^k_j(h) - 1 at initialization.
        U: Coulomb strength a_M / a_B* (fixes the Jastrow cusps).
        dtype: compute dtype of the network (parameters are float64).
    """

    cell: np.ndarray
    n_up: int
    n_down: int
    n_layers: int = 2
    n_heads: int = 4
    width: int = 32
    n_determinants: int = 1
    envelope: Orbitals | None = None
    jastrow: bool = True
    jastrow_shells: int = 0
    moire_harmonics: bool = False
    head_noise: float = HEAD_NOISE
    U: float = 0.0
    dtype: Any = jnp.float64

    def _head(self, h: jax.Array, n_orb: int, name: str) -> jax.Array:
        """a^k_j(h_i) complex, shape (batch, n, K, n_orb), starting at 1 + O(head_noise)."""
        kernel = nn.initializers.normal(self.head_noise / np.sqrt(self.width))
        parts = [nn.Dense(self.n_determinants * n_orb, dtype=self.dtype, param_dtype=jnp.float64,
                          kernel_init=kernel, bias_init=bias, name=f"{name}_{part}")(h)
                 for part, bias in (("re", nn.initializers.ones), ("im", nn.initializers.zeros))]
        a = jax.lax.complex(*parts)
        return a.reshape(h.shape[:2] + (self.n_determinants, n_orb))

    def _envelope(self, x: jax.Array, spin: str, n_orb: int) -> jax.Array:
        """chi^k_j(r_i) = sum_Q C^k[Q, j] exp(i Q . r_i), shape (batch, n, K, n_orb)."""
        Q = jnp.asarray(self.envelope.Q, dtype=x.dtype)
        shape = (self.n_determinants, len(self.envelope.Q), n_orb)

        C = jax.lax.complex(
            self.param(f"{spin}_envelope_re", self.envelope.initializer(spin, "real"), shape),
            self.param(f"{spin}_envelope_im", self.envelope.initializer(spin, "imag"), shape))
        plane_waves = jnp.exp(1j * (x @ Q.T))  # (batch, n, n_Q)
        return jnp.einsum("bnq,kqj->bnkj", plane_waves, C.astype(plane_waves.dtype))

    def _log_dets(self, x: jax.Array, h: jax.Array, spin: str, n_orb: int) -> jax.Array:
        """log det[phi^k_j(r_i)] of one spin channel (electrons of x, h), complex (batch, K)."""
        if n_orb == 0:
            return jnp.zeros(x.shape[:1] + (self.n_determinants,), jnp.complex128)
        orbitals = self._head(h, n_orb, spin)
        if self.envelope is not None:
            orbitals = orbitals * self._envelope(x, spin, n_orb)
        return log_det(jnp.moveaxis(orbitals, 2, 1)).astype(jnp.complex128)  # (batch, K)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """log psi of walkers x of shape (batch, N, 2) (Cartesian, a_M) -> complex128 (batch,)."""
        polarized = self.n_down == 0
        xc = x.astype(self.dtype)
        h = periodic_features(xc, self.cell, self.n_up, polarized, self.moire_harmonics)
        h = nn.Dense(self.width, dtype=self.dtype, param_dtype=jnp.float64, name="embed")(h)
        for layer in range(self.n_layers):
            h = AttentionBlock(self.width, self.n_heads, self.dtype, name=f"block_{layer}")(h)
        up, down = slice(0, self.n_up), slice(self.n_up, None)
        log_dets = (self._log_dets(xc[:, up], h[:, up], "up", self.n_up)
                    + self._log_dets(xc[:, down], h[:, down], "down", self.n_down))
        log_psi = log_sum_exp(log_dets)
        if self.jastrow:
            log_psi = log_psi + two_body_jastrow(self, x, self.n_up, self.cell, self.U)
        if self.jastrow_shells:
            log_psi = log_psi + plane_wave_jastrow(self, x, self.n_up, self.cell,
                                                   self.jastrow_shells)
        return log_psi


def from_config(cfg: Any, system: Any) -> Psiformer:
    """Build the model from a validated ``[model] type = "psiformer"`` section and a system."""
    params = system.params
    envelope = None
    if cfg.envelope == "plane_waves":
        envelope = initial_orbitals(params, cfg.g_max, cfg.init)
    return Psiformer(cell=params.cell, n_up=system.n_up, n_down=system.n_electrons - system.n_up,
                     n_layers=cfg.n_layers, n_heads=cfg.n_heads, width=cfg.width,
                     n_determinants=cfg.n_determinants, envelope=envelope, jastrow=cfg.jastrow,
                     jastrow_shells=cfg.jastrow_shells,
                     moire_harmonics=cfg.features == "moire", head_noise=cfg.head_noise,
                     U=params.U, dtype=jnp.dtype(cfg.dtype))


@dataclass(frozen=True, kw_only=True)
class PsiformerConfig:
    """Psiformer: self-attention orbitals over periodic electron features, determinants (moire).

    phi^k_j(r_i; {r}) = a^k_j(h_i) chi^k_j(r_i), h from self-attention blocks over
    [sin 2 pi s, cos 2 pi s, spin], chi a plane-wave envelope; psi = exp(J) sum_k det[phi^k]
    (hpcvmc/models/psiformer.py).
    """

    type: str = option("psiformer", "Model type.")
    n_layers: int = option(2, "Self-attention blocks (published: 4).", positive=True)
    n_heads: int = option(4, "Attention heads H per block (published: 4).", positive=True)
    width: int = option(
        32, "Width d of the electron stream; head dimension d/H (published: 64).", positive=True
    )
    n_determinants: int = option(1, "Number of determinants K (published: 4).", positive=True)
    envelope: str = option(
        "plane_waves", "Orbital envelope: learnable supercell plane-wave orbitals (norm of Q at "
        "most g_max times that of g_1) multiplying the network output, or none (the published "
        "network).",
        choices=("plane_waves", "none"),
    )
    g_max: float = option(
        1.0, "Plane-wave cut-off of the envelope in units of the norm of g_1 (4 pi/sqrt3 per a_M).",
        positive=True,
    )
    init: str = option(
        "bands", "Initial envelope: lowest non-interacting orbitals or the lowest spin-polarized "
        "Hartree-Fock state (basis cut-off q_max = g_max).",
        choices=("bands", "hf"),
    )
    jastrow: bool = option(
        True, "Two-body Jastrow u(d) = c d/(1 + b d) with the 2D cusps (as model.type = 'slater').",
    )
    jastrow_shells: int = option(0, JASTROW_SHELLS_DOC, minimum=0, hashed_when_set=True)
    head_noise: float = option(
        HEAD_NOISE, "Standard deviation of the orbital head's factor a(h) - 1 at initialization: "
        "small starts at the HF (or band) determinant with the attention nearly switched off.",
        minimum=0.0, hashed_when_set=True,
    )
    features: str = option(
        "supercell", "Electron input: sin and cos of 2 pi times the fractional supercell "
        "coordinates (the published network), or those plus sin and cos of g_n . r for the three "
        "moire wave vectors (moire-scale positions).",
        choices=("supercell", "moire"), hashed_when_set=True,
    )
    dtype: str = option(
        "float64", "Compute precision of the network (parameters, optimizer state, energies and "
        "the update stay float64).", choices=DTYPES,
    )

    requires: ClassVar[frozenset[str]] = frozenset({"moire"})

    def validate(self, cfg: Any) -> None:
        """Cross-key checks: d divisible by H, hf needs envelope and polarization, enough plane
        waves in the envelope."""
        if self.envelope == "plane_waves":
            check_plane_wave_basis(cfg.system, self.g_max)
        if self.width % self.n_heads:
            raise InputError(
                f"model.width = {self.width} is not divisible by model.n_heads = {self.n_heads}"
            )
        if self.init == "hf" and self.envelope != "plane_waves":
            raise InputError("model.init = 'hf' needs model.envelope = 'plane_waves' "
                             "(the Hartree-Fock orbitals live in the envelope)")
        if self.init == "hf" and not cfg.system.spin_polarized:
            raise InputError("model.init = 'hf' needs system.spin_polarized = true "
                             "(the Hartree-Fock reference is spin-polarized only)")
        check_jastrow_shells(self.jastrow, self.jastrow_shells)


register(Component("model", "psiformer", PsiformerConfig, from_config))
