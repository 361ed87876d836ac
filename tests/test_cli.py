"""The command line end to end: runs, determinism, output folders, bad input and exit codes."""

import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hpcvmc import checkpoint as ckpt
from hpcvmc import config as C
from hpcvmc.analysis.sampling import sample_from_checkpoint
from hpcvmc.build import build
from hpcvmc.cli import main
from hpcvmc.driver import prepare_output, restore
from hpcvmc.parallel import SERIAL

REPO = Path(__file__).parents[1]

TINY = """
[system]
type = "j1j2"
L = 4
J2 = 0.5

[model]
type = "rbm"
alpha = 1

[sampler]
type = "exchange"
n_chains = 8
n_samples = 64
burn_in = 10

[optimizer]
type = "minsr"
learning_rate = 0.02

[run]
steps = 4
seed = 3
output = "{output}"
checkpoint_every = 2
"""


# replacements that turn TINY into a run of the exact sampler (full sum over the Sz = 0 sector)
EXACT = {"n_chains = 8\nn_samples = 64\nburn_in = 10\n": "", 'type = "exchange"': 'type = "exact"'}


def tiny_input(tmp_path: Path, name: str = "run", **replace: str) -> Path:
    text = TINY.format(output=tmp_path / name)
    for old, new in replace.items():
        text = text.replace(old, new)
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def folder_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            digest.update(str(f.relative_to(folder)).encode() + f.read_bytes())
    return digest.hexdigest()


def history(folder: Path) -> np.ndarray:
    return np.genfromtxt(folder / "history.csv", delimiter=",", names=True)


