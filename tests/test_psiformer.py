"""Psiformer: antisymmetry, periodicity, forward Laplacian against the Hessian, input checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hpcvmc import config as C
from hpcvmc.build import build
from hpcvmc.laplacian import METHODS
from hpcvmc.models import psiformer
from hpcvmc.parallel import SERIAL
from hpcvmc.systems import moire

N = 4
KEYS = {"n_layers": 2, "n_heads": 2, "width": 8, "n_determinants": 2, "g_max": 1.0}


def _model(polarized, **model_keys):
    system = moire.from_config(moire.MoireConfig(sites=3, n_electrons=N, spin_polarized=polarized))
    model = psiformer.from_config(psiformer.PsiformerConfig(**{**KEYS, **model_keys}), system)
    params = model.init(jax.random.PRNGKey(0), jnp.ones((1, N, 2)))["params"]
    return system, model, params


def _walkers(system, n, seed):
    frac = jax.random.uniform(jax.random.PRNGKey(seed), (n, N, 2))
    return frac @ jnp.asarray(system.cell)


def _phase_difference(a, b):
    """(a - b) imaginary part reduced to (-pi, pi]."""
    return np.angle(np.exp(1j * np.imag(a - b)))


@pytest.mark.parametrize("polarized", [True, False])
@pytest.mark.parametrize("envelope", ["plane_waves", "none"])
def test_swapping_equal_spins_flips_the_sign(polarized, envelope):
    system, model, params = _model(polarized, envelope=envelope)
    logpsi = jax.jit(lambda x: model.apply({"params": params}, x))
    x = _walkers(system, 5, seed=1)
    a = np.asarray(logpsi(x))
    n_up = system.n_up
    pairs = [(i, j) for i in range(N) for j in range(i + 1, N) if (i < n_up) == (j < n_up)]
    assert len(pairs) == (6 if polarized else 2)
    for i, j in pairs:
        b = np.asarray(logpsi(x.at[:, [i, j]].set(x[:, [j, i]])))
        np.testing.assert_allclose(b.real, a.real, rtol=1e-10)
        np.testing.assert_allclose(np.abs(_phase_difference(b, a)), np.pi, atol=1e-9)


@pytest.mark.parametrize("polarized,features", [(True, "supercell"), (False, "supercell"),
                                                (True, "moire")])
def test_supercell_translations_leave_psi_unchanged(polarized, features):
    """All electrons by one supercell vector, and single electrons by different ones."""
    system, model, params = _model(polarized, features=features)
    logpsi = jax.jit(lambda x: model.apply({"params": params}, x))
    x = _walkers(system, 5, seed=2)
    reference = np.asarray(logpsi(x))
    L1, L2 = (jnp.asarray(v) for v in system.cell)
    shifts = [jnp.broadcast_to(s, (N, 2)) for s in (L1, L2, 2 * L1 - 3 * L2)]
    shifts.append(jnp.stack([L1, -L2, L1 + L2, 0 * L1]))
    for shift in shifts:
        moved = np.asarray(logpsi(x + shift))
        np.testing.assert_allclose(moved.real, reference.real, rtol=1e-10)
        np.testing.assert_allclose(_phase_difference(moved, reference), 0.0, atol=1e-9)


def test_moire_features_are_the_potential_harmonics():
    """features = "moire": the last six inputs are sin and cos of g_n . r with the g_n of the
    potential written out (docs/physics.md), periodic under moire lattice vectors, while the
    supercell inputs are not (3-site cell, spin-polarized)."""
    system, _, _ = _model(True)
    x = _walkers(system, 3, seed=4)
    g_norm = 4 * np.pi / np.sqrt(3)
    g1 = g_norm * np.array([0.0, 1.0])
    g2 = g_norm * np.array([np.sqrt(3) / 2, -0.5])
    g = np.stack([g1, g2, -g1 - g2])
    f = np.asarray(psiformer.periodic_features(x, system.cell, N, True, moire_harmonics=True))
    assert f.shape == (3, N, 10)
    np.testing.assert_allclose(f[..., 4:7], np.sin(np.asarray(x) @ g.T), atol=1e-12)
    np.testing.assert_allclose(f[..., 7:], np.cos(np.asarray(x) @ g.T), atol=1e-12)
    a1 = jnp.array([1.0, 0.0])
    shifted = np.asarray(psiformer.periodic_features(x + a1, system.cell, N, True, True))
    np.testing.assert_allclose(shifted[..., 4:], f[..., 4:], atol=1e-12)
    assert np.max(np.abs(shifted[..., :4] - f[..., :4])) > 0.1


@pytest.mark.parametrize("polarized", [True, False])
def test_forward_laplacian_equals_hessian_trace(polarized):
    """Laplacian and gradient of log psi (complex) on random walkers, float64, to 1e-10."""
    system, model, params = _model(polarized, n_layers=1)

    def f(r):
        return model.apply({"params": params}, r[None])[0]

    x = _walkers(system, 2, seed=3)
    lap, grad = jax.jit(jax.vmap(lambda r: METHODS["forward"](f, r)))(x)
    lap_ref, grad_ref = jax.jit(jax.vmap(lambda r: METHODS["hessian"](f, r)))(x)
    np.testing.assert_allclose(lap, lap_ref, rtol=1e-10)
    np.testing.assert_allclose(grad, grad_ref, rtol=1e-10, atol=1e-12)


def test_local_energy_with_forward_and_loop_laplacians_agree():
    """The moire system's kinetic energy through the forward and the nested-jvp Laplacian."""
    system, model, params = _model(True, n_layers=1)
    x = _walkers(system, 2, seed=4)
    energies = []
    for method in ("forward", "loop"):
        s = moire.Moire(system.params, chunk_size=1, laplacian=method)
        energies.append(jax.jit(lambda p, r, s=s: s.local_energy(
            lambda q, y: model.apply({"params": q}, y), p, r))(params, x))
    np.testing.assert_allclose(energies[0], energies[1], rtol=1e-10)


