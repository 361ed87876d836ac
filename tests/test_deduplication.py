"""Samples evaluated once per class (hpcvmc.deduplication): the classes against the numpy
enumeration of the symmetry orbits, and VMC steps that equal those evaluating every sample."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from hpcvmc import config as C
from hpcvmc.build import build
from hpcvmc.chunking import map_leading_chunks
from hpcvmc.deduplication import Deduplication
from hpcvmc.driver import fresh_state, make_step
from hpcvmc.fixed_sampling import sample_fixed
from hpcvmc.parallel import SERIAL
from hpcvmc.square_lattice import symmetry_orbits, sz0_configurations


def test_orbit_classes_of_the_4x4_sector_are_its_107_orbits():
    """Every Sz = 0 configuration of 4 x 4 classified: 107 classes whose multiplicities are the
    orbit sizes of the numpy enumeration, and every member of a class maps to the orbit's
    representative (its smallest code)."""
    states = sz0_configurations(16)
    classes = jax.jit(Deduplication.build("orbits", 16, 4).classes)(jnp.asarray(states))
    representatives, sizes = symmetry_orbits(4)
    count = int(classes.count)
    assert count == len(sizes) == 107
    multiplicity = np.asarray(classes.multiplicity)
    np.testing.assert_array_equal(multiplicity[:count], sizes)
    assert np.all(multiplicity[count:] == 0)
    first = np.asarray(classes.first)[:count]
    codes = Deduplication.build("orbits", 16, 4).codes(jnp.asarray(states[first]))
    expected = (representatives > 0) @ (2 ** np.arange(16))
    np.testing.assert_array_equal(np.asarray(codes), expected)
    # the inverse points every configuration at its own orbit
    inverse = np.asarray(classes.inverse)
    np.testing.assert_array_equal(np.bincount(inverse, minlength=len(states))[:count], sizes)


def test_configuration_classes_group_equal_rows_only():
    rng = np.random.default_rng(3)
    distinct = sz0_configurations(8)[rng.choice(70, 5, replace=False)]
    picks = rng.integers(0, 5, 40)
    classes = Deduplication.build("configurations", 8).classes(jnp.asarray(distinct[picks]))
    assert int(classes.count) == len(np.unique(picks))
    rows = distinct[picks][np.asarray(classes.first)[np.asarray(classes.inverse)]]
    np.testing.assert_array_equal(rows, distinct[picks])
    per_sample = np.asarray(classes.multiplicity)[np.asarray(classes.inverse)]
    np.testing.assert_array_equal(per_sample, np.bincount(picks)[picks])


@pytest.mark.parametrize("count", [0, 5, 16, 37, 40])
def test_map_leading_chunks_evaluates_the_leading_rows_only(count):
    """ceil(count / 16) chunks of 16 rows (the last one ending at row 40): those rows hold fn,
    the others 0."""
    x = jnp.arange(1.0, 1.0 + 40 * 3).reshape(40, 3)

    def fn(rows):
        return rows.sum(axis=1) ** 2

    out = np.asarray(jax.jit(lambda x, c: map_leading_chunks(fn, x, c, 16))(x, count))
    covered = min(-(-count // 16) * 16, 40)
    np.testing.assert_array_equal(out[:covered], np.asarray(fn(x))[:covered])
    np.testing.assert_array_equal(out[covered:], 0.0)


VIT = """
[system]
type = "j1j2"
L = 4
J2 = 0.5
[model]
type = "vit"
patch = 1
d_model = 4
n_heads = 1
n_layers = 1
symmetrize = "{symmetrize}"
[sampler]
type = "exchange"
n_chains = 8
n_samples = 128
burn_in = 10
deduplicate = "{mode}"
[optimizer]
type = "minsr"
learning_rate = 0.05
diag_shift = 1e-3
momentum = 0.9
clip_local_energy = {clip}
[run]
steps = 3
seed = 5
"""


def _steps(mode: str, symmetrize: str = "full", clip: float = 0.0, n_steps: int = 2):
    setup = build(C.loads(VIT.format(mode=mode, symmetrize=symmetrize, clip=clip)), SERIAL)
    state = fresh_state(setup)
    step = make_step(setup)
    params, opt, chains, rows = state.params, state.opt_state, state.chains, []
    for k in range(n_steps):
        out = step(params, opt, chains, jnp.asarray(k))
        params, opt, chains = out.params, out.opt_state, out.chains
        rows.append((complex(out.stats.mean), float(out.stats.error), float(out.stats.variance),
                     float(out.stats.tau), float(out.info["update_norm"])))
    return np.array(rows), np.asarray(ravel_pytree(params)[0]), setup, params, chains


@pytest.mark.parametrize("mode,symmetrize,clip", [
    ("orbits", "full", 0.0), ("configurations", "none", 5.0)])
def test_deduplicated_steps_equal_steps_over_every_sample(mode, symmetrize, clip):
    """Two SPRING steps (with local-energy clipping in the second case) from the same state and
    chains: energies, error bars, autocorrelation, update norms and parameters equal those of
    the steps that evaluate every sample, to rounding (the sums run in another order)."""
    rows, params, setup, _, chains = _steps(mode, symmetrize, clip)
    if mode == "orbits":  # the 128 samples fall into far fewer orbits
        batch, _ = setup.sampler.sample(setup.logpsi, setup.init_params(), chains,
                                        jnp.asarray(setup.chain_ids), 7)
        x = batch.x.reshape(-1, 16)
        assert int(setup.sampler.deduplication.classes(x).count) < 100
    rows_full, params_full, *_ = _steps("none", symmetrize, clip)
    np.testing.assert_allclose(rows, rows_full, rtol=1e-10)
    np.testing.assert_allclose(params, params_full, rtol=1e-9, atol=1e-12)


def test_deduplicated_measurement_equals_the_full_one():
    _, _, setup, params, chains = _steps("orbits", n_steps=1)
    grouped, _, _ = sample_fixed(setup, params, chains, 2)
    setup_full = build(C.loads(VIT.format(mode="none", symmetrize="full", clip=0.0)), SERIAL)
    full, _, _ = sample_fixed(setup_full, params, chains, 2)
    np.testing.assert_allclose(grouped, full, rtol=1e-12)


@pytest.mark.parametrize("changes,message", [
    ({'symmetrize = "{symmetrize}"': 'symmetrize = "translations"'},
     "sampler.deduplicate = 'orbits' needs a wave function invariant"),
    ({"L = 4": "L = 8"}, "sampler.deduplicate = 'orbits' codes at most 62 sites"),
])
def test_deduplication_that_does_not_fit_is_refused(changes, message):
    text = VIT
    for old, new in changes.items():
        text = text.replace(old, new)
    with pytest.raises(C.InputError, match=message):
        C.loads(text.format(mode="orbits", symmetrize="full", clip=0.0))
