"""Fault injection: two runs on one folder, kill -9, a full disk, a read-only folder, signals
during a long step, checkpoints with missing or malformed parts, out-of-range values, outputs
that must not be replaced. Every failure is one line on stderr with the documented exit code,
and nothing valid is lost."""

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import jax
import numpy as np
import pytest

from hpcvmc import checkpoint as ckpt
from hpcvmc import resources, runlock
from hpcvmc.cli import main
from hpcvmc.config import InputError, load
from test_cli import history, tiny_input

REPO = Path(__file__).parents[1]
QUICKSTART = REPO / "jobs" / "quickstart.toml"


def one_error_line(err: str) -> str:
    """The single line on stderr (fails if there are more, or a traceback)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err[-3000:]
    assert lines[0].startswith("hpcvmc: error: "), lines[0]
    return lines[0]


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            h.update(str(f.relative_to(folder)).encode() + f.read_bytes())
    return h.hexdigest()


def env(**extra: str) -> dict[str, str]:
    out = dict(os.environ, PYTHONUNBUFFERED="1", JAX_PLATFORMS="cpu", OPENBLAS_NUM_THREADS="1")
    out.update(extra)
    return out


def n_rows(folder: Path) -> int:
    """Steps logged in history.csv so far."""
    csv = folder / "history.csv"
    return len(csv.read_text().splitlines()) - 1 if csv.is_file() else 0


def wait_for(predicate, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def two_steps(tmp_path_factory) -> Path:
    """A TINY run stopped after its step-2 checkpoint (copied by the tests that resume it)."""
    tmp = tmp_path_factory.mktemp("two_steps")
    assert main(["run", str(tiny_input(tmp)), "--set", "run.steps=2"]) == 0
    return tmp / "run"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> tuple[Path, Path]:
    """TINY's 4 steps in one go with a final measurement: (folder holding run/, input)."""
    tmp = tmp_path_factory.mktemp("finished")
    path = tiny_input(tmp, **{"checkpoint_every = 2": "checkpoint_every = 2\nmeasure_steps = 1"})
    assert main(["run", str(path)]) == 0
    return tmp, path


def copy_run(source: Path, tmp_path: Path) -> Path:
    """TINY's input for ``tmp_path/run`` with ``source`` copied there; returns the input."""
    subprocess.run(["cp", "-r", str(source), str(tmp_path / "run")], check=True)
    return tiny_input(tmp_path)


# ------------------------------------------------------------------------------------------------
# The run-folder lock
# ------------------------------------------------------------------------------------------------
def test_second_run_refused_first_unharmed_and_kill_9_leaves_no_stale_lock(tmp_path):
    """Run A holds the folder; run B on it exits 2 naming the folder and A (host, pid, Slurm
    job); after kill -9 of A the lock is gone and a third run resumes with no duplicate step."""
    path = tiny_input(tmp_path, **{"steps = 4": "steps = 100000"})
    folder = tmp_path / "run"
    lock = folder / runlock.LOCK_FILE
    a = subprocess.Popen([sys.executable, "-m", "hpcvmc", "run", str(path)], cwd=REPO,
                         env=env(SLURM_JOB_ID="4242"), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: lock.is_file() and "4242" in lock.read_text())
        b = subprocess.run([sys.executable, "-m", "hpcvmc", "run", str(path)], cwd=REPO, env=env(),
                           capture_output=True, text=True, timeout=240)
        assert b.returncode == 2
        line = one_error_line(b.stderr)
        assert line.startswith(f"hpcvmc: error: {folder}: run.output is in use by another hpcvmc run")
        assert f"pid {a.pid}, Slurm job 4242" in line
        assert a.poll() is None  # A goes on
        wait_for(lambda: n_rows(folder) >= 3)
    finally:
        a.kill()
        a.wait()
    done = n_rows(folder)
    assert main(["run", str(path), "--set", f"run.steps={done + 2}"]) == 0  # the kernel dropped A's lock
    steps = history(folder)["step"]
    np.testing.assert_array_equal(steps, np.arange(1, len(steps) + 1))  # no duplicate, no gap
    assert lock.read_text() == ""  # a clean release empties the record