def test_run_is_deterministic_and_inspectable(tmp_path, capsys):
    assert main(["run", str(tiny_input(tmp_path, "a"))]) == 0
    assert main(["run", str(tiny_input(tmp_path, "b"))]) == 0
    a, b = history(tmp_path / "a"), history(tmp_path / "b")
    assert len(a) == 4
    for name in ("energy", "error", "variance", "acceptance", "update_norm"):
        np.testing.assert_array_equal(a[name], b[name])
    capsys.readouterr()
    assert main(["inspect", str(tmp_path / "a"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["step"] == 4 and info["n_ranks"] == 1 and info["n_sites"] == 16
    assert info["n_params"] == 2 * (16 * 16 + 16)
    assert info["energy"]["mean"] == pytest.approx(a["energy"][-1], rel=1e-15)
    assert set(info["energy"]) == {"mean", "error", "variance"}
    assert main(["plot", str(tmp_path / "a")]) == 0
    assert (tmp_path / "a" / "energy.png").stat().st_size > 1000


def test_rerun_of_finished_run_changes_nothing(tmp_path):
    path = tiny_input(tmp_path)
    assert main(["run", str(path)]) == 0
    before = folder_digest(tmp_path / "run")
    assert main(["run", str(path)]) == 0
    assert folder_digest(tmp_path / "run") == before


def test_update_norm_cap_reaches_the_optimizer(tmp_path):
    """optimizer.max_update_norm from the input: every step shorter than the free one
    (update_scale < 1, logged), the same first energy, then another trajectory."""
    assert main(["run", str(tiny_input(tmp_path, "free", **{"steps = 4": "steps = 2"}))]) == 0
    capped = tiny_input(tmp_path, "capped", **{"steps = 4": "steps = 2",
                                               "learning_rate = 0.02": "learning_rate = 0.02\n"
                                               "max_update_norm = 1e-4"})
    assert main(["run", str(capped)]) == 0
    free, cut = history(tmp_path / "free"), history(tmp_path / "capped")
    np.testing.assert_array_equal(free["update_scale"], [1, 1])
    assert np.all(cut["update_scale"] < 0.5)
    assert cut["energy"][0] == free["energy"][0] and cut["energy"][1] != free["energy"][1]


def test_exact_run_continues_with_markov_chains(tmp_path):
    """A run of the exact sampler (checkpoints without chains) resumed with the exchange sampler
    burns in new chains and goes on; the history records each step's sample count (the whole
    Sz = 0 sector of 4 x 4, C(16, 8), then sampler.n_samples)."""
    exact = tiny_input(tmp_path, **EXACT, **{"steps = 4": "steps = 2"})
    assert main(["run", str(exact)]) == 0
    assert main(["run", str(tiny_input(tmp_path))]) == 0
    h = history(tmp_path / "run")
    np.testing.assert_array_equal(h["step"], [1, 2, 3, 4])
    np.testing.assert_array_equal(h["n_samples"], [math.comb(16, 8)] * 2 + [64] * 2)


def test_init_params_starts_a_run_from_the_parameters_of_another(tmp_path, capsys):
    """run.init_params: a fresh run with a fully projected ViT starts from the parameters of an
    unprojected run (same parameter tree): its bare network equals the source's network, the
    step count and optimizer start afresh; another parameter tree or no checkpoint is refused
    with one line naming the key, and no output folder is made."""
    vit = 'type = "vit"\npatch = 1\nd_model = 4\nn_heads = 1\nn_layers = 1'
    rbm = 'type = "rbm"\nalpha = 1'
    source = tiny_input(tmp_path, "source", **{rbm: vit, "steps = 4": "steps = 2"})
    assert main(["run", str(source)]) == 0
    init = f"run.init_params={json.dumps(str(tmp_path / 'source'))}"
    full = vit + '\nsymmetrize = "full"'
    tuned = tiny_input(tmp_path, "tuned", **{rbm: full, "steps = 4": "steps = 1"})
    setup = build(C.load(tuned, overrides=[init]), SERIAL)
    state = prepare_output(setup, None, say=lambda _: None)
    assert state.step == 0 and all(not h for h in state.history.values())
    src_setup = build(C.load(source), SERIAL)
    src = restore(src_setup, ckpt.read(ckpt.list_checkpoints(tmp_path / "source")[0]), tmp_path)
    assert src.step == 2
    rng = np.random.default_rng(0)
    x = np.array([rng.permutation([1.0, -1.0] * 8) for _ in range(5)])
    bare = setup.model.apply({"params": state.params}, x, method="network")
    np.testing.assert_allclose(bare, src_setup.logpsi(src.params, x), rtol=0, atol=1e-12)
    assert main(["run", str(tuned), "--set", init]) == 0
    assert np.atleast_1d(history(tmp_path / "tuned")["step"]).tolist() == [1]
    capsys.readouterr()
    wider = tiny_input(tmp_path, "wider", **{rbm: vit.replace("d_model = 4", "d_model = 8")})
    for target in (tmp_path / "source", tmp_path / "nowhere"):
        assert main(["run", str(wider), "--set", f"run.init_params={json.dumps(str(target))}"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("hpcvmc: error: run.init_params: ") and err.count("\n") == 1
    assert not (tmp_path / "wider").exists()


def test_foreign_output_folder_is_refused_and_untouched(tmp_path, capsys):
    assert main(["run", str(tiny_input(tmp_path))]) == 0
    before = folder_digest(tmp_path / "run")
    other = tiny_input(tmp_path, "run", **{"J2 = 0.5": "J2 = 0.3"})
    capsys.readouterr()
    assert main(["run", str(other)]) == 2
    err = capsys.readouterr().err.strip()
    assert "output folder holds a run of a different system/model" in err and "\n" not in err
    assert folder_digest(tmp_path / "run") == before
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "data.txt").write_text("precious")
    assert main(["run", str(tiny_input(tmp_path, "x")), "--set", f"run.output={tmp_path / 'junk'}"]) == 2
    assert (tmp_path / "junk" / "data.txt").read_text() == "precious"


@pytest.mark.parametrize("args,message", [
    (["--set", "system.Lx=4"], "unknown key system.Lx (did you mean 'L'?)"),
    (["--set", "system.L=5"], "system.L = 5 gives 25 sites"),
    (["--set", "sampler.n_chains=-8"], "sampler.n_chains = -8 must be > 0"),
    (["--set", "model.alpha='two'"], "model.alpha must be an integer"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, args, message):
    path = tiny_input(tmp_path)
    assert main(["run", str(path)] + args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_missing_input_file_exit_code_from_the_console_script(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "hpcvmc", "validate", str(tmp_path / "no.toml")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"hpcvmc: error: {tmp_path / 'no.toml'}: no such input file"


def test_exact_command(capsys):
    assert main(["exact", str(REPO / "jobs" / "quickstart.toml"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["energy"] == pytest.approx(-8.4579234, abs=5e-7)
    assert main(["exact", str(REPO / "jobs" / "quickstart.toml"), "--set", "system.L=6"]) == 2
    assert main(["exact", str(REPO / "jobs" / "quickstart.toml"), "--set", "system.L=6",
                 "--known", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["energy"] == -18.13716


def test_non_finite_energy_stops_with_exit_3_and_keeps_last_good_state(tmp_path, capsys):
    path = tiny_input(tmp_path, **{"learning_rate = 0.02": "learning_rate = 1e300",
                                   "steps = 4": "steps = 6"})
    assert main(["run", str(path)]) == 3
    assert "non-finite" in capsys.readouterr().out
    assert main(["inspect", str(tmp_path / "run"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["step"] < 6 and np.isfinite(info["energy"]["mean"])


def test_attention_command_on_a_vit_run(tmp_path, capsys):
    """Factored attention is input-independent by construction: D = 0 in every layer and head."""
    vit = "type = \"vit\"\nd_model = 8\nn_heads = 2\nn_layers = 1\nattention = \"factored\""
    path = tiny_input(tmp_path, **{"type = \"rbm\"\nalpha = 1": vit, "steps = 4": "steps = 2"})
    assert main(["run", str(path)]) == 0
    capsys.readouterr()
    png = tmp_path / "attention.png"
    assert main(["attention", str(tmp_path / "run"), "--json", "--samples", "64",
                 "--png", str(png)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert np.shape(summary["D"]) == (1, 2) and np.all(np.asarray(summary["D"]) == 0.0)
    assert summary["n_samples"] >= 64 and png.stat().st_size > 1000
    assert main(["attention", str(tmp_path / "nowhere")]) == 2


def test_analysis_of_an_orbit_run_draws_every_member_of_an_orbit(tmp_path):
    """The orbit sum keeps the smallest-code member of each orbit (site magnetizations far from
    0); configurations for analyses are uniform members of the drawn orbits, so every site
    magnetization averages to 0 (spin flip) within the noise of 4,000 draws (std 0.016)."""
    vit = "type = \"vit\"\npatch = 1\nd_model = 4\nn_heads = 1\nn_layers = 1\nsymmetrize = \"full\""
    orbits = {**EXACT, 'type = "exchange"': 'type = "exact"\norbits = true'}
    path = tiny_input(tmp_path, **orbits, **{"type = \"rbm\"\nalpha = 1": vit, "steps = 4": "steps = 1"})
    assert main(["run", str(path)]) == 0
    assert history(tmp_path / "run")["n_samples"] == 107  # orbits of the 4 x 4 sector
    checkpoint = sorted((tmp_path / "run" / "checkpoints").glob("*.h5"))[-1]
    setup, _, x = sample_from_checkpoint(C.load(path), SERIAL, checkpoint, 4000)
    assert np.abs(setup.sampler.configurations.mean(axis=0)).max() > 0.5
    assert np.abs(x.mean(axis=0)).max() < 0.08 and np.all(x.sum(axis=1) == 0)
    assert len(np.unique(x, axis=0)) > 10 * len(setup.sampler.configurations)


def test_reference_bped_command(tmp_path, capsys):
    """BP-ED of 6 electrons on 9 sites through the CLI: every momentum sector, JSON stored."""
    out = tmp_path / "bped.json"
    assert main(["reference", "bped", str(REPO / "jobs" / "moire_9sites_eps10.toml"),
                 "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert len(result["sectors"]) == 9 and sum(s["dimension"] for s in result["sectors"]) == 84
    assert result["energy_E0"] == min(s["energy_E0"] for s in result["sectors"])
    assert "meV per electron" in capsys.readouterr().out
    assert main(["reference", "bped", str(REPO / "jobs" / "quickstart.toml")]) == 2


def test_reference_needs_only_the_system(tmp_path):
    """A moire input with only [system] gives the same BP-ED as the whole job input."""
    import tomllib

    job = REPO / "jobs" / "moire_9sites_eps10.toml"
    system = tomllib.loads(job.read_text())["system"]
    lines = ["[system]"] + [f"{k} = {json.dumps(v)}" for k, v in system.items()]
    system_only = tmp_path / "system.toml"
    system_only.write_text("\n".join(lines) + "\n")
    outs = [tmp_path / "whole.json", tmp_path / "system.json"]
    for path, out in zip((job, system_only), outs):
        assert main(["reference", "bped", str(path), "--out", str(out)]) == 0
    whole, partial = (json.loads(out.read_text()) for out in outs)
    assert partial["energy_E0"] == whole["energy_E0"]


def test_plot_of_a_hartree_fock_density(tmp_path):
    """`hpcvmc plot HF.json` draws the density stored by `hpcvmc reference hf`."""
    result = {"density": {"rho": np.random.default_rng(0).random((6, 6)).tolist(),
                          "cell": [[3.0, 0.0], [-1.5, 2.598]]},
              "state": {"sites": [[0.0, 0.0], [1.0, 0.0]], "classification": "honeycomb crystal",
                        "sublattice_charges": [2.3, 1.3, 2.3]},
              "energy_per_electron_meV": -31.6}
    path = tmp_path / "hf.json"
    path.write_text(json.dumps(result))
    assert main(["plot", str(path)]) == 0
    assert (tmp_path / "hf.png").stat().st_size > 1000
    (tmp_path / "bad.json").write_text("{}")
    assert main(["plot", str(tmp_path / "bad.json")]) == 2
