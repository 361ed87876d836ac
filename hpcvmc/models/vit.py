"""Vision Transformer (ViT) wave function for spin 1/2 on the periodic L x L square lattice.

Viteritti, Rende & Becca, PRL 130, 236401 (2023); Rende & Viteritti, "Are queries and keys always
relevant?", Mach. Learn.: Sci. Technol. 6, 010501 (2025).

Input and output. A configuration is a float array ``x`` of shape ``(..., L*L)`` with entries
+-1 (+1 = spin up, sigma^z = +1, as in NetKet), site ``s = row * L + col``. The module returns
the complex ``log psi(x)`` of shape ``(...)`` (complex128). All parameters are real.

Precision (``dtype``). The parameters are always float64 (the master copy the optimizer
updates and the checkpoint holds). ``dtype`` is the compute dtype of the network: every layer
casts its float64 parameters and its input to ``dtype`` and computes in it, so with
``"float32"`` the forward pass and (by the transposed casts) the backward pass run in float32,
while the gradients with respect to the float64 parameters come back as float64. The output
head casts the complex pre-activations ``w`` up to float64 before ``sum_k log cosh(w_k)`` and
the log-mean-exp over the symmetry terms: ``|log psi|`` grows with d and the sums run over d
and |G| terms, so forming them in float64 keeps the absolute error of log psi, and hence of
the differences ``log psi(s') - log psi(s)`` in the local energy, at the float32 rounding of
the O(1) entries of w rather than of the total.

Architecture (b = ``patch``, n = L / b, T = n^2 tokens, d = ``d_model``, h = ``n_heads``):

1. Patches: token ``t = R * n + C`` holds the b*b spins of the patch in patch row R, column C,
   in row-major in-patch order; a Dense(b^2 -> d) embeds each token (shared by all tokens).
2. ``n_layers`` pre-LayerNorm encoder blocks: ``y <- y + Attn(LN(y))``,
   ``y <- y + MLP(LN(y))`` with ``MLP = Dense(m d) -> GELU -> Dense(d)``, m = ``mlp_factor``.
   - factored attention: ``out_i^k = sum_j alpha^k_{ij} V^k y_j`` with
     ``alpha^k_{ij} = a^k[(R_i - R_j) mod n, (C_i - C_j) mod n]``, a real array of shape
     (h, n, n) per layer: no queries, no keys, no softmax.
   - standard attention: ``alpha^k_{ij} = softmax_j(q^k_i . k^k_j / sqrt(d/h) + P^k[r_i - r_j])``
     with a learnable relative positional bias P of shape (h, n, n) per layer.
   Both concatenate the heads and apply an output projection Dense(d -> d).
3. Output head: ``z = LN(sum_t y_t)``, ``w = LN_re(Dense_re z) + i LN_im(Dense_im z)``,
   ``log psi = sum_k log cosh(w_k)``.

Both attention kinds are invariant under translations by patch vectors (the weights depend on
``r_i - r_j`` only and the output sums over tokens).

Deviations from the published model (the authors' public code: NetKet ViT tutorial and the
``nqs-models/j1j2_square_10x10_05`` checkpoint; GELU is flax's tanh approximation as there):

- The LayerNorm scales of the two output LayerNorms start at ``HEAD_SCALE_INIT = 0.1`` instead
  of 1. Because those LayerNorms fix ``sum_k (Re w_k)^2 = sum_k (Im w_k)^2 = d * scale^2``,
  ``Re log psi ~ (sum_k (Re w_k)^2 - (Im w_k)^2) / 2 + O(w^4) = O(scale^4)`` and
  ``Im log psi = O(scale^2 sqrt(d))``: a fresh model is close to the uniform state. With scale 1
  the fresh model has log psi of order d and occasional near-zeros of cosh.
- The positional bias P of standard attention starts from N(0, ``POSITION_BIAS_INIT^2``),
  not from zero. With P = 0 and single-site tokens (b = 1) a fresh standard-attention model
  depends on the configuration only through the magnetization: the logits q_i . k_j depend on
  the two spins alone, so every token sees the same spin-weighted average of the others, and the
  sum over tokens is a constant in the Sz = 0 sector. Such a run starts from the exactly uniform
  state (acceptance 1) and has to break the degeneracy through P first; a random P gives it
  position-dependent weights from the start, as the random a of factored attention does.
- The factored weights a start from N(0, 1/T) (variance chosen so that ``sum_j alpha_ij v_j``
  keeps unit variance); the published code draws them Glorot-uniform, of the same order.
- Standard attention with a relative positional bias inside the softmax is this project's
  choice; the published 10 x 10 checkpoint uses factored attention.

Symmetrization (``symmetrize``), computed in one batched forward pass over all group elements:

- ``"none"``: the bare network (symmetric under patch translations only). Cost 1.
- ``"translations"``: ``psi(x) = (1/b^2) sum_t psi_net(t x)`` over the b^2 translations
  inside a patch; with the patch translations this gives all L^2 translations. Cost b^2.
- ``"full"``: ``psi(x) = (1/|G|) sum_g psi_net(g x)`` with g = (translation inside a patch) x
  (one of the 8 point-group operations C4v about site 0) x (identity or spin flip x -> -x),
  |G| = 16 b^2 forward passes (64 for b = 2). Because ``psi_net`` is invariant under the patch
  translations (a normal subgroup of the space group), these g are one representative of each
  coset, and psi is invariant under the full space group x spin flip.

Both sums are evaluated as ``log psi = logsumexp_g(log psi_net(g x)) - log |G|``.

Symmetry sector. The projection keeps the trivial representation: character +1 for every
translation, every point-group operation and the spin flip, in the plain sigma^z basis (no
Marshall sign rule). The Marshall sign ``(-1)^{N_up(A)}`` of the J1-J2 ground state is itself
invariant under all these operations in the Sz = 0 sector for every even L (translations by one
site and the spin flip change it by ``(-1)^{L^2/2} = +1``; the point group about a site keeps
the sublattices), so the sector is the same with or without the sign rule. Checked by exact
diagonalization for L = 4 at J2 = 0.5, with and without the sign rule, in
``tests/test_vit.py`` (and once, outside the tests, at J2 = 0). At J2 = 0 it holds for every even L by Marshall's theorem (a unique
ground state, positive after the sign rule). For L = 6 and 10 at J2 = 0.5 it is not checked
here (6 x 6 ED places the ground state at zero momentum in the fully symmetric irrep:
Schulz, Ziman & Poilblanc 1996).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hpcvmc.config import DTYPES, InputError, option
from hpcvmc.registry import Component, register
from hpcvmc.systems.lattice import point_group, site_permutation

Array = jax.Array

ATTENTION_KINDS = ("factored", "standard")
SYMMETRIZE_MODES = ("none", "translations", "full")
PARAM_DTYPE = "float64"
"""dtype of every parameter, whatever the compute dtype."""
HEAD_SCALE_INIT = 0.1
"""Initial scale of the two output LayerNorms (see the module docstring)."""
POSITION_BIAS_INIT = 1.0
"""Standard deviation of the initial relative positional bias P of standard attention."""

_KERNEL_INIT = nn.initializers.xavier_uniform()
_LOG_2 = math.log(2.0)


def validate_vit(
    L: int,
    patch: int,
    d_model: int,
    n_heads: int,
    n_layers: int = 1,
    attention: str = "factored",
    mlp_factor: int = 4,
    symmetrize: str = "none",
    dtype: str = "float64",
) -> None:
    """Checks a ViT configuration.

    Args:
        L: linear lattice size (``system.L``).
        patch: patch side b (``model.patch``).
        d_model: embedding dimension d (``model.d_model``).
        n_heads: number of attention heads h (``model.n_heads``).
        n_layers: number of encoder blocks (``model.n_layers``).
        attention: ``"factored"`` or ``"standard"`` (``model.attention``).
        mlp_factor: MLP width over d (``model.mlp_factor``).
        symmetrize: ``"none"``, ``"translations"`` or ``"full"`` (``model.symmetrize``).
        dtype: compute dtype, ``"float64"`` or ``"float32"`` (``model.dtype``).

    Raises:
        ValueError: naming the offending key and what would fix it.
    """
    for key, value in (
        ("system.L", L),
        ("model.patch", patch),
        ("model.d_model", d_model),
        ("model.n_heads", n_heads),
        ("model.n_layers", n_layers),
        ("model.mlp_factor", mlp_factor),
    ):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{key} = {value!r} must be a positive integer")
    if L % patch:
        raise ValueError(f"system.L = {L} is not divisible by model.patch = {patch}")
    if d_model % n_heads:
        raise ValueError(
            f"model.d_model = {d_model} is not divisible by model.n_heads = {n_heads}"
        )
    for key, value, allowed in (
        ("model.attention", attention, ATTENTION_KINDS),
        ("model.symmetrize", symmetrize, SYMMETRIZE_MODES),
        ("model.dtype", dtype, DTYPES),
    ):
        if value not in allowed:
            raise ValueError(f"{key} = {value!r} is not one of {', '.join(map(repr, allowed))}")


def log_cosh(w: Array) -> Array:
    """Numerically stable ``log cosh`` of a complex argument.

    With ``u = sign(Re w) w`` (so ``Re u >= 0``; cosh is even):
    ``log cosh(w) = u + log(1 + exp(-2 u)) - log 2``, where ``|exp(-2u)| <= 1`` never
    overflows. The imaginary part is the phase modulo 2 pi; the derivative is ``tanh(w)``.

    Args:
        w: complex array of any shape.

    Returns:
        Complex array of the same shape.
    """
    u = jnp.where(w.real < 0, -w, w)
    return u + jnp.log1p(jnp.exp(-2 * u)) - _LOG_2


def relative_index(n: int) -> np.ndarray:
    """Index of the relative patch displacement of every token pair.

    ``index[i, j] = ((R_i - R_j) mod n) * n + (C_i - C_j) mod n`` for tokens
    ``i = R_i * n + C_i``.

    Args:
        n: number of patches per side, L / b.

    Returns:
        Integer array of shape (n^2, n^2) indexing a flattened (n, n) array.
    """
    rows, cols = np.divmod(np.arange(n * n), n)
    return ((rows[:, None] - rows[None, :]) % n) * n + (cols[:, None] - cols[None, :]) % n


def relative_matrix(a: Array) -> Array:
    """Expands per-displacement weights into token-pair weights.

    ``M^k_{ij} = a^k[(R_i - R_j) mod n, (C_i - C_j) mod n]``.

    Args:
        a: array of shape (h, n, n).

    Returns:
        Array of shape (h, n^2, n^2).
    """
    n_heads, n, _ = a.shape
    return a.reshape(n_heads, n * n)[:, relative_index(n)]


def extract_patches(x: Array, L: int, patch: int) -> Array:
    """Groups the spins of each b x b patch into one token.

    ``tokens[B, R * n + C, p * b + q] = x[B, (R b + p) * L + C b + q]``.

    Args:
        x: configurations, shape (batch, L*L).
        L: linear lattice size.
        patch: patch side b.

    Returns:
        Array of shape (batch, n^2, b^2) with n = L / b.
    """
    n = L // patch
    grid = x.reshape(x.shape[0], n, patch, n, patch)
    return grid.transpose(0, 1, 3, 2, 4).reshape(x.shape[0], n * n, patch * patch)


def symmetry_operations(L: int, patch: int, symmetrize: str) -> tuple[np.ndarray, np.ndarray]:
    """Group elements summed over by the symmetrization, as site permutations and spin signs.

    Element g acts as ``(g x)_s = sign_g * x[perm_g[s]]``. ``"none"``: the identity;
    ``"translations"``: the b^2 translations inside a patch; ``"full"``: those x the 8
    point-group operations about site 0 x {identity, spin flip}.

    Args:
        L: linear lattice size.
        patch: patch side b.
        symmetrize: one of ``SYMMETRIZE_MODES``.

    Returns:
        ``(perms, signs)`` of shapes (|G|, L*L) (integer) and (|G|,) (+-1).
    """
    shifts = [(0, 0)] if symmetrize == "none" else list(np.ndindex(patch, patch))
    matrices = point_group() if symmetrize == "full" else [np.eye(2, dtype=int)]
    flips = (1, -1) if symmetrize == "full" else (1,)
    perms = [site_permutation(L, m, t) for m in matrices for t in shifts]
    signs = np.repeat(np.array(flips), len(perms))
    return np.tile(np.array(perms), (len(flips), 1)), signs


def _log_mean_exp(z: Array, axis: int) -> Array:
    """``log((1/K) sum_k exp(z_k))`` of complex z along ``axis`` (K its length), stably.

    Args:
        z: complex array.
        axis: axis to reduce.

    Returns:
        Complex array with ``axis`` removed.
    """
    shift = jax.lax.stop_gradient(jnp.max(z.real, axis=axis, keepdims=True))
    return jnp.log(jnp.mean(jnp.exp(z - shift), axis=axis)) + jnp.squeeze(shift, axis)


def _split_heads(v: Array, n_heads: int) -> Array:
    """(batch, T, d) -> (batch, T, h, d/h)."""
    return v.reshape(v.shape[:-1] + (n_heads, v.shape[-1] // n_heads))


def _merge_heads(v: Array) -> Array:
    """(batch, T, h, d/h) -> (batch, T, d)."""
    return v.reshape(v.shape[:-2] + (v.shape[-2] * v.shape[-1],))


def _dense(features: int, dtype: str, name: str | None = None) -> nn.Dense:
    """Real Dense layer with Glorot-uniform kernel and zero bias: float64 parameters, computed
    in ``dtype``."""
    return nn.Dense(features, dtype=dtype, param_dtype=PARAM_DTYPE, kernel_init=_KERNEL_INIT,
                    name=name)


def _layer_norm(dtype: str, scale: float = 1.0, name: str | None = None) -> nn.LayerNorm:
    """LayerNorm over the last axis with learnable scale (initialized to ``scale``) and bias:
    float64 parameters, computed in ``dtype``."""
    return nn.LayerNorm(
        dtype=dtype,
        param_dtype=PARAM_DTYPE,
        use_fast_variance=False,
        scale_init=nn.initializers.constant(scale),
        name=name,
    )


class FactoredAttention(nn.Module):
    """Translation-invariant factored attention (no queries, keys or softmax).

    ``out_i = W_O concat_k sum_j a^k[(r_i - r_j) mod n] (W_V y_j)^k``.
    Sows ``attention_weights`` of shape (batch, h, T, T) (input independent, broadcast).
    """

    d_model: int
    """Embedding dimension d."""
    n_heads: int
    """Number of heads h (divides d)."""
    n_side: int
    """Patches per side n = L / b."""
    dtype: str = "float64"
    """Compute dtype (parameters are float64)."""

    @nn.compact
    def __call__(self, y: Array) -> Array:
        """Args: y: tokens (batch, T, d). Returns: (batch, T, d)."""
        a = self.param(
            "alpha",
            nn.initializers.normal(1.0 / self.n_side),
            (self.n_heads, self.n_side, self.n_side),
            PARAM_DTYPE,
        )
        alpha = relative_matrix(a.astype(self.dtype))
        batched = jnp.broadcast_to(alpha, (y.shape[0],) + alpha.shape)
        self.sow("intermediates", "attention_weights", batched)
        values = _split_heads(_dense(self.d_model, self.dtype, "value")(y), self.n_heads)
        mixed = jnp.einsum("kij,bjkc->bikc", alpha, values)
        return _dense(self.d_model, self.dtype, "out")(_merge_heads(mixed))


class StandardAttention(nn.Module):
    """Multi-head softmax attention with a translation-invariant relative positional bias.

    ``alpha^k_{ij} = softmax_j(q^k_i . k^k_j / sqrt(d/h) + P^k[(r_i - r_j) mod n])``,
    ``out_i = W_O concat_k sum_j alpha^k_{ij} v^k_j``. Sows ``attention_weights``
    (batch, h, T, T).
    """

    d_model: int
    """Embedding dimension d."""
    n_heads: int
    """Number of heads h (divides d)."""
    n_side: int
    """Patches per side n = L / b."""
    dtype: str = "float64"
    """Compute dtype (parameters are float64)."""

    @nn.compact
    def __call__(self, y: Array) -> Array:
        """Args: y: tokens (batch, T, d). Returns: (batch, T, d)."""
        q, k, v = (
            _split_heads(_dense(self.d_model, self.dtype, name)(y), self.n_heads)
            for name in ("query", "key", "value")
        )
        bias = self.param(
            "pos_bias",
            nn.initializers.normal(POSITION_BIAS_INIT),
            (self.n_heads, self.n_side, self.n_side),
            PARAM_DTYPE,
        )
        logits = jnp.einsum("bikc,bjkc->bkij", q, k) / math.sqrt(self.d_model // self.n_heads)
        alpha = jax.nn.softmax(logits + relative_matrix(bias.astype(self.dtype)), axis=-1)
        self.sow("intermediates", "attention_weights", alpha)
        mixed = jnp.einsum("bkij,bjkc->bikc", alpha, v)
        return _dense(self.d_model, self.dtype, "out")(_merge_heads(mixed))


_ATTENTION: dict[str, Callable[..., nn.Module]] = {
    "factored": FactoredAttention,
    "standard": StandardAttention,
}


class EncoderBlock(nn.Module):
    """Pre-LayerNorm encoder block.

    ``y <- y + Attn(LN(y))``; ``y <- y + Dense(d)(GELU(Dense(m d)(LN(y))))``.
    """

    d_model: int
    """Embedding dimension d."""
    n_heads: int
    """Number of heads h."""
    n_side: int
    """Patches per side n = L / b."""
    attention: str
    """``"factored"`` or ``"standard"``."""
    mlp_factor: int = 4
    """MLP hidden width over d."""
    dtype: str = "float64"
    """Compute dtype (parameters are float64)."""

    @nn.compact
    def __call__(self, y: Array) -> Array:
        """Args: y: tokens (batch, T, d). Returns: (batch, T, d)."""
        attention = _ATTENTION[self.attention](
            self.d_model, self.n_heads, self.n_side, self.dtype, name="attention"
        )
        y = y + attention(_layer_norm(self.dtype, name="norm_attention")(y))
        hidden = _dense(self.mlp_factor * self.d_model, self.dtype, "mlp_in")(
            _layer_norm(self.dtype, name="norm_mlp")(y)
        )
        return y + _dense(self.d_model, self.dtype, "mlp_out")(nn.gelu(hidden))


class OutputHead(nn.Module):
    """Output head: ``log psi = sum_k log cosh(w_k)``.

    ``z = LN(sum_t y_t)``, ``w = LN_re(Dense_re z) + i LN_im(Dense_im z)`` (real maps d -> d;
    the scales of LN_re and LN_im start at ``HEAD_SCALE_INIT``).
    """

    d_model: int
    """Embedding dimension d (also the number of log cosh terms)."""
    dtype: str = "float64"
    """Compute dtype (parameters are float64)."""

    @nn.compact
    def __call__(self, y: Array) -> Array:
        """Args: y: tokens (batch, T, d). Returns: complex128 log psi (batch,) (w and the sum
        over k in float64)."""
        z = _layer_norm(self.dtype, name="norm_pool")(jnp.sum(y, axis=1))
        re, im = (
            _layer_norm(self.dtype, HEAD_SCALE_INIT, f"norm_{part}")(
                _dense(self.d_model, self.dtype, f"dense_{part}")(z)
            )
            for part in ("re", "im")
        )
        w = jax.lax.complex(re.astype(jnp.float64), im.astype(jnp.float64))
        return jnp.sum(log_cosh(w), axis=-1)


class ViT(nn.Module):
    """Vision Transformer log wave function (see the module docstring).

    ``model.apply({"params": params}, x)`` maps x of shape (..., L*L), entries +-1, to complex
    log psi of shape (...); with ``mutable=["intermediates"]`` it also returns the attention
    weights of each block under ``intermediates/blocks_<l>/attention/attention_weights``, of
    shape (batch * |G|, h, T, T) with |G| the number of symmetrization terms.
    """

    L: int
    """Linear lattice size (L*L sites)."""
    d_model: int
    """Embedding dimension d (divisible by ``n_heads``)."""
    n_heads: int
    """Number of attention heads h."""
    n_layers: int
    """Number of encoder blocks."""
    attention: str
    """``"factored"`` or ``"standard"``."""
    patch: int = 2
    """Patch side b (divides L)."""
    mlp_factor: int = 4
    """MLP hidden width over d."""
    symmetrize: str = "none"
    """``"none"``, ``"translations"`` (inside a patch) or ``"full"`` (x C4v x spin flip)."""
    dtype: str = "float64"
    """Compute dtype, ``"float64"`` or ``"float32"`` (parameters are float64); the output is
    complex128."""

    @property
    def n_terms(self) -> int:
        """|G|: forward passes of the bare network per configuration (1, b^2 or 16 b^2)."""
        return len(symmetry_operations(self.L, self.patch, self.symmetrize)[0])

    def setup(self) -> None:
        validate_vit(
            self.L,
            self.patch,
            self.d_model,
            self.n_heads,
            self.n_layers,
            self.attention,
            self.mlp_factor,
            self.symmetrize,
            self.dtype,
        )
        self.embed = _dense(self.d_model, self.dtype)
        self.blocks = [
            EncoderBlock(
                self.d_model,
                self.n_heads,
                self.L // self.patch,
                self.attention,
                self.mlp_factor,
                self.dtype,
            )
            for _ in range(self.n_layers)
        ]
        self.head = OutputHead(self.d_model, self.dtype)

    def network(self, x: Array) -> Array:
        """The bare (unsymmetrized) network.

        Args:
            x: configurations (batch, L*L) in the compute dtype.

        Returns:
            Complex log psi_net, shape (batch,).
        """
        y = self.embed(extract_patches(x, self.L, self.patch))
        for block in self.blocks:
            y = block(y)
        return self.head(y)

    def __call__(self, x: Array) -> Array:
        """Complex log psi.

        Args:
            x: configurations (..., L*L), entries +-1.

        Returns:
            ``log psi(x)`` of shape (...), complex128:
            ``log[(1/|G|) sum_g psi_net(g x)]`` (``|G| = 1`` for ``symmetrize="none"``).
        """
        batch_shape = x.shape[:-1]
        x = jnp.asarray(x, self.dtype).reshape(-1, self.L * self.L)
        perms, signs = symmetry_operations(self.L, self.patch, self.symmetrize)
        if len(perms) == 1:
            log_psi = self.network(x)
        else:
            images = jnp.asarray(signs, self.dtype)[:, None] * x[:, perms]
            log_psi = self.network(images.reshape(-1, self.L * self.L))
            log_psi = _log_mean_exp(log_psi.reshape(x.shape[0], len(perms)), axis=1)
        return log_psi.astype(jnp.complex128).reshape(batch_shape)


def count_params(params: Any) -> int:
    """Total number of real parameters in a pytree (``params`` or ``{"params": params}``).

    For the ViT (m = ``mlp_factor``, n = L / b):
    ``P = (b^2 + 1) d + n_layers [(2 + 2m + 2s) d^2 + (7 + m + 2s) d + h n^2] + 2 d^2 + 8 d``
    with s = 0 for factored and s = 1 for standard attention (query and key maps).

    Args:
        params: pytree of arrays.

    Returns:
        Sum of the leaf sizes.
    """
    return int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(params)))


@dataclass(frozen=True, kw_only=True)
class ViTConfig:
    """Vision Transformer over b x b patches (Viteritti, Rende, Becca; Rende & Viteritti)."""

    type: str = option("vit", "Model type.")
    patch: int = option(2, "Patch side b: the lattice is cut into (L/b)^2 tokens.", positive=True)
    d_model: int = option(16, "Token dimension d.", positive=True)
    n_heads: int = option(4, "Attention heads h (d must be divisible by h).", positive=True)
    n_layers: int = option(2, "Encoder blocks.", positive=True)
    attention: str = option(
        "factored", "Attention kind: position-only weights or softmax(QK^T).",
        choices=ATTENTION_KINDS,
    )
    mlp_factor: int = option(4, "MLP hidden width in units of d.", positive=True)
    symmetrize: str = option(
        "none", "Projection onto lattice symmetries (costs one forward pass per group element: b^2 for translations, 16 b^2 for full).",
        choices=SYMMETRIZE_MODES,
    )
    dtype: str = option(
        "float64", "Compute precision of the network (parameters, optimizer state, energies and "
        "the update stay float64).", choices=DTYPES,
    )

    requires: ClassVar[frozenset[str]] = frozenset({"square_lattice"})

    @property
    def capabilities(self) -> frozenset[str]:
        """'space_group_invariant' when projected onto the whole space group x spin flip."""
        return frozenset({"space_group_invariant"} if self.symmetrize == "full" else ())

    def validate(self, cfg: Any) -> None:
        """Cross-key checks: d divisible by h, L divisible by b."""
        if self.d_model % self.n_heads:
            raise InputError(
                f"model.d_model = {self.d_model} is not divisible by model.n_heads = {self.n_heads}"
            )
        if cfg.system.L % self.patch:
            raise InputError(
                f"system.L = {cfg.system.L} is not divisible by model.patch = {self.patch}"
            )


def from_config(cfg: ViTConfig, system: Any) -> ViT:
    """Build the model from a validated ``[model] type = "vit"`` section and a square lattice."""
    return ViT(L=system.L, patch=cfg.patch, d_model=cfg.d_model, n_heads=cfg.n_heads,
               n_layers=cfg.n_layers, attention=cfg.attention, mlp_factor=cfg.mlp_factor,
               symmetrize=cfg.symmetrize, dtype=cfg.dtype)


register(Component("model", "vit", ViTConfig, from_config))
