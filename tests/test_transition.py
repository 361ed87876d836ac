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


def _run_folder(tmp_path, system, epsilon, x, start="bands", energy=(-30.0, 0.1, 2.0)):
    folder = tmp_path / f"{start}_eps_{epsilon}"
    folder.mkdir()
    (folder / "input.toml").write_text(
        f'[system]\ntype = "moire"\nsites = 9\nn_electrons = 6\nepsilon = {epsilon}\n'
        f'[model]\ntype = "slater"\ninit = "{start}"\n[sampler]\ntype = "gaussian"\n'
        f'[optimizer]\ntype = "minsr"\n[run]\noutput = "{folder}"\n')
    geometry = observables.make_geometry(system, points_per_aM=8.0)
    acc = observables.accumulate(observables.empty(geometry), jnp.asarray(x), geometry)
    observables.write_observables(folder, observables.finalize(acc, geometry, energy=energy))
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


def _row(epsilon, start, energy, error, contrast):
    return {"epsilon": epsilon, "start": start, "energy_meV": energy, "error_meV": error,
            "contrast": contrast}


def test_energy_crossing_of_two_branches_and_its_range():
    """dE = E_crystal - E_liquid: -1 +- 0.5 at epsilon 5, +1 +- 0.5 at 10 (the runs from the
    band start end crystalline at 5, the HF run melts at 10): the straight lines through dE and
    dE +- sigma cross zero at 7.5, 6.25 and 8.75."""
    rows = [_row(5.0, "bands", -31.0, 0.3, 0.9), _row(5.0, "hf", -30.0, 0.4, 0.2),
            _row(10.0, "bands", -20.0, 0.4, 0.3), _row(10.0, "hf", -19.0, 0.3, 0.8),
            _row(20.0, "hf", -10.0, 0.1, 0.3)]
    diffs = transition.energy_differences(rows)
    assert [d["phase"] for d in diffs] == ["crystal", "liquid", "liquid"]
    assert diffs[0]["dE_meV"] == pytest.approx(-1.0) and diffs[1]["dE_meV"] == pytest.approx(1.0)
    assert diffs[0]["error_meV"] == pytest.approx(0.5) and diffs[2]["dE_meV"] is None
    onset = transition.crystal_onset(rows)
    assert onset["bracket"] == (5.0, 10.0)
    assert onset["epsilon_c"] == pytest.approx(7.5)
    assert onset["range"] == pytest.approx((6.25, 8.75))


def test_onset_is_bracketed_where_one_kind_of_state_is_missing():
    rows = [_row(5.0, "hf", -31.0, 0.3, 0.9), _row(8.0, "hf", -25.0, 0.3, 0.85),
            _row(10.0, "hf", -20.0, 0.4, 0.3)]
    onset = transition.crystal_onset(rows)
    assert onset == {"bracket": (8.0, 10.0), "epsilon_c": None, "range": None}
    assert transition.crystal_onset(rows[:2])["bracket"] is None  # crystal throughout


def test_cli_both_branches_table_and_figure(tmp_path, system, capsys):
    """Runs from both starts at two epsilons: the table has a start column, dE per epsilon and
    the onset line; the figure gets its dE panel."""
    rng = np.random.default_rng(3)
    folders = [_run_folder(tmp_path, system, 5.0, _crystal(system, rng), "hf", (-31.0, 0.1, 2.0)),
               _run_folder(tmp_path, system, 5.0, _liquid(system, rng), "bands", (-30.0, 0.1, 2.0)),
               _run_folder(tmp_path, system, 10.0, _crystal(system, rng), "hf", (-20.0, 0.1, 2.0)),
               _run_folder(tmp_path, system, 10.0, _liquid(system, rng), "bands", (-21.0, 0.1, 2.0))]
    png = tmp_path / "both.png"  # energies: totals in E0, the same positive factor to meV/el
    assert main(["transition", *map(str, folders), "--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert "crystal onset: between epsilon = 5 (crystal) and 10 (liquid); energy crossing at " \
           "epsilon_c = 7.5" in out
    assert png.stat().st_size > 0
