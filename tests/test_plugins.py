"""Plug-in components: a user file next to the input adds a system (``type = "module:Name"``),
validated, hashed, checkpointed and run exactly like a built-in, on 1 and 2 ranks; the Python API
runs it and reads the history.

The plug-in is a spin-1/2 Heisenberg ring H = J sum_i S_i . S_{i+1} in the Sz = 0 sector,
written as a user would (the protocol of hpcvmc/protocols.py); its energies are checked
against a dense exact diagonalization built here with numpy.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hpcvmc
from hpcvmc.build import build
from hpcvmc.cli import main
from hpcvmc.config import InputError
from hpcvmc.parallel import SERIAL

from test_mpi import MPIRUN, mpirun

PLUGIN = textwrap.dedent('''
    """A Heisenberg ring as an hpcvmc plug-in system."""
    from dataclasses import dataclass
    from typing import ClassVar

    import jax
    import jax.numpy as jnp
    import numpy as np

    from hpcvmc.config import REQUIRED, InputError, option
    from hpcvmc.registry import Component


    @dataclass(frozen=True, kw_only=True)
    class RingConfig:
        """Heisenberg ring H = J sum_i S_i . S_(i+1), S = sigma / 2, total Sz = 0."""

        type: str = option("", "System type.")
        N: int = option(REQUIRED, "Sites of the ring.", minimum=4)
        J: float = option(1.0, "Exchange coupling (energy unit).")
        chunk_size: int = option(64, "Unused here.", positive=True, numerical=True)
        capabilities: ClassVar[frozenset] = frozenset({"spins", "fixed_magnetization", "enumerable"})

        def validate(self, cfg):
            if self.N % 2:
                raise InputError(f"system.N = {self.N} must be even (Sz = 0)")

        @property
        def n_sites(self):
            return self.N

        @property
        def n_states(self):
            from math import comb
            return comb(self.N, self.N // 2)


    @dataclass(frozen=True)
    class Ring:
        N: int
        J: float
        chunk_size: int = 64
        energy_unit = "J (total of the ring)"

        @property
        def n_sites(self):
            return self.N

        @property
        def config_shape(self):
            return (self.N,)

        def exchange_pairs(self):
            return np.array([(i, (i + 1) % self.N) for i in range(self.N)])

        def all_configurations(self):
            import itertools
            rows = [[1.0 if i in up else -1.0 for i in range(self.N)]
                    for up in itertools.combinations(range(self.N), self.N // 2)]
            return np.array(rows)

        def local_energy(self, logpsi, params, x):
            pairs = jnp.asarray(self.exchange_pairs())
            si, sj = x[:, pairs[:, 0]], x[:, pairs[:, 1]]
            diagonal = self.J / 4 * jnp.sum(si * sj, axis=1)
            log_x = logpsi(params, x)

            def exchanged(p):
                i, j = p
                y = x.at[:, i].set(x[:, j]).at[:, j].set(x[:, i])
                return jnp.exp(logpsi(params, y) - log_x)

            ratios = jax.vmap(exchanged)(pairs)  # (N, n)
            flips = (si != sj).T
            return diagonal + self.J / 2 * jnp.sum(jnp.where(flips, ratios, 0.0), axis=0)

        def format_energy(self, mean, error):
            return f"E = {mean:.8f} +- {error:.2e} J"

        def progress_energy(self, mean, error):
            return f"{mean:.5f} +- {error:.5f}"


    RING = Component("system", "ring:RING", RingConfig, lambda cfg: Ring(cfg.N, cfg.J, cfg.chunk_size))
''')

INPUT = """
[system]
type = "ring:RING"
N = 8
J = 1.0

[model]
type = "rbm"
alpha = 1

[sampler]
type = "{sampler}"
{sampler_keys}

[optimizer]
type = "minsr"
learning_rate = 0.05
diag_shift = 1e-3

