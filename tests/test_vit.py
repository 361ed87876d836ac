"""Tests of the ViT wave function: symmetries, gradients, float32, sector vs ED, parameter count."""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import netket as nk  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import scipy.sparse.linalg  # noqa: E402

from hpcvmc.models.vit import (  # noqa: E402
    ViT,
    count_params,
    log_cosh,
    symmetry_operations,
    validate_vit,
)

L, PATCH = 6, 2  # 3 x 3 patches: displacements r and -r differ


def make_model(attention: str, symmetrize: str = "none", dtype: str = "float64") -> ViT:
    """A small ViT on the 6 x 6 lattice."""
    return ViT(
        L=L,
        d_model=8,
        n_heads=2,
        n_layers=2,
        attention=attention,
        patch=PATCH,
        symmetrize=symmetrize,
        dtype=dtype,
    )


def random_params(model: ViT, seed: int = 0) -> dict:
    """Initialized parameters with every entry perturbed by N(0, 0.5^2) (no special values)."""
    params = model.init(jax.random.PRNGKey(seed), jnp.ones(L * L))["params"]
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
    noisy = [leaf + 0.5 * jax.random.normal(k, leaf.shape) for leaf, k in zip(leaves, keys)]
    return jax.tree_util.tree_unflatten(treedef, noisy)