def test_float32_model_is_close_to_float64():
    system, model, params = _model(True)
    model32 = psiformer.from_config(psiformer.PsiformerConfig(**KEYS, dtype="float32"), system)
    x = _walkers(system, 3, seed=5)
    a = model.apply({"params": params}, x)
    b = model32.apply({"params": params}, x)
    assert b.dtype == jnp.complex128
    np.testing.assert_allclose(b.real, a.real, rtol=1e-4, atol=1e-4)


def test_model_without_head_weights_is_the_hf_determinant():
    """head_noise = 0 gives head kernels W = 0 (a = 1): the model is the Slater determinant of its
    envelope; init = "hf" starts from the Hartree-Fock state times factors 1 + O(head_noise), the
    kernels' standard deviation head_noise / sqrt(width)."""
    from hpcvmc.models import slater

    system = moire.from_config(moire.MoireConfig(sites=3, n_electrons=3))
    keys = {"n_layers": 1, "width": 8, "n_heads": 2, "init": "hf", "jastrow": False}
    model = psiformer.from_config(psiformer.PsiformerConfig(**keys, head_noise=0.0), system)
    params = model.init(jax.random.PRNGKey(0), jnp.ones((1, 3, 2)))["params"]
    assert not any(np.any(params[part]["kernel"]) for part in ("up_re", "up_im"))
    wide = psiformer.from_config(psiformer.PsiformerConfig(**keys, head_noise=2.0), system)
    kernel = wide.init(jax.random.PRNGKey(0), jnp.ones((1, 3, 2)))["params"]["up_re"]["kernel"]
    assert 0.5 < np.std(kernel) / (2.0 / np.sqrt(8)) < 1.5
    ref = slater.Slater(orbitals=model.envelope, cell=system.cell)
    ref_params = ref.init(jax.random.PRNGKey(0), jnp.ones((1, 3, 2)))["params"]
    x = _walkers(system, 4, seed=6)[:, :3]
    a, b = model.apply({"params": params}, x), ref.apply({"params": ref_params}, x)
    np.testing.assert_allclose(a.real, b.real, rtol=1e-12)
    np.testing.assert_allclose(_phase_difference(a, b), 0.0, atol=1e-10)


BASE = """
[system]
type = "moire"
sites = 9
n_electrons = 6
[model]
type = "psiformer"
[sampler]
type = "gaussian"
n_chains = 8
n_samples = 16
[optimizer]
type = "minsr"
"""


@pytest.mark.parametrize("overrides,message", [
    (["model.width=30", "model.n_heads=4"],
     "model.width = 30 is not divisible by model.n_heads = 4"),
    (["model.init=hf", "model.envelope=none"], "model.init = 'hf' needs model.envelope"),
    (["model.init=hf", "system.spin_polarized=false"],
     "model.init = 'hf' needs system.spin_polarized"),
    (["model.dtype=float16"], "model.dtype = 'float16' is not one of"),
    (["model.n_layers=0"], "model.n_layers = 0 must be > 0"),
    (["system.laplacian=jet"], "system.laplacian = 'jet' is not one of"),
])
def test_invalid_inputs_name_the_key(overrides, message):
    with pytest.raises(C.InputError, match=message.replace("(", r"\(")):
        C.loads(BASE + "[run]\n", overrides)


def test_lattice_system_is_rejected_in_one_line():
    text = """
[system]
type = "j1j2"
L = 4
[model]
type = "psiformer"
[sampler]
type = "exchange"
n_chains = 8
n_samples = 16
[optimizer]
type = "minsr"
[run]
"""
    with pytest.raises(C.InputError) as info:
        C.loads(text)
    assert str(info.value) == ("model.type = 'psiformer' needs a system with 'moire' (system.type = "
                               "'j1j2' provides: 'enumerable', 'fixed_magnetization', "
                               "'spins', 'square_lattice')")


def test_builds_from_config_with_published_parameter_count():
    """The published size (4 layers, 4 heads, width 64, 4 determinants, N = 18; no envelope, no
    Jastrow) builds from the input and has the parameters counted layer by layer (93,136; the
    paper's 109,376 counts details its text does not fix)."""
    cfg = C.loads(BASE.replace("sites = 9\nn_electrons = 6", "sites = 27\nn_electrons = 18")
                  + "[run]\n", ["model.n_layers=4", "model.width=64", "model.n_determinants=4",
                                "model.envelope=none", "model.jastrow=false"])
    setup = build(cfg, SERIAL)
    params = setup.init_params()
    count = sum(leaf.size for leaf in jax.tree_util.tree_leaves(params))
    d, layers, k_orb = 64, 4, 4 * 18
    per_block = 3 * d * d + (d * d + d) + (d * d + d) + 4 * d
    assert count == (5 - 1) * d + d + layers * per_block + 2 * (d * k_orb + k_orb)
