"""Attention maps of a ViT wave function and how much they depend on the input.

Rende & Viteritti, "Are queries and keys always relevant?", MLST 6, 010501 (2025): if the
trained standard-attention weights alpha_ij(sigma) hardly depend on the configuration sigma,
factored (input-independent) attention loses nothing. For each layer and head we measure

    D = mean_ij std_s alpha_ij(sigma_s) / mean_ij |mean_s alpha_ij(sigma_s)|

over a batch of samples sigma_s (D = 0 exactly for factored attention), and average the maps
over token pairs with the same patch displacement ``delta = (r_j - r_i) mod n`` (the offset of
the attended token j from the attending token i; n = L / b patches per side).

The attention weights are those of the bare network (``symmetrize="none"``, same parameters)
on the given configurations. Memory: ``8 n_layers n_samples h T^2`` bytes for T = n^2 tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from hpcvmc.models.vit import ViT


def collect_attention(model: ViT, params: Any, x: np.ndarray) -> np.ndarray:
    """Attention weights of every layer and head on a batch of configurations.

    Args:
        model: the ViT (its ``symmetrize`` setting is ignored: the bare network is used).
        params: its parameters (the ``"params"`` collection).
        x: configurations, shape (n_samples, L*L), entries +-1.

    Returns:
        ``alpha[l, s, k, i, j]`` of shape (n_layers, n_samples, h, T, T).
    """
    bare = model.clone(symmetrize="none")
    _, state = bare.apply({"params": params}, x, mutable=["intermediates"])
    blocks = state["intermediates"]
    return np.stack(
        [
            np.asarray(blocks[f"blocks_{layer}"]["attention"]["attention_weights"][0])
            for layer in range(model.n_layers)
        ]
    )


def sample_spread(weights: np.ndarray) -> np.ndarray:
    """Standard deviation over samples, ``std_s alpha_ij(sigma_s)``.

    Computed after subtracting the first sample (std is shift invariant), so that weights that
    do not depend on the sample give exactly 0.

    Args:
        weights: shape (n_layers, n_samples, h, T, T).

    Returns:
        Shape (n_layers, h, T, T).
    """
    return np.std(weights - weights[:, :1], axis=1)


def input_dependence(weights: np.ndarray) -> np.ndarray:
    """``D = mean_ij std_s alpha_ij / mean_ij |mean_s alpha_ij|`` per layer and head.

    Args:
        weights: shape (n_layers, n_samples, h, T, T).

    Returns:
        D, shape (n_layers, h).
    """
    spread = sample_spread(weights).mean(axis=(-2, -1))
    return spread / np.abs(weights.mean(axis=1)).mean(axis=(-2, -1))


def displacement_average(matrix: np.ndarray, n_side: int) -> np.ndarray:
    """Average of token-pair values over pairs with the same patch displacement.

    ``out[..., dR, dC] = (1/T) sum_i matrix[..., i, j(i)]`` with
    ``r_j = (r_i + (dR, dC)) mod n`` (every displacement occurs for exactly T pairs).

    Args:
        matrix: shape (..., T, T), T = n_side^2.
        n_side: patches per side n.

    Returns:
        Shape (..., n_side, n_side).
    """
    rows, cols = np.divmod(np.arange(n_side * n_side), n_side)  # of tokens and displacements
    partner = ((rows[:, None] + rows) % n_side) * n_side + (cols[:, None] + cols) % n_side
    pairs = matrix[..., np.arange(n_side * n_side)[:, None], partner]
    return pairs.mean(axis=-2).reshape(matrix.shape[:-2] + (n_side, n_side))


def attention_summary(model: ViT, params: Any, x: np.ndarray) -> dict[str, Any]:
    """Input dependence and displacement maps of every layer and head.

    Args:
        model: the ViT.
        params: its parameters (the ``"params"`` collection).
        x: configurations, shape (n_samples, L*L).

    Returns:
        Dict with ``attention``, ``L``, ``patch``, ``n_samples``, ``D`` (n_layers, h),
        ``mean_map`` (n_layers, h, n, n): ``mean_s alpha`` averaged per displacement
        ``(r_j - r_i) mod n``, and ``spread_map`` (n_layers, h, n, n): ``std_s alpha``
        averaged likewise.
    """
    weights = collect_attention(model, params, x)
    n_side = model.L // model.patch
    return {
        "attention": model.attention,
        "L": model.L,
        "patch": model.patch,
        "n_samples": int(weights.shape[1]),
        "D": input_dependence(weights),
        "mean_map": displacement_average(weights.mean(axis=1), n_side),
        "spread_map": displacement_average(sample_spread(weights), n_side),
    }


def to_jsonable(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary with numpy arrays turned into nested lists (for ``json.dump``)."""
    return {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in summary.items()}


def _show_map(figure: Figure, axis: Any, values: np.ndarray, title: str) -> None:
    """Draws an (n, n) displacement map with zero displacement at the centre, and a colorbar."""
    n = values.shape[0]
    low = -(n // 2)
    image = axis.imshow(
        np.fft.fftshift(values),
        origin="lower",
        extent=(low - 0.5, low + n - 0.5, low - 0.5, low + n - 0.5),
        cmap="viridis",
    )
    axis.set_title(title, fontsize=8)
    axis.set_xlabel("d col", fontsize=7)
    axis.set_ylabel("d row", fontsize=7)
    axis.tick_params(labelsize=6)
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04).ax.tick_params(labelsize=6)


def plot_attention(summary: dict[str, Any], path: str | Path) -> None:
    """Writes a PNG: per layer (rows) and head, the mean map and its spread side by side.

    Axes are the patch displacement ``(r_j - r_i)`` (row, column), zero at the centre; each
    title carries the layer, head and D.

    Args:
        summary: output of :func:`attention_summary` (arrays or lists).
        path: output file name.
    """
    mean_map, spread_map = np.asarray(summary["mean_map"]), np.asarray(summary["spread_map"])
    d_values = np.asarray(summary["D"])
    n_layers, n_heads = d_values.shape
    figure = Figure(figsize=(4.2 * n_heads, 2.0 * n_layers), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(n_layers, 2 * n_heads, squeeze=False)
    for layer in range(n_layers):
        for head in range(n_heads):
            label = f"L{layer} h{head} D={d_values[layer, head]:.3g}"
            _show_map(figure, axes[layer, 2 * head], mean_map[layer, head], f"{label}: mean")
            _show_map(figure, axes[layer, 2 * head + 1], spread_map[layer, head], "spread")
    figure.suptitle(
        f"{summary['attention']} attention, L = {summary['L']}, b = {summary['patch']}, "
        f"{summary['n_samples']} samples"
    )
    figure.savefig(path, dpi=100)