def random_configs(n: int, seed: int = 0, side: int = L) -> np.ndarray:
    """n random Sz = 0 configurations, shape (n, side^2), entries +-1."""
    rng = np.random.default_rng(seed)
    base = np.repeat([1.0, -1.0], side * side // 2)
    return np.stack([rng.permutation(base) for _ in range(n)])


def assert_same_log_psi(a: np.ndarray, b: np.ndarray, atol: float) -> None:
    """log psi equal in real part and in phase modulo 2 pi."""
    a, b = np.asarray(a), np.asarray(b)
    np.testing.assert_allclose(a.real, b.real, rtol=0, atol=atol)
    np.testing.assert_allclose(np.angle(np.exp(1j * (a.imag - b.imag))), 0.0, rtol=0, atol=atol)


def on_grid(x: np.ndarray, op) -> np.ndarray:
    """Applies a function of the (L, L) spin grid to each configuration of x (n, L*L)."""
    return np.stack([np.ascontiguousarray(op(c.reshape(L, L))).reshape(-1) for c in x])


POINT_GROUP = [
    lambda g, k=k, t=t: np.rot90(g.T if t else g, k) for k in range(4) for t in (False, True)
]


@pytest.mark.parametrize("attention", ["factored", "standard"])
def test_patch_translation_invariance(attention: str) -> None:
    model = make_model(attention)
    params = random_params(model)
    apply = jax.jit(model.apply)
    x = random_configs(8)
    log_psi = apply({"params": params}, x)
    for shift in [(PATCH, 0), (0, PATCH), (PATCH, -2 * PATCH)]:
        moved = on_grid(x, lambda g: np.roll(g, shift, axis=(0, 1)))
        assert_same_log_psi(apply({"params": params}, moved), log_psi, atol=1e-12)
    one_site = on_grid(x, lambda g: np.roll(g, 1, axis=1))
    assert np.max(np.abs(apply({"params": params}, one_site) - log_psi)) > 1e-4


@pytest.mark.parametrize("attention", ["factored", "standard"])
def test_full_symmetrization_invariance(attention: str) -> None:
    model = make_model(attention, "full")
    params = random_params(model, seed=3)
    apply = jax.jit(model.apply)
    x = random_configs(4, seed=1)
    log_psi = apply({"params": params}, x)
    ops = [lambda g: np.roll(g, 1, axis=0), lambda g: np.roll(g, 1, axis=1), *POINT_GROUP]
    for op in ops:
        assert_same_log_psi(apply({"params": params}, on_grid(x, op)), log_psi, atol=1e-12)
    assert_same_log_psi(apply({"params": params}, -x), log_psi, atol=1e-12)


def test_translations_symmetrization_invariance() -> None:
    model = make_model("standard", "translations")
    params = random_params(model, seed=4)
    apply = jax.jit(model.apply)
    x = random_configs(4, seed=2)
    log_psi = apply({"params": params}, x)
    for shift in [(1, 0), (0, 1), (3, 5)]:
        moved = on_grid(x, lambda g: np.roll(g, shift, axis=(0, 1)))
        assert_same_log_psi(apply({"params": params}, moved), log_psi, atol=1e-12)


@pytest.mark.parametrize(("attention", "symmetrize"), [("factored", "full"), ("standard", "none")])
def test_gradient_matches_finite_differences(attention: str, symmetrize: str) -> None:
    model = make_model(attention, symmetrize)
    params = random_params(model, seed=5)
    x = random_configs(3, seed=5)

    @jax.jit
    def f(p: dict) -> jax.Array:
        """Real and imaginary parts of log psi, shape (2, n_configs)."""
        log_psi = model.apply({"params": p}, x)
        return jnp.stack([log_psi.real, log_psi.imag])

    jac = jax.jit(jax.jacrev(f))(params)
    rng = np.random.default_rng(0)
    eps = 1e-5
    for _ in range(3):
        direction = jax.tree_util.tree_map(lambda p: rng.standard_normal(p.shape), params)
        analytic = sum(
            jnp.tensordot(j, v, axes=v.ndim)
            for j, v in zip(jax.tree_util.tree_leaves(jac), jax.tree_util.tree_leaves(direction))
        )
        plus, minus = (
            jax.tree_util.tree_map(lambda p, v, s=s: p + s * eps * v, params, direction)
            for s in (1, -1)
        )
        numeric = (f(plus) - f(minus)) / (2 * eps)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("attention", ["factored", "standard"])
def test_float32_agrees_with_float64(attention: str) -> None:
    model64 = make_model(attention, "translations")
    model32 = make_model(attention, "translations", dtype="float32")
    params = random_params(model64, seed=6)
    params32 = jax.tree_util.tree_map(lambda p: p.astype(jnp.float32), params)
    x = random_configs(6, seed=6)
    log_psi32 = jax.jit(model32.apply)({"params": params32}, x)
    assert log_psi32.dtype == jnp.complex128
    assert_same_log_psi(log_psi32, jax.jit(model64.apply)({"params": params}, x), atol=1e-4)


def test_batch_shapes_and_seeded_init() -> None:
    model = make_model("factored")
    x = random_configs(6, seed=7)
    params = model.init(jax.random.PRNGKey(11), x)
    again = model.init(jax.random.PRNGKey(11), x[0])
    jax.tree_util.tree_map(np.testing.assert_array_equal, params, again)
    log_psi = model.apply(params, x)
    assert log_psi.shape == (6,) and log_psi.dtype == jnp.complex128
    assert model.apply(params, x.reshape(2, 3, L * L)).shape == (2, 3)
    np.testing.assert_allclose(model.apply(params, x[0]), log_psi[0], rtol=1e-14)
    # a fresh model is close to the uniform state
    assert np.max(np.abs(log_psi.real)) < 0.1 and np.max(np.abs(log_psi.imag)) < 1.0


def test_fresh_standard_attention_on_single_sites_is_not_uniform() -> None:
    """With single-site tokens and a zero positional bias a fresh standard-attention ViT depends
    on the configuration only through the magnetization (constant on Sz = 0 to rounding); the
    random initial bias must break that, as a random a does for factored attention."""
    model = ViT(L=4, d_model=16, n_heads=4, n_layers=2, attention="standard", patch=1)
    x = random_configs(6, side=4)
    params = model.init(jax.random.PRNGKey(0), jnp.asarray(x))
    spread = np.ptp(np.asarray(model.apply(params, x)).real)
    zero_bias = jax.tree_util.tree_map_with_path(
        lambda path, v: jnp.zeros_like(v) if "pos_bias" in jax.tree_util.keystr(path) else v,
        params)
    assert np.ptp(np.asarray(model.apply(zero_bias, x)).real) < 1e-12 < 1e-6 < spread


def test_attention_weights_are_sown() -> None:
    model = make_model("standard", "full")
    params = random_params(model)
    apply = jax.jit(lambda p, x: model.apply({"params": p}, x, mutable=["intermediates"]))
    _, state = apply(params, random_configs(3))
    weights = state["intermediates"]["blocks_1"]["attention"]["attention_weights"][0]
    assert weights.shape == (3 * 16 * PATCH**2, 2, 9, 9)
    np.testing.assert_allclose(weights.sum(axis=-1), 1.0, rtol=1e-12)


def test_log_cosh_is_stable() -> None:
    w = np.array([0.3 + 0.2j, -1.7 + 2.5j, 4.0 - 10.0j, -0.1 - 0.7j])
    np.testing.assert_allclose(np.exp(log_cosh(jnp.asarray(w))), np.cosh(w), rtol=1e-13)
    big = jnp.asarray([1000.0 + 0.3j, -1000.0 - 0.3j])
    np.testing.assert_allclose(log_cosh(big), [1000 - np.log(2) + 0.3j] * 2, rtol=1e-15)


def test_symmetry_operations_are_distinct_permutations() -> None:
    perms, signs = symmetry_operations(L, PATCH, "full")
    assert perms.shape == (2 * 8 * PATCH**2, L * L) and signs.shape == (2 * 8 * PATCH**2,)
    assert np.all(np.sort(perms, axis=1) == np.arange(L * L))
    assert len({(s, *p) for s, p in zip(signs, perms)}) == len(signs)


@pytest.mark.parametrize(
    ("key", "kwargs"),
    [
        ("model.d_model = 10 is not divisible by model.n_heads = 4", dict(d_model=10)),
        ("system.L = 5 is not divisible by model.patch = 2", dict(L=5)),
        ("model.attention = 'linear'", dict(attention="linear")),
        ("model.symmetrize = 'c4'", dict(symmetrize="c4")),
        ("model.dtype = 'float16'", dict(dtype="float16")),
        ("model.n_layers = 0", dict(n_layers=0)),
    ],
)
def test_validate_vit_names_the_key(key: str, kwargs: dict) -> None:
    config = dict(L=4, patch=2, d_model=8, n_heads=4, n_layers=1) | kwargs
    with pytest.raises(ValueError, match=key.replace("(", r"\(")):
        validate_vit(**config)


def test_count_params_by_hand() -> None:
    # L = 4, b = 2 (n = 2, 4 tokens), d = 8, h = 2, one block, MLP width 32.
    embed = 4 * 8 + 8
    norms = 2 * (8 + 8)
    dense_dd = 8 * 8 + 8
    mlp = (8 * 32 + 32) + (32 * 8 + 8)
    head = (8 + 8) + 2 * (dense_dd + 8 + 8)
    factored = embed + norms + 2 * 2 * 2 + 2 * dense_dd + mlp + head  # a, value, out
    standard = factored + 2 * dense_dd  # + query, key (the bias replaces a)
    assert (factored, standard) == (968, 1112)
    for attention, expected in (("factored", factored), ("standard", standard)):
        model = ViT(L=4, d_model=8, n_heads=2, n_layers=1, attention=attention)
        shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.ones(16))
        assert count_params(shapes) == expected


