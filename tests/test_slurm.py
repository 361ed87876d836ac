"""The Slurm templates (slurm/) against a real single-node Slurm cluster on this machine.

A module-scoped fixture starts the cluster with ``slurm/local-cluster.sh start`` (munged,
slurmctld, slurmd, as root) and stops it afterwards. The tests submit the templates with
``sbatch`` exactly as a user would and check what the jobs leave behind:

- ``slurm/run.sbatch`` on 2 tasks (srun --mpi=pmi2) that gets USR1 mid-run checkpoints,
  requeues itself, resumes, finishes with the final checkpoint, a continuous history and the
  same parameters (1e-8) as an uninterrupted ``mpirun -n 2`` run (one job checks both the
  template's plain run and its requeue: a separate uninterrupted job took 90 s of CI);
- ``slurm/sweep.sbatch`` as a 2-task job array writes 2 separate, finished runs.

Skipped only where the Slurm/munge packages are missing (``bash .ci/install-slurm``), where the
tests do not run as root, or where the cluster cannot start (the script's output is the reason).
The jobs use this interpreter's environment (``HPCVMC_VENV``), tiny settings and one shared JAX
compilation cache; the file runs in 3 to 4 minutes on 2 busy cores, most of it start-up and
compilation of hpcvmc and Slurm's requeue delay (``cred_expire``, 20 s on the local cluster).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest

from test_mpi import launch_xla_flags

REPO = Path(__file__).parents[1]
CLUSTER = REPO / "slurm" / "local-cluster.sh"
RUN_SBATCH = str(REPO / "slurm" / "run.sbatch")
QUICKSTART = str(REPO / "jobs" / "quickstart.toml")
BIN = Path(sys.executable).parent
VENV = BIN.parent
MPIRUN = shutil.which("mpirun", path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
SBIN_PATH = f"{os.environ.get('PATH', '')}{os.pathsep}/usr/sbin{os.pathsep}/sbin"
SLURM_PROGRAMS = ("slurmctld", "slurmd", "munged", "sbatch", "scontrol", "squeue", "srun")
MISSING = [p for p in SLURM_PROGRAMS if shutil.which(p, path=SBIN_PATH) is None]

pytestmark = [
    pytest.mark.skipif(bool(MISSING), reason=f"Slurm not installed (no {', '.join(MISSING)}): "
                       "run `bash .ci/install-slurm`"),
    pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0,
                       reason="the local Slurm cluster needs root (it starts munged and slurmd)"),
]

# The tiny settings of every job: 2 ranks x 4 chains, 128 samples per step, 10 burn-in sweeps;
# the quickstart jobs also take a one-layer ViT without the final measurement (compiling the
# step, the burn-in and the measurement is most of their CPU time) and all run STEPS steps (the
# step count is compiled into the step, and the compilation is cached).
TINY = ("--set", "sampler.n_samples=128", "--set", "sampler.n_chains=8",
        "--set", "sampler.burn_in=10")
QUICKSTART_TINY = (*TINY, "--set", "model.n_layers=1", "--set", "run.measure_steps=0")
STEPS = 16
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
                "BOOT_FAIL", "DEADLINE", "PREEMPTED"}


def _clean_env(**extra: str) -> dict[str, str]:
    """This environment without any Slurm job variables, with single-threaded XLA on the CPU
    and the unoptimized back end of the launched processes (test_mpi.launch_xla_flags)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))}
    env.update(PYTHONUNBUFFERED="1", JAX_PLATFORMS="cpu", PATH=SBIN_PATH,
               XLA_FLAGS=launch_xla_flags())
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def slurm_env(tmp_path_factory):
    """A running local Slurm cluster; yields the environment for sbatch (SLURM_CONF, venv)."""
    state = os.environ.get("HPCVMC_SLURM_DIR", "/tmp/hpcvmc-slurm")
    env = _clean_env(HPCVMC_SLURM_DIR=state)
    was_running = subprocess.run(["bash", str(CLUSTER), "status"], env=env, capture_output=True,
                                 text=True).returncode == 0
    start = subprocess.run(["bash", str(CLUSTER), "start"], env=env, capture_output=True,
                           text=True, timeout=180)
    if start.returncode != 0:
        pytest.skip(f"the local Slurm cluster cannot start (exit {start.returncode}):\n"
                    f"{start.stdout}{start.stderr}")
    match = re.search(r"export SLURM_CONF=(\S+)", start.stdout)
    assert match, start.stdout
    # One JAX compilation cache for every job and the reference run: the quickstart jobs share
    # their shapes (and run.steps), so only the first one compiles the VMC step.
    cache = tmp_path_factory.mktemp("jax-cache")
    env.update(SLURM_CONF=match.group(1), HPCVMC_VENV=str(VENV),
               JAX_COMPILATION_CACHE_DIR=str(cache))
    yield env
    if not was_running:  # leave a cluster that someone else started alone
        subprocess.run(["bash", str(CLUSTER), "stop"], env=env, capture_output=True, timeout=180)


