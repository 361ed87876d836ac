"""examples/: short runs of both examples from their own files (operator and model in the
example's .py, input.toml with a few keys overridden), their exact energies, and the bridge's
bad-input exits through the command line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("netket")

from hpcvmc.cli import main  # noqa: E402

EXAMPLES = Path(__file__).parents[1] / "examples"
TFIM = EXAMPLES / "tfim_chain" / "input.toml"
TRIANGULAR = EXAMPLES / "heisenberg_triangular" / "input.toml"

SHORT = {
    TFIM: ["system.kwargs={n_sites = 8, h = 1.0, J = 1.0}"],
    TRIANGULAR: ["sampler.n_chains=8", "sampler.n_samples=64", "sampler.burn_in=5",
                 "run.measure_steps=0"],
}


def sets(overrides: list[str]) -> list[str]:
    return [arg for o in overrides for arg in ("--set", o)]


def test_tfim_exact_energy_is_the_free_fermion_value(capsys) -> None:
    """hpcvmc exact (NetKet's Lanczos) on the critical periodic chain of 8 sites:
    E0 = -2 J / sin(pi / (2 N)) (free fermions, even parity sector)."""
    assert main(["exact", str(TFIM), "--json"] + sets(SHORT[TFIM])) == 0
    energy = json.loads(capsys.readouterr().out)["energy"]
    assert energy == pytest.approx(-2.0 / math.sin(math.pi / 16), abs=1e-9)


# ground-state energies (hpcvmc exact): the critical chain of 8 sites (free fermions, even parity
# sector: -2 J / sin(pi / (2 N))) and the 6 x 3 triangular lattice (NetKet Lanczos, S^z = 0)
EXACT = {TFIM: -2.0 / math.sin(math.pi / 16), TRIANGULAR: -41.83974254}


@pytest.mark.parametrize("path", [TFIM, TRIANGULAR], ids=["tfim_chain", "heisenberg_triangular"])
def test_example_runs_short(path: Path, tmp_path: Path) -> None:
    """Three steps from the example's own files: finite energies above the exact ground state
    (within 5 error bars: the triangular example samples), and for the TFIM, whose exact sampler
    gives the variational energy itself, a lower energy after the updates."""
    out = tmp_path / "run"
    assert main(["run", str(path)] + sets(SHORT[path] + ["run.steps=3", f"run.output={out}"])) == 0
    history = np.genfromtxt(out / "history.csv", delimiter=",", names=True)
    assert np.all(np.isfinite(history["energy"]))
    assert np.all(history["energy"] > EXACT[path] - 5 * history["error"])
    if path == TFIM:
        assert history["energy"][-1] < history["energy"][0]


def test_tfim_first_step_is_the_dense_variational_energy(tmp_path: Path) -> None:
    """The exact sampler sums over all 2^N configurations (no magnetization sector): the first
    step's energy is <psi|H|psi> / <psi|psi> of the initial parameters, with NetKet's dense H."""
    from hpcvmc import config as C
    from hpcvmc.build import build
    from hpcvmc.parallel import SERIAL

    out = tmp_path / "run"
    config = C.load(TFIM, SHORT[TFIM] + ["run.steps=1", f"run.output={out}"])
    setup = build(config, SERIAL)
    states = setup.system.operator.hilbert.all_states()
    psi = np.exp(np.asarray(setup.logpsi(setup.init_params(), np.asarray(states, float))))
    h = np.asarray(setup.system.operator.to_dense())
    expected = np.vdot(psi, h @ psi).real / np.vdot(psi, psi).real
    assert main(["run", str(TFIM)] + sets(SHORT[TFIM] + ["run.steps=1", f"run.output={out}"])) == 0
    energy = np.genfromtxt(out / "history.csv", delimiter=",", names=True)["energy"]
    assert float(energy) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("key, value, message", [
    ("system.operator", "'no_such_module_xyz:f'", "system.operator = 'no_such_module_xyz:f': no module"),
    ("system.kwargs", "3", "system.kwargs must be a table, got 3"),
    ("model.module", "'tfim:Missing'", "model.module = 'tfim:Missing': module 'tfim' has no 'Missing'"),
    ("model.kwargs", "{alpha = 2, depth = 3}", "model.kwargs = {\"alpha\": 2, \"depth\": 3}"),
])
def test_bad_bridge_input_exits_2_with_one_line(tmp_path: Path, capsys, key: str, value: str,
                                                message: str) -> None:
    out = tmp_path / "run"
    args = ["run", str(TFIM), "--set", f"{key}={value}", "--set", f"run.output={out}"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("hpcvmc: error: ") and message in err and err.count("\n") == 1
    assert not out.exists()