def test_ground_state_is_in_projected_sector() -> None:
    """The 4 x 4 J1-J2 ground state at J2 = 0.5 has character +1 under the "full" projection.

    NetKet: local state +1 is spin up (sigma^z = +1), site i = row * 4 + col, Pauli matrices
    (energies 4x those of S = sigma / 2). Checked both without and with the Marshall sign rule.
    """
    side = 4
    hilbert = nk.hilbert.Spin(0.5, N=side * side, total_sz=0)
    graph = nk.graph.Square(side, max_neighbor_order=2)
    np.testing.assert_array_equal(graph.positions, np.stack(np.divmod(np.arange(16), side), 1))
    states = np.asarray(hilbert.all_states(), dtype=float)
    perms, signs = symmetry_operations(side, 2, "full")
    translations = [np.roll(np.arange(16).reshape(side, side), 1, axis=a).ravel() for a in (0, 1)]
    ops = list(zip(perms, signs)) + [(t, 1.0) for t in translations]
    for sign_rule in (False, True):
        ham = nk.operator.Heisenberg(hilbert, graph, J=[1.0, 0.5], sign_rule=[sign_rule, False])
        energies, vectors = scipy.sparse.linalg.eigsh(ham.to_sparse(), k=2, which="SA")
        np.testing.assert_allclose(energies[0], 4 * -8.4579234, rtol=1e-7)
        assert energies[1] - energies[0] > 0.1  # non-degenerate
        psi = vectors[:, 0] * np.sign(vectors[np.argmax(np.abs(vectors[:, 0])), 0])
        for perm, sign in ops:
            image = hilbert.states_to_numbers(sign * states[:, perm])
            np.testing.assert_allclose(psi[image], psi, rtol=0, atol=1e-10)
