"""Tests of the attention analysis: input dependence D, displacement maps, PNG writer."""

import jax

jax.config.update("jax_enable_x64", True)

import json  # noqa: E402

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from hpcvmc.analysis.attention import (  # noqa: E402
    attention_summary,
    displacement_average,
    plot_attention,
    to_jsonable,
)
from hpcvmc.models.vit import ViT  # noqa: E402

L, PATCH, N_SIDE = 6, 2, 3


def make_model(attention: str) -> ViT:
    """Two-layer, two-head ViT on 6 x 6 with full symmetrization (ignored by the analysis)."""
    return ViT(
        L=L, d_model=8, n_heads=2, n_layers=2, attention=attention, symmetrize="full"
    )


def random_params(model: ViT, seed: int) -> dict:
    """Initialized parameters perturbed by N(0, 0.5^2) (makes the positional bias non-zero)."""
    params = model.init(jax.random.PRNGKey(seed), jnp.ones(L * L))["params"]
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
    noisy = [leaf + 0.5 * jax.random.normal(k, leaf.shape) for leaf, k in zip(leaves, keys)]
    return jax.tree_util.tree_unflatten(treedef, noisy)


def configs(n: int, seed: int = 0) -> np.ndarray:
    """n random configurations (n, L*L) with entries +-1."""
    return np.random.default_rng(seed).choice([-1.0, 1.0], size=(n, L * L))


def test_factored_attention_is_input_independent() -> None:
    model = make_model("factored")
    params = random_params(model, seed=0)
    summary = attention_summary(model, params, configs(7))
    assert summary["D"].shape == (2, 2)
    np.testing.assert_array_equal(summary["D"], 0.0)
    np.testing.assert_array_equal(summary["spread_map"], 0.0)
    for layer in range(2):
        a = np.asarray(params[f"blocks_{layer}"]["attention"]["alpha"])  # a[k, R_i - R_j]
        minus = (-np.arange(N_SIDE)) % N_SIDE  # map[delta] = a[-delta], delta = r_j - r_i
        expected = a[:, minus][:, :, minus]
        np.testing.assert_allclose(summary["mean_map"][layer], expected, rtol=1e-13)
        assert np.max(np.abs(summary["mean_map"][layer] - a)) > 1e-3  # convention matters


def test_standard_attention_depends_on_input() -> None:
    model = make_model("standard")
    summary = attention_summary(model, random_params(model, seed=1), configs(7))
    assert np.all(summary["D"] > 1e-3)
    assert np.all(summary["spread_map"] > 0)
    # softmax rows sum to 1, so the displacement map of each head sums to 1 as well
    np.testing.assert_allclose(summary["mean_map"].sum(axis=(-2, -1)), 1.0, rtol=1e-12)


def test_displacement_average_of_a_shift_matrix() -> None:
    # matrix[i, j] = 1 where r_j = r_i + (1, 2) mod 3: all the weight at that displacement
    rows, cols = np.divmod(np.arange(9), 3)
    target = ((rows + 1) % 3) * 3 + (cols + 2) % 3
    matrix = np.zeros((9, 9))
    matrix[np.arange(9), target] = 1.0
    expected = np.zeros((3, 3))
    expected[1, 2] = 1.0
    np.testing.assert_array_equal(displacement_average(matrix, 3), expected)


def test_plot_and_json(tmp_path) -> None:
    model = make_model("standard")
    summary = attention_summary(model, random_params(model, seed=2), configs(4))
    text = json.dumps(to_jsonable(summary))
    assert json.loads(text)["D"] == summary["D"].tolist()
    path = tmp_path / "attention.png"
    plot_attention(json.loads(text), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