def sbatch(env: dict[str, str], cwd: Path, *args: str) -> str:
    """Submit from `cwd` (the job's working and submit folder); returns the job id.

    The tests submit from their tmp folder, so that nothing (logs, input copies) lands in the
    repository; scripts and inputs are given by absolute paths.
    """
    proc = subprocess.run(["sbatch", "--parsable", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"sbatch {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}"
    return proc.stdout.strip().split(";")[0]


def job_records(env: dict[str, str], job: str) -> list[dict[str, str]]:
    """`scontrol show job -o` as key=value dicts (one per array task); [] if unknown."""
    proc = subprocess.run(["scontrol", "show", "job", "-o", job], env=env, capture_output=True,
                          text=True, timeout=60)
    records = []
    for line in proc.stdout.splitlines():
        if "JobId=" in line:
            records.append(dict(re.findall(r"(\w+)=(\S*)", line)))
    return records


def read_logs(paths: list[Path]) -> str:
    return "\n".join(f"--- {p}:\n{p.read_text() if p.exists() else '(no file)'}" for p in paths)


def wait_for_jobs(env: dict[str, str], job: str, logs: list[Path], timeout: float,
                  count: int = 1) -> list[dict[str, str]]:
    """Poll until every one of `count` records of the job (array tasks) is in a final state."""
    deadline = time.monotonic() + timeout
    records: list[dict[str, str]] = []
    while time.monotonic() < deadline:
        records = job_records(env, job)
        if len(records) == count and all(r.get("JobState") in FINAL_STATES for r in records):
            return records
        time.sleep(1)
    subprocess.run(["scancel", job], env=env, capture_output=True)
    pytest.fail(f"job {job} not finished within {timeout:.0f} s: "
                f"{[(r.get('JobId'), r.get('JobState')) for r in records]}\n{read_logs(logs)}")


def inspect(run_dir: Path) -> dict:
    proc = subprocess.run([str(BIN / "hpcvmc"), "inspect", str(run_dir), "--json"],
                          capture_output=True, text=True, timeout=120, env=_clean_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def history_steps(run_dir: Path) -> list[int]:
    rows = (run_dir / "history.csv").read_text().splitlines()[1:]
    return [int(row.split(",")[0]) for row in rows if row]


def final_params(run_dir: Path) -> dict[str, np.ndarray]:
    """Every dataset under /params of the newest checkpoint, by path."""
    import h5py

    newest = sorted((run_dir / "checkpoints").glob("step_*.h5"))[-1]
    params: dict[str, np.ndarray] = {}
    with h5py.File(newest, "r") as f:
        f["params"].visititems(
            lambda name, obj: params.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset)
            else None)
    return params


def test_usr1_checkpoints_requeues_and_resumes(slurm_env, tmp_path):
    """`sbatch --ntasks=2 slurm/run.sbatch INPUT --set ...` gets USR1 to the batch shell (as
    --signal=B:USR1@... does before the time limit): hpcvmc checkpoints, the job requeues
    itself, resumes under srun --mpi=pmi2 and ends equal to an uninterrupted run."""
    if MPIRUN is None:
        pytest.skip("no mpirun next to this interpreter or on PATH for the reference run")
    steps = STEPS
    # The job reads its own copy of the input, which is edited (broken) once the job has started:
    # the requeued run must still read the input as it was at the first start.
    job_input = tmp_path / "input.toml"
    shutil.copy(QUICKSTART, job_input)
    args = ("--set", f"run.steps={steps}", "--set",
            "run.checkpoint_every=100", *QUICKSTART_TINY)
    out, log = tmp_path / "requeued", tmp_path / "job.out"
    job = sbatch(slurm_env, tmp_path, "--ntasks=2", f"--output={log}", RUN_SBATCH,
                 str(job_input), *args, "--set", f"run.output={out}")
    ref_out, reference = tmp_path / "reference", None

    def wait_for_step(k: int) -> None:
        deadline = time.monotonic() + 180
        while not ((out / "history.csv").exists() and len(history_steps(out)) >= k):
            assert time.monotonic() < deadline, f"no progress\n{read_logs([log])}"
            time.sleep(0.2)

    try:
        # The reference: the same run, uninterrupted, on 2 ranks, outside Slurm, started once the
        # job has compiled its programs (step 1 done), so that it finds them in the cache.
        wait_for_step(1)
        cache = slurm_env["JAX_COMPILATION_CACHE_DIR"]
        reference = subprocess.Popen(
            [MPIRUN, "-n", "2", str(BIN / "hpcvmc"), "run", QUICKSTART, *args,
             "--set", f"run.output={ref_out}"],
            cwd=REPO, env=_clean_env(JAX_COMPILATION_CACHE_DIR=cache), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        # Signal once a few steps are done, so that it lands mid-run.
        wait_for_step(3)
        subprocess.run(["scancel", "--batch", "--signal=USR1", job], env=slurm_env, check=True)
        job_input.write_text("this is not an input file\n")
        (record,) = wait_for_jobs(slurm_env, job, [log], timeout=300)
        ref_output, _ = reference.communicate(timeout=300)
    finally:
        if reference is not None and reference.poll() is None:
            reference.kill()
    text = read_logs([log])
    assert reference.returncode == 0, ref_output
    assert (record["JobState"], record["ExitCode"]) == ("COMPLETED", "0:0"), text
    assert record["Restarts"] == "1", text
    for expected in ("srun --mpi=pmi2", "got USR1", "requeueing job", "using the input as it was",
                     "resuming"):
        assert expected in text, f"'{expected}' not in the job's output:\n{text}"
    assert not list(tmp_path.glob("slurm-*.input.toml")), "the input copy was not removed"
    interrupted_at = int(re.search(r"stopped by signal after step (\d+)", text).group(1))
    assert 3 <= interrupted_at < steps, text
    assert history_steps(out) == list(range(1, steps + 1)), text
    state = inspect(out)
    assert (state["step"], state["n_ranks"], state["slurm_job_id"]) == (steps, 2, job), text
    resumed, uninterrupted = final_params(out), final_params(ref_out)
    assert resumed.keys() == uninterrupted.keys() and resumed
    for name, value in uninterrupted.items():
        np.testing.assert_allclose(resumed[name], value, rtol=1e-8, atol=1e-8, err_msg=name)


def test_sweep_array_writes_one_run_per_value(slurm_env, tmp_path):
    """A 2-task job array from one template: two folders, each finished with its own J2."""
    sweep_dir, values = tmp_path / "sweep_j2", ("0.0", "0.5")
    env = dict(slurm_env, HPCVMC_SWEEP_VALUES=" ".join(values), HPCVMC_SWEEP_DIR=str(sweep_dir),
               HPCVMC_RUN_SCRIPT=RUN_SBATCH)
    logs = [tmp_path / f"array_{i}.out" for i in range(2)]
    array = sbatch(env, tmp_path, "--array=0-1", f"--output={tmp_path}/array_%a.out",
                   str(REPO / "slurm" / "sweep.sbatch"), str(REPO / "jobs" / "sweep_j2.toml"),
                   "--set", "run.steps=4", *TINY)
    records = wait_for_jobs(env, array, logs, timeout=300, count=2)
    text = read_logs(logs)
    job_ids = {r["ArrayTaskId"]: r["JobId"] for r in records}
    assert all((r["JobState"], r["ExitCode"]) == ("COMPLETED", "0:0") for r in records), text
    for task, value in enumerate(values):
        run_dir = sweep_dir / f"J2_{value}"
        recorded = tomllib.loads((run_dir / "input.toml").read_text())
        assert recorded["system"]["J2"] == float(value), text
        assert recorded["run"]["output"] == str(run_dir)
        state = inspect(run_dir)
        assert (state["step"], state["slurm_job_id"]) == (4, job_ids[str(task)]), text
        assert history_steps(run_dir) == [1, 2, 3, 4]
    assert sorted(p.name for p in sweep_dir.iterdir()) == ["J2_0.0", "J2_0.5"]
