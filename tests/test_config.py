"""Input parsing: defaults, overrides, and one-line errors naming the key path."""

import re
from pathlib import Path

import pytest

from hpcvmc import config as C

QUICKSTART = Path(__file__).parents[1] / "jobs" / "quickstart.toml"
MOIRE_9 = Path(__file__).parents[1] / "jobs" / "moire_9sites_eps10.toml"


def test_quickstart_parses():
    cfg = C.load(QUICKSTART)
    assert cfg.system.L == 4 and cfg.system.J2 == 0.5
    assert cfg.sampler.n_samples == 512
    assert cfg.optimizer.type == "minsr"
    # the effective input round-trips through its TOML text
    assert C.loads(cfg.text).to_dict() == cfg.to_dict()


@pytest.mark.parametrize("job", sorted(QUICKSTART.parent.glob("*.toml")), ids=lambda p: p.name)
def test_every_job_input_is_valid(job):
    """Every input in jobs/ passes validation, and a fine-tuning input names a run of jobs/."""
    cfg = C.load(job)
    if cfg.run.init_params:
        outputs = {C.load(other).run.output for other in QUICKSTART.parent.glob("*.toml")}
        assert cfg.run.init_params in outputs


def test_overrides_are_validated_like_the_file():
    cfg = C.load(QUICKSTART, overrides=["system.J2=0.3", "run.output=runs/x"])
    assert cfg.system.J2 == 0.3 and cfg.run.output == "runs/x"
    with pytest.raises(C.InputError, match=r"^system.J2 must be a number"):
        C.load(QUICKSTART, overrides=["system.J2='a'"])
    with pytest.raises(C.InputError, match=r"unknown key system.J3 \(did you mean 'J2'\?\)"):
        C.load(QUICKSTART, overrides=["system.J3=0.1"])


def test_physics_hash_ignores_run_settings():
    a = C.load(QUICKSTART)
    b = C.load(QUICKSTART, overrides=["run.steps=10", "optimizer.learning_rate=0.1"])
    c = C.load(QUICKSTART, overrides=["system.L=6"])
    assert a.physics_hash() == b.physics_hash() != c.physics_hash()


BAD = [
    ("system.Lx=4", r"unknown key system.Lx \(did you mean 'L'\?\)"),
    ("system.L=3", r"system.L = 3 gives 9 sites: total Sz = 0 needs an even number"),
    ("system.L=-4", r"system.L = -4 must be >= 2"),
    ("system.L=4.5", r"system.L must be an integer, got 4.5"),
    ("system.marshall_sign=1", r"system.marshall_sign must be a boolean"),
    ("sampler.n_chains=0", r"sampler.n_chains = 0 must be > 0"),
    ("sampler.n_samples=1000", r"sampler.n_samples = 1000 is not a multiple of sampler.n_chains"),
    ("sampler.type='exchnge'", r"sampler.type = 'exchnge' is not one of .* \(did you mean 'exchange'\?\)"),
    ("model.dtype='float16'", r"model.dtype = 'float16' is not one of"),
    ("optimizer.learning_rate=-1", r"optimizer.learning_rate = -1.0 must be > 0"),
    ("run.steps='many'", r"run.steps must be an integer"),
]


@pytest.mark.parametrize("override,message", BAD)
def test_bad_values_name_the_key(override, message):
    with pytest.raises(C.InputError) as err:
        C.load(QUICKSTART, overrides=[override])
    assert re.search(message, str(err.value)), str(err.value)
    assert "\n" not in str(err.value)


def test_exact_sampler_refuses_large_lattice():
    text = QUICKSTART.read_text()
    start = text.index("[sampler]")
    text = text[:start] + '[sampler]\ntype = "exact"\n\n' + text[text.index("[optimizer]"):]
    assert C.loads(text).sampler.type == "exact"
    with pytest.raises(C.InputError, match="sampler.type = 'exact' cannot enumerate system.L = 6"):
        C.loads(text, overrides=["system.L=6"])


