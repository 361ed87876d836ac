"""Order parameters of the liquid -> Wigner-crystal analysis (hpcvmc transition)."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from hpcvmc import config as C
from hpcvmc import observables
from hpcvmc.analysis import transition
from hpcvmc.cli import main
from hpcvmc.systems import moire


def _measure(system, x):
    """Observables of the walker positions x (n, N, 2) on the system's cell."""
    geometry = observables.make_geometry(system, points_per_aM=8.0)
    acc = observables.accumulate(observables.empty(geometry), jnp.asarray(x), geometry)
    return observables.finalize(acc, geometry, energy=(-30.0, 0.1, 2.0))


def _crystal(system, rng, n=200, spread=0.05):
    """Samples of 6 electrons near the sites of sublattices 1 and 2 of the 9-site cell."""
    geometry = observables.make_geometry(system)
    honeycomb = geometry.sites[geometry.sublattice != 0]
    return honeycomb[None] + spread * rng.standard_normal((n,) + honeycomb.shape)


def _liquid(system, rng, n=400):
    """Samples of 6 electrons on random distinct sites (every site occupied 2/3 on average)."""
    sites = observables.make_geometry(system).sites
    return np.stack([sites[rng.permutation(len(sites))[:6]] for _ in range(n)])


@pytest.fixture(scope="module")
def system():
    return moire.from_config(moire.MoireConfig(sites=9, n_electrons=6))


def test_order_parameters_of_a_crystal_and_a_liquid(system):
    rng = np.random.default_rng(0)
    crystal = transition.order_parameters(_measure(system, _crystal(system, rng)))
    np.testing.assert_allclose(crystal["sublattice_occupations"], [1, 1, 0], atol=1e-12)
    assert crystal["contrast"] == pytest.approx(1.0)
    assert crystal["rho_K_abs"] == pytest.approx(0.5, abs=0.02)
    assert crystal["rho_K_mean_abs"] == pytest.approx(0.5, abs=0.02)
    assert crystal["S_K"] == pytest.approx(6 * 0.25, rel=0.1)  # N |rho_K|^2
    liquid = transition.order_parameters(_measure(system, _liquid(system, rng)))
    np.testing.assert_allclose(liquid["sublattice_occupations"], 2 / 3, atol=0.05)
    assert liquid["contrast"] < 0.1
    assert liquid["rho_K_mean_abs"] < 0.05
    # 6 of 9 sites at random (w = exp(i K . R), a cube root of unity per sublattice):
    # <|sum_i w_i|^2> = N (9 - 6) / (9 - 1) without replacement, so S(K) = 3/8
    assert liquid["S_K"] == pytest.approx(3 / 8, rel=0.15)


def test_site_occupations_sum_to_the_electron_number(system):
    obs = _measure(system, _liquid(system, np.random.default_rng(1), n=50) + 0.3)
    occupation = transition.site_occupations(obs)
    assert occupation.shape == (9,)
    assert occupation.sum() == pytest.approx(6.0)


def _run_folder(tmp_path, system, epsilon, x):
    folder = tmp_path / f"eps_{epsilon}"
    folder.mkdir()
    (folder / "input.toml").write_text(
        f'[system]\ntype = "moire"\nsites = 9\nn_electrons = 6\nepsilon = {epsilon}\n'
        '[model]\ntype = "slater"\n[sampler]\ntype = "gaussian"\n[optimizer]\ntype = "minsr"\n'
        f'[run]\noutput = "{folder}"\n')
    observables.write_observables(folder, _measure(system, x))
    return folder


def test_cli_table_json_and_png(tmp_path, system, capsys):
    rng = np.random.default_rng(2)
    weak = _run_folder(tmp_path, system, 40.0, _liquid(system, rng))
    strong = _run_folder(tmp_path, system, 5.0, _crystal(system, rng))
    png = tmp_path / "transition.png"
    assert main(["transition", str(weak), str(strong), "--json", "--png", str(png)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["epsilon"] for r in rows] == [5.0, 40.0]  # sorted by epsilon
    assert rows[0]["U"] == pytest.approx(10.6235, abs=1e-4)
    assert rows[0]["contrast"] > 0.9 > 0.1 > rows[1]["contrast"]
    assert png.stat().st_size > 0
    assert main(["transition", str(strong)]) == 0
    assert "contrast" in capsys.readouterr().out


def test_cli_refuses_a_folder_without_observables(tmp_path, capsys):
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "input.toml").write_text(
        '[system]\ntype = "moire"\nsites = 9\nn_electrons = 6\n[model]\ntype = "slater"\n'
        f'[sampler]\ntype = "gaussian"\n[optimizer]\ntype = "minsr"\n[run]\noutput = "{folder}"\n')
    assert main(["transition", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "observables.h5" in err and len(err.strip().splitlines()) == 1