def test_lock_refusal_leaves_no_folder_and_names_holder():
    """acquire() directly: the record, the refusal, the release of a folder it created."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "new"
        held = runlock.acquire(folder, print)
        assert (folder / runlock.LOCK_FILE).read_text().strip() == runlock.holder()
        with pytest.raises(InputError, match=f"pid {os.getpid()}"):
            runlock.acquire(folder, print)  # another open file description: refused
        held.release()
        assert not folder.exists()  # created by the lock and holding nothing else


# ------------------------------------------------------------------------------------------------
# Values checked before any work
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["--set", "sampler.n_samples=1000000000000", "--set", "sampler.n_chains=1000"],
     "sampler.n_samples = 1000000000000: one step needs about"),
    (["--set", "system.L=1000000"], "system.L = 1000000: one step needs about"),
    (["--set", "run.seed=99999999999999999999999"],
     "run.seed = 99999999999999999999999 does not fit in a 64-bit integer"),
    (["--set", "optimizer.momentum=1.0"], "optimizer.momentum = 1.0 must be < 1 (range [0, 1))"),
    (["--ranks", "0"], "argument --ranks: must be >= 1, got 0"),
    (["--ranks", "-1"], "argument --ranks: must be >= 1, got -1"),
])
def test_validate_refuses_with_one_line(args, message, capsys):
    assert main(["validate", str(QUICKSTART)] + args) == 2
    err = capsys.readouterr().err
    assert message in one_error_line(err)


def test_run_refuses_absurd_sizes_before_creating_anything(tmp_path, capsys):
    path = tiny_input(tmp_path)
    start = time.perf_counter()
    assert main(["run", str(path), "--set", "sampler.n_samples=800000000000"]) == 2
    assert time.perf_counter() - start < 5  # before MPI, JAX compilation, the output folder
    assert "sampler.n_samples = 800000000000: one step needs about" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_memory_estimate_terms_and_override(tmp_path, monkeypatch, capsys):
    """The O-matrix term is 16 n_samples P with the model's true parameter count (RBM alpha = 1
    on 16 sites: 2 (16 * 16 + 16)); HPCVMC_MEMORY decides what is available."""
    config = load(tiny_input(tmp_path), overrides=["sampler.n_samples=512"])
    from hpcvmc.build import system_and_model

    network = resources.network_size(system_and_model(config)[1], (16,))
    assert network.n_params == 2 * (16 * 16 + 16)
    terms = {what: b for what, _, b in resources.step_memory(config, 2, network)}
    assert terms["O matrix"] == 16 * 256 * network.n_params  # 256 samples per rank
    assert terms["sr solver"] == 24 * network.n_params ** 2  # P = 544 < 2 N_s = 1024
    monkeypatch.setenv("HPCVMC_MEMORY", "1M")
    assert main(["validate", str(QUICKSTART)]) == 2
    assert "more than the 0.000977 GiB available (HPCVMC_MEMORY)" in capsys.readouterr().err
    monkeypatch.setenv("HPCVMC_MEMORY", "64G")
    assert main(["validate", str(QUICKSTART)]) == 0


def test_more_electrons_than_plane_waves(capsys):
    moire = REPO / "jobs" / "moire_9sites_eps10.toml"
    assert main(["validate", str(moire), "--set", "system.n_electrons=80",
                 "--set", "model.g_max=1.0"]) == 2
    assert ("system.n_electrons = 80: 80 electrons of one spin need as many orbitals, but "
            "model.g_max = 1.0 gives 37 plane waves") in one_error_line(capsys.readouterr().err)


def test_gpu_platform_without_gpu(tmp_path, capsys):
    try:
        has_gpu = bool(jax.devices("gpu"))
    except RuntimeError:
        has_gpu = False
    if has_gpu:
        pytest.skip("this machine has a GPU")
    assert main(["run", str(tiny_input(tmp_path)), "--set", "run.platform=gpu"]) == 2
    assert "run.platform = 'gpu': no usable GPU" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


def test_one_line_for_argparse_restart_and_system_only_input(tmp_path, capsys):
    path = tiny_input(tmp_path)
    assert main(["run", str(path), "--bogus"]) == 2
    assert one_error_line(capsys.readouterr().err) == "hpcvmc: error: unrecognized arguments: --bogus"
    assert main(["run", str(path), "--restart", str(tmp_path)]) == 2
    assert one_error_line(capsys.readouterr().err) == (
        f"hpcvmc: error: --restart {tmp_path}: not a checkpoint file")
    system_only = tmp_path / "system.toml"
    system_only.write_text('[system]\ntype = "j1j2"\nL = 4\nJ2 = 0.5\n')
    assert main(["exact", str(system_only), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["energy"] == pytest.approx(-8.45792335, abs=1e-7)


# ------------------------------------------------------------------------------------------------
# File-system faults
# ------------------------------------------------------------------------------------------------
def test_disk_full_during_checkpoint_then_resume(two_steps, finished_run, tmp_path,
                                                 monkeypatch, capsys):
    """ENOSPC at the fsync of the step-4 checkpoint: exit 74 with one line naming the file, no
    temporary left, step 2 intact; run again: resumes from step 2 and ends bit-identical to an
    uninterrupted run (``finished_run``: TINY's 4 steps in one go)."""
    path = copy_run(two_steps, tmp_path)
    real_fsync = os.fsync

    def full_disk(fd: int) -> None:
        if ".step_" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk)
    capsys.readouterr()
    assert main(["run", str(path)]) == 74
    folder = tmp_path / "run" / "checkpoints"
    assert one_error_line(capsys.readouterr().err) == (
        f"hpcvmc: error: {folder / 'step_00000004.h5'}: cannot write (No space left on device)")
    assert sorted(p.name for p in folder.iterdir()) == ["step_00000002.h5"]
    assert ckpt.read(folder / "step_00000002.h5").step == 2
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert main(["run", str(path)]) == 0
    assert "resuming" in capsys.readouterr().out
    a, b = history(finished_run[0] / "run"), history(tmp_path / "run")
    np.testing.assert_array_equal(a["step"], b["step"])
    np.testing.assert_array_equal(a["energy"], b["energy"])