[run]
steps = 4
seed = 3
checkpoint_every = 2
output = "{output}"
"""
EXCHANGE = "n_chains = 8\nn_samples = 64\nburn_in = 20"


def write_plugin(folder: Path, sampler: str = "exchange", keys: str = EXCHANGE,
                 output: str = "runs/ring") -> Path:
    """The plug-in file and an input next to it (in a fresh folder: module name 'ring')."""
    (folder / "ring.py").write_text(PLUGIN)
    path = folder / "input.toml"
    path.write_text(INPUT.format(sampler=sampler, sampler_keys=keys, output=output))
    return path


@pytest.fixture(autouse=True)
def fresh_plugin_module():
    """Every test loads its own ring.py (the registry keeps loaded modules in sys.modules)."""
    yield
    sys.modules.pop("ring", None)


def dense_ring_energy(N: int, J: float, psi: np.ndarray, states: np.ndarray) -> float:
    """<psi|H|psi> / <psi|psi> with H built from Pauli matrices on the full 2^N space."""
    sx = np.array([[0, 1], [1, 0]]) / 2
    sy = np.array([[0, -1j], [1j, 0]]) / 2
    sz = np.array([[1, 0], [0, -1]]) / 2

    def site_op(op, i):
        out = np.eye(1)
        for k in range(N):
            out = np.kron(out, op if k == i else np.eye(2))
        return out

    H = sum(J * site_op(s, i) @ site_op(s, (i + 1) % N) for i in range(N) for s in (sx, sy, sz))
    full = np.zeros(2 ** N, dtype=complex)
    for row, amp in zip(states, psi):  # spin up (+1) on site k = basis bit 0 of factor k
        index = int("".join("0" if s > 0 else "1" for s in row), 2)
        full[index] = amp
    return float(np.real(full.conj() @ H @ full) / np.real(full.conj() @ full))


def test_plugin_keys_are_validated_like_a_builtin(tmp_path, monkeypatch, capsys):
    """Unknown key, wrong type, its own validate: exit 2 with one line naming the key; `hpcvmc
    keys ring:RING` prints the plug-in's input reference."""
    path = write_plugin(tmp_path)
    monkeypatch.chdir(tmp_path)
    cases = [("system.Jx=1", "unknown key system.Jx (did you mean 'J'?)"),
             ("system.N='eight'", "system.N must be an integer, got 'eight'"),
             ("system.N=2", "system.N = 2 must be >= 4"),
             ("system.N=9", "system.N = 9 must be even (Sz = 0)")]
    for override, message in cases:
        assert main(["validate", str(path), "--set", override]) == 2
        assert capsys.readouterr().err.strip() == f"hpcvmc: error: {message}"
    assert main(["keys", "ring:RING"]) == 0
    out = capsys.readouterr().out
    assert '#### `[system] type = "ring:RING"`' in out and "| `N` | an integer | required |" in out
    assert main(["validate", str(path), "--set", 'system.type="ring:NOPE"']) == 2
    assert "system.type = 'ring:NOPE': module 'ring' has no 'NOPE'" in capsys.readouterr().err


def test_plugin_enters_the_physics_hash(tmp_path):
    path = write_plugin(tmp_path)
    base = hpcvmc.load_config(path)
    assert base.system.type == "ring:RING" and "ring:RING" in base.text
    assert hpcvmc.load_config(path, ["system.J=0.5"]).physics_hash() != base.physics_hash()
    assert hpcvmc.load_config(path, ["system.chunk_size=7"]).physics_hash() == base.physics_hash()


def test_plugin_local_energy_and_exact_sum_match_dense_ed(tmp_path):
    """The engine's exact-sum energy of the RBM on the plug-in ring equals the dense
    <psi|H|psi> (an independent 2^N construction) to 1e-12."""
    path = write_plugin(tmp_path, sampler="exact", keys="")
    config = hpcvmc.load_config(path)
    setup = build(config, SERIAL)
    params = setup.init_params()
    states = setup.system.all_configurations()
    psi = np.exp(np.asarray(setup.logpsi(params, jnp.asarray(states))))
    exact = dense_ring_energy(8, 1.0, psi, states)
    batch, _ = setup.sampler.sample(setup.logpsi, params, None, jnp.zeros(0, int), jnp.asarray(0))
    e_loc = setup.system.local_energy(setup.logpsi, params, batch.x.reshape(-1, 8))
    engine = float(jnp.real(jnp.sum(batch.weights.reshape(-1) * e_loc)))
    assert abs(engine - exact) < 1e-12 * abs(exact)


def test_plugin_run_checkpoints_and_resumes_bit_identically(tmp_path, monkeypatch):
    """4 steps straight equal 2 steps, stop, resume to 4 (from the checkpoint at step 2); the
    Python API runs it and reads the history."""
    monkeypatch.chdir(tmp_path)
    path = write_plugin(tmp_path)
    straight = hpcvmc.load_config(path, ["run.output=straight"])
    assert hpcvmc.run(straight) == 0
    assert hpcvmc.run(hpcvmc.load_config(path, ["run.output=parts", "run.steps=2"])) == 0
    assert hpcvmc.run(hpcvmc.load_config(path, ["run.output=parts"])) == 0
    a, b = hpcvmc.read_history("straight"), hpcvmc.read_history("parts")
    assert list(a["step"]) == [1, 2, 3, 4]
    for key in ("energy", "error", "variance", "acceptance", "update_norm"):
        np.testing.assert_array_equal(a[key], b[key])
    assert np.all(np.isfinite(a["energy"])) and a["energy"][-1] < a["energy"][0]


@pytest.mark.skipif(MPIRUN is None, reason="no mpirun on PATH (install the mpich extra)")
def test_plugin_run_on_two_ranks_equals_one_rank(tmp_path):
    """The plug-in under mpirun -n 2 gives the 1-rank history to 1e-10 (reduction order)."""
    path = write_plugin(tmp_path)
    histories = []
    for n, name in ((1, "one"), (2, "two")):
        proc = mpirun(n, sys.executable, "-m", "hpcvmc", "run", str(path), "--set",
                      f"run.output={tmp_path / name}", cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        histories.append(hpcvmc.read_history(tmp_path / name))
    one, two = histories
    np.testing.assert_allclose(one["energy"], two["energy"], rtol=1e-10)
    np.testing.assert_allclose(one["variance"], two["variance"], rtol=1e-10)
