"""Launch the MPI test suite and the MPI end-to-end checks with mpirun.

One ``pytest`` therefore runs everything: a failure under mpirun fails the test here, with the
inner output shown.
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_cli import history, tiny_input

REPO = Path(__file__).parents[1]
MPIRUN = shutil.which("mpirun", path=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
pytestmark = pytest.mark.skipif(MPIRUN is None, reason="no mpirun on PATH (install the mpich extra)")


def launch_xla_flags() -> str:
    """XLA_FLAGS of a launched process: this process's flags (with conftest.UNOPTIMIZED_BACKEND)
    and one XLA thread."""
    return (f"{os.environ.get('XLA_FLAGS', '')} "
            "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONUNBUFFERED="1", JAX_PLATFORMS="cpu", OPENBLAS_NUM_THREADS="1",
               XLA_FLAGS=launch_xla_flags())
    return env


def mpirun(n: int, *args: str, timeout: float = 600, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([MPIRUN, "-n", str(n), *args], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=timeout)


def hpcvmc_on(n: int, *args: str) -> None:
    """`hpcvmc ARGS` under mpirun -n N; its output is shown if it fails."""
    proc = mpirun(n, sys.executable, "-m", "hpcvmc", *args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_mpi_suite_on_two_ranks():
    """tests/mpi on two ranks (plain pytest skips that folder: pytest-mpi marks it). Every test
    there compares the distributed result with the one-process result inside the same run."""
    proc = mpirun(2, sys.executable, "-m", "pytest", "--with-mpi", "-q", "-p", "no:cacheprovider",
                  "tests/mpi")
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-4000:]


def test_minsr_on_four_ranks():
    """The distributed solver on rows split 5, 11, 0, 7: a rank without rows needs R > 2 (the
    other layouts and solver options run on 2 ranks above)."""
    proc = mpirun(4, sys.executable, "-m", "pytest", "--with-mpi", "-q", "-p", "no:cacheprovider",
                  "tests/mpi/test_minsr_mpi.py", "-k", "ragged")
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-4000:]


def test_failing_rank_brings_the_job_down():
    script = ("import time; from hpcvmc.parallel import init_distributed; c = init_distributed();\n"
              "if c.rank == 1: raise RuntimeError('rank 1 fails')\n"
              "time.sleep(120)")
    start = time.monotonic()
    proc = mpirun(2, sys.executable, "-c", script, timeout=100)
    assert proc.returncode != 0
    assert time.monotonic() - start < 30
    assert "rank 1 fails" in proc.stderr


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory) -> Path:
    """The tiny RBM run of tests/test_cli.py (constant learning rate and shift) under mpirun:
    "straight", 4 steps on 1 rank; "two_then_one", 2 steps on 2 ranks resumed to 4 on 1 rank;
    "one_then_two", the reverse. The folder holding the three run folders; the tests below
    share these five launches."""
    folder = tmp_path_factory.mktemp("tiny_runs")

    def run(n: int, name: str, steps: int) -> None:
        hpcvmc_on(n, "run", str(tiny_input(folder, name)), "--set", f"run.steps={steps}")

    run(1, "straight", 4)
    run(2, "two_then_one", 2)
    run(1, "two_then_one", 4)
    run(1, "one_then_two", 2)
    run(2, "one_then_two", 4)
    return folder


def test_elastic_resume_across_rank_counts(tiny_runs):
    """`hpcvmc run` written on 2 ranks, resumed on 1 (and the reverse): continuous history equal
    to the uninterrupted run on 1 rank to 1e-8 (same chain count), so steps on 2 ranks equal
    steps on 1."""
    straight = history(tiny_runs / "straight")
    for name in ("two_then_one", "one_then_two"):
        h = history(tiny_runs / name)
        np.testing.assert_array_equal(h["step"], [1, 2, 3, 4])
        for key in ("energy", "error", "variance", "acceptance", "update_norm"):
            np.testing.assert_allclose(h[key], straight[key], rtol=1e-8, err_msg=f"{name} {key}")


def test_measure_command_on_two_ranks_equals_one_rank(tiny_runs, tmp_path):
    """`hpcvmc measure` of the same run folder under mpirun -n 1 and -n 2: the same final.json
    energy, error and variance to 1e-8 (the chains are redistributed, their streams are not)."""
    import json

    energies = []
    for n in (1, 2):
        folder = shutil.copytree(tiny_runs / "straight", tmp_path / f"measured_on_{n}")
        hpcvmc_on(n, "measure", str(folder), "--steps", "3")
        energies.append(json.loads((folder / "final.json").read_text())["energy"])
    for key in ("mean", "error", "variance"):
        np.testing.assert_allclose(energies[1][key], energies[0][key], rtol=1e-8, err_msg=key)


def test_init_params_on_two_ranks_equals_one_rank(tiny_runs, tmp_path):
    """run.init_params under mpirun -n 2 (every rank reads the source checkpoint, written by 2
    ranks: "one_then_two"): the same 2-step history as on 1 rank to 1e-8, and not the history of
    a fresh start (the first two steps of "straight": same seed, constant schedules)."""
    import json

    init = f"run.init_params={json.dumps(str(tiny_runs / 'one_then_two'))}"

    def run(n: int, name: str) -> np.ndarray:
        path = tiny_input(tmp_path, name, **{"steps = 4": "steps = 2"})
        hpcvmc_on(n, "run", str(path), "--set", init)
        return history(tmp_path / name)

    one, two = run(1, "tuned_on_1"), run(2, "tuned_on_2")
    fresh = history(tiny_runs / "straight")[:2]
    for key in ("energy", "variance", "acceptance", "update_norm"):
        np.testing.assert_allclose(two[key], one[key], rtol=1e-8, err_msg=key)
    assert not np.allclose(one["energy"], fresh["energy"], rtol=1e-6)


def test_netket_bridge_run_resumes_across_rank_counts(tmp_path):
    """The NetKet bridge and a user flax module (examples/heisenberg_triangular): steps 1-2 on
    2 ranks, checkpointed, resumed on 1 rank to step 4, equal to an uninterrupted run on 1 rank
    to 1e-8 (constant learning rate and shift: their decays depend on run.steps)."""
    small = ["sampler.n_chains=8", "sampler.n_samples=64", "sampler.burn_in=5",
             "optimizer.learning_rate_final=0.02", "optimizer.diag_shift_final=1e-3",
             "run.measure_steps=0", "run.checkpoint_every=2"]

    def run(n: int, name: str, steps: int) -> np.ndarray:
        overrides = small + [f"run.steps={steps}", f"run.output={tmp_path / name}"]
        hpcvmc_on(n, "run", "examples/heisenberg_triangular/input.toml",
                  *[arg for o in overrides for arg in ("--set", o)])
        return history(tmp_path / name)

    straight = run(1, "straight", 4)
    run(2, "two_then_one", 2)
    resumed = run(1, "two_then_one", 4)
    np.testing.assert_array_equal(resumed["step"], [1, 2, 3, 4])
    for key in ("energy", "variance", "acceptance", "update_norm"):
        np.testing.assert_allclose(resumed[key], straight[key], rtol=1e-8, err_msg=key)