def test_read_only_folder(two_steps, tmp_path, monkeypatch, capsys):
    """A read-only run folder (EROFS when the lock file is opened for writing): exit 74, one
    line naming the file, the folder unchanged."""
    path = copy_run(two_steps, tmp_path)
    before = digest(tmp_path / "run")
    real_open = os.open

    def read_only(file, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and str(tmp_path / "run") in str(file):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real_open(file, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    capsys.readouterr()
    assert main(["run", str(path)]) == 74
    assert one_error_line(capsys.readouterr().err) == (
        f"hpcvmc: error: {tmp_path / 'run' / runlock.LOCK_FILE}: cannot write "
        "(Read-only file system)")
    monkeypatch.setattr(os, "open", real_open)
    assert digest(tmp_path / "run") == before


def test_history_write_failure_keeps_the_old_file(two_steps, tmp_path, monkeypatch, capsys):
    """A failed rewrite of history.csv at start (EACCES on its temporary): exit 74, the old
    history.csv and input.toml unchanged, no temporary left."""
    path = copy_run(two_steps, tmp_path)
    csv = (tmp_path / "run" / "history.csv").read_bytes()
    import builtins

    real_open = builtins.open

    def denied(file, mode="r", *args, **kwargs):
        if ".history.csv.tmp" in str(file):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", denied)
    capsys.readouterr()
    assert main(["run", str(path)]) == 74
    assert one_error_line(capsys.readouterr().err) == (
        f"hpcvmc: error: {tmp_path / 'run' / 'history.csv'}: cannot write (Permission denied)")
    assert (tmp_path / "run" / "history.csv").read_bytes() == csv
    assert not list((tmp_path / "run").glob(".*.tmp*"))


# ------------------------------------------------------------------------------------------------
# Signals during a long step
# ------------------------------------------------------------------------------------------------
SLOW_STEP = """
import sys, time
import numpy as np
import jax
from jax.experimental import io_callback
import hpcvmc.driver as driver
from hpcvmc.cli import main

made = driver.make_step
def make_step(setup):
    step = made(setup)
    def slow(*args):
        out = step(*args)
        # 60 s inside the computation: the main thread waits in XLA, not in Python
        pause = io_callback(lambda: (print("step running", flush=True), time.sleep(60),
                                     np.float64(0))[2], jax.ShapeDtypeStruct((), np.float64))
        return out._replace(acceptance=out.acceptance + pause)
    return jax.jit(slow)
driver.make_step = make_step
sys.exit(main(sys.argv[1:]))
"""


def test_second_sigterm_ends_a_long_step_within_3_s(two_steps, tmp_path):
    path = copy_run(two_steps, tmp_path)
    before = ckpt.read(ckpt.list_checkpoints(tmp_path / "run")[0])
    proc = subprocess.Popen([sys.executable, "-c", SLOW_STEP, "run", str(path)], cwd=REPO,
                            env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = ""
    while "step running" not in line:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()[-2000:]
    proc.send_signal(signal.SIGTERM)
    time.sleep(2.5)  # beyond the 2 s grace for duplicate deliveries
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    assert time.monotonic() - sent < 3
    assert proc.returncode == 128 + signal.SIGTERM
    err = proc.stderr.read()
    assert "got SIGTERM: finishing the step, then checkpointing" in err
    assert "second signal SIGTERM: exiting now" in err
    newest = ckpt.list_checkpoints(tmp_path / "run")
    assert [f.name for f in newest] == ["step_00000002.h5"]  # the last checkpoint stays valid
    np.testing.assert_array_equal(ckpt.read(newest[0]).history["energy"], before.history["energy"])


# ------------------------------------------------------------------------------------------------
# Corrupt checkpoints
# ------------------------------------------------------------------------------------------------
def _rechecksum(f: h5py.File) -> None:
    data = {}
    for group in ("params", "opt_state", "sampler", "history"):
        if group in f:
            f[group].visititems(lambda p, o, g=group: data.__setitem__(f"{g}/{p}", o[()])
                                if isinstance(o, h5py.Dataset) else None)
    f["meta"].attrs["checksum"] = ckpt.checksum(data)


def _first_dataset(group: h5py.Group) -> str:
    names = []
    group.visititems(lambda p, o: names.append(p) if isinstance(o, h5py.Dataset) else None)
    return names[0]


def _wrong_shape_params(f: h5py.File) -> None:
    name = _first_dataset(f["params"])
    del f["params"][name]
    f["params"].create_dataset(name, data=np.zeros(3))
    _rechecksum(f)


def _two_d_history(f: h5py.File) -> None:
    data = f["history/energy"][()]
    del f["history/energy"]
    f["history"].create_dataset("energy", data=np.stack([data, data]))
    _rechecksum(f)


BREAKAGES = {
    "meta attribute step missing": lambda f: f["meta"].attrs.__delitem__("step"),
    "meta attribute checksum missing": lambda f: f["meta"].attrs.__delitem__("checksum"),
    "step is a string": lambda f: f["meta"].attrs.__setitem__("step", "four"),
    "input_toml missing": lambda f: f["meta"].__delitem__("input_toml"),
    "rng group missing": lambda f: f.__delitem__("rng"),
    "a parameter missing": lambda f: f["params"].__delitem__(_first_dataset(f["params"])),
    "history 2-D (checksum matches)": _two_d_history,
    "parameter of another shape (checksum matches)": _wrong_shape_params,
}


@pytest.mark.parametrize("kind", BREAKAGES)
def test_broken_newest_checkpoint_is_skipped_by_name(finished_run, kind, tmp_path, capsys):
    """inspect: the broken step-4 file is reported by name and step 2 is shown."""
    source, _ = finished_run
    run_dir = tmp_path / "run"
    subprocess.run(["cp", "-r", str(source / "run"), str(run_dir)], check=True)
    newest = ckpt.list_checkpoints(run_dir)[0]
    with h5py.File(newest, "r+") as f:
        BREAKAGES[kind](f)
    capsys.readouterr()
    assert main(["inspect", str(run_dir), "--json"]) == 0
    captured = capsys.readouterr()
    if kind.startswith("parameter of another shape"):  # only restoring finds it
        return
    assert f"hpcvmc: skipping checkpoint {newest}: " in captured.err
    assert "\n" not in captured.err.strip()
    assert json.loads(captured.out)["step"] == 2


@pytest.mark.parametrize("kind", ["parameter of another shape (checksum matches)"])
def test_run_measure_and_init_params_fall_back_to_the_previous(finished_run, kind, tmp_path,
                                                                capsys):
    """The hardest kind: a file that reads (its checksum matches) but whose parameters do not
    fit the model; the others fail earlier, in ckpt.read (test above and below)."""
    source, path = finished_run
    run_dir = tmp_path / "run"
    subprocess.run(["cp", "-r", str(source / "run"), str(run_dir)], check=True)
    newest = ckpt.list_checkpoints(run_dir)[0]
    with h5py.File(newest, "r+") as f:
        BREAKAGES[kind](f)
    capsys.readouterr()
    assert main(["measure", str(run_dir), "--steps", "1"]) == 0
    out = capsys.readouterr().out
    assert f"hpcvmc: skipping checkpoint {newest}" in out and "parameters of step 2" in out
    fresh = tiny_input(tmp_path, "fresh", **{"steps = 4": "steps = 1"})
    assert main(["run", str(fresh), "--set", f"run.init_params={json.dumps(str(run_dir))}"]) == 0
    assert "(step 2 of that run)" in capsys.readouterr().out
    moved = tiny_input(tmp_path, "moved")
    (tmp_path / "moved").mkdir()
    subprocess.run(["cp", "-r", str(run_dir) + "/.", str(tmp_path / "moved")], check=True)
    (tmp_path / "moved" / "final.json").unlink()
    assert main(["run", str(moved)]) == 0
    assert "resuming" in capsys.readouterr().out and len(history(tmp_path / "moved")) == 4


def test_every_breakage_is_a_checkpoint_error(finished_run, tmp_path):
    source, _ = finished_run
    for kind, breakage in BREAKAGES.items():
        copy = tmp_path / f"{abs(hash(kind))}.h5"
        copy.write_bytes(ckpt.list_checkpoints(source / "run")[0].read_bytes())
        with h5py.File(copy, "r+") as f:
            breakage(f)
        if kind.startswith("parameter of another shape"):
            continue  # a valid file for another model: restore_tree refuses it
        with pytest.raises(ckpt.CheckpointError, match=str(copy)):
            ckpt.read(copy)


# ------------------------------------------------------------------------------------------------
# Named outputs are not replaced
# ------------------------------------------------------------------------------------------------
def test_named_outputs_need_force(finished_run, tmp_path, monkeypatch, capsys):
    """plot --out, attention --png, transition --png, reference --out: an existing file is
    refused before any work (the work functions are replaced by ones that fail the test)."""
    import hpcvmc.analysis.sampling
    import hpcvmc.analysis.transition
    import hpcvmc.plotting
    import hpcvmc.reference.bped
    import hpcvmc.reference.hf_search

    def no_work(*args, **kwargs):
        raise AssertionError("work started before the output check")

    for module, name in ((hpcvmc.plotting, "plot_energy"),
                         (hpcvmc.analysis.sampling, "sample_from_checkpoint"),
                         (hpcvmc.analysis.transition, "transition_table"),
                         (hpcvmc.reference.hf_search, "run_hf"),
                         (hpcvmc.reference.bped, "run_bped")):
        monkeypatch.setattr(module, name, no_work)
    source, _ = finished_run
    existing = tmp_path / "mine.png"
    existing.write_bytes(b"keep me")
    cases = [
        ["plot", str(source / "run"), "--out", str(existing)],
        ["attention", str(source / "run"), "--png", str(existing)],
        ["transition", str(source / "run"), "--png", str(existing)],
        ["reference", "hf", str(REPO / "jobs" / "moire_9sites_eps10.toml"), "--out",
         str(existing)],
        ["reference", "bped", str(REPO / "jobs" / "moire_9sites_eps10.toml"), "--out",
         str(existing)],
    ]
    for args in cases:
        assert main(args) == 2, args
        assert one_error_line(capsys.readouterr().err) == (
            f"hpcvmc: error: {existing}: exists; pass --force to replace it")
        assert existing.read_bytes() == b"keep me"
    monkeypatch.undo()
    assert main(["plot", str(source / "run"), "--out", str(existing), "--force"]) == 0
    assert existing.read_bytes()[:4] == b"\x89PNG"


# ------------------------------------------------------------------------------------------------
# Under mpirun -n 2
# ------------------------------------------------------------------------------------------------
def test_two_ranks_print_one_line_and_learn_of_a_lock_refusal(tmp_path):
    """An input error is printed once (rank 0), not once per rank; a folder locked by another
    process is refused on rank 0 and every rank exits 2 (no hang)."""
    from test_mpi import MPIRUN, mpirun

    if MPIRUN is None:
        pytest.skip("no mpirun on PATH")
    path = tiny_input(tmp_path)
    proc = mpirun(2, sys.executable, "-m", "hpcvmc", "run", str(path), "--set",
                  "optimizer.momentum=1.0", timeout=240)
    assert proc.returncode == 2
    assert one_error_line(proc.stderr) == (
        "hpcvmc: error: optimizer.momentum = 1.0 must be < 1 (range [0, 1))")
    held = runlock.acquire(tmp_path / "run", print)
    try:
        proc = mpirun(2, sys.executable, "-m", "hpcvmc", "run", str(path), timeout=240)
    finally:
        held.release()
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = one_error_line(proc.stderr)
    assert f"{tmp_path / 'run'}: run.output is in use by another hpcvmc run" in line
    assert f"pid {os.getpid()}" in line
    assert not (tmp_path / "run").exists()  # nothing was written; the lock's folder went again