def test_orbit_sum_needs_a_fully_projected_model():
    text = QUICKSTART.read_text()
    start = text.index("[sampler]")
    text = text[:start] + '[sampler]\ntype = "exact"\norbits = true\n\n' + text[text.index("[optimizer]"):]
    assert C.loads(text, overrides=["model.symmetrize=full"]).sampler.orbits
    with pytest.raises(C.InputError, match="sampler.orbits = true needs .* model.symmetrize = 'full'"):
        C.loads(text, overrides=["model.symmetrize=translations"])


def test_chains_must_divide_ranks():
    cfg = C.load(QUICKSTART, overrides=["sampler.n_chains=3", "sampler.n_samples=30"])
    C.check_ranks(cfg, 1)
    C.check_ranks(cfg, 3)
    with pytest.raises(C.InputError, match=r"sampler.n_chains = 3 is not divisible by .* \(2\)"):
        C.check_ranks(cfg, 2)


def test_missing_file_and_section(tmp_path):
    with pytest.raises(C.InputError, match="no such input file"):
        C.load(tmp_path / "nope.toml")
    (tmp_path / "a.toml").write_text("[system]\ntype = 'j1j2'\nL = 4\n")
    with pytest.raises(C.InputError, match=r"section \[model\] is missing"):
        C.load(tmp_path / "a.toml")
    (tmp_path / "b.toml").write_text("[system\n")
    with pytest.raises(C.InputError, match="not valid TOML"):
        C.load(tmp_path / "b.toml")
    text = QUICKSTART.read_text() + "\n[sytem]\nx = 1\n"
    with pytest.raises(C.InputError, match=r"unknown section \[sytem\] \(did you mean 'system'\?\)"):
        C.loads(text)


def test_readme_input_reference_is_current():
    """README's input reference is generated from the config classes: keep them equal."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    start = readme.index("<!-- input-reference:start -->") + len("<!-- input-reference:start -->")
    end = readme.index("<!-- input-reference:end -->")
    assert readme[start:end].strip() == C.input_reference().strip(), (
        "README input reference is stale: regenerate it with "
        "python -c 'from hpcvmc.config import input_reference; print(input_reference())'"
    )


def test_numerical_keys_stay_out_of_the_physics_hash():
    """Chunk sizes and the Laplacian method may change on a resume; a coupling may not."""
    base = C.load(MOIRE_9)
    faster = C.load(MOIRE_9, overrides=["system.chunk_size=7", "system.laplacian=loop"])
    other = C.load(MOIRE_9, overrides=["system.epsilon=5.0"])
    assert base.physics_hash() == faster.physics_hash() != other.physics_hash()


def test_later_model_keys_at_their_defaults_keep_old_states_valid():
    """results/psiformer_9sites_eps10.h5 was written before model.features and model.head_noise
    existed: its stored physics hash still equals that of its input read today, and setting
    either key away from its default changes the hash."""
    from hpcvmc import export

    state = export.read(Path(__file__).parents[1] / "results" / "psiformer_9sites_eps10.h5")
    assert "features" not in state.input_toml and "head_noise" not in state.input_toml
    assert C.loads(state.input_toml).physics_hash() == state.physics_hash
    for key in ('model.features="moire"', "model.head_noise=1.0"):
        assert C.loads(state.input_toml, [key]).physics_hash() != state.physics_hash


@pytest.mark.parametrize("model, capability", [("rbm", "spins"), ("vit", "square_lattice")])
def test_lattice_models_refuse_electrons(model, capability):
    """A model's declared requirement that the system lacks is refused by name."""
    text = MOIRE_9.read_text()
    start, end = text.index("[model]"), text.index("[sampler]")
    text = text[:start] + f'[model]\ntype = "{model}"\n\n' + text[end:]
    expected = (rf"^model.type = '{model}' needs a system with '{capability}' "
                r"\(system.type = 'moire' provides: 'continuum', 'moire'\)$")
    with pytest.raises(C.InputError, match=expected):
        C.loads(text)
