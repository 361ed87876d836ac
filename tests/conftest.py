"""Shared pytest set-up: one BLAS thread (the tests share 2 cores with MPI ranks and XLA's own
threads; spinning OpenBLAS threads slowed small LAPACK calls tenfold), float64 everywhere (the
tests compare with exact references) and one persistent JAX compilation cache for the session.

The cache folder is made once per session and handed to every process the tests start
(``hpcvmc`` subprocesses, ``mpirun`` ranks) through ``JAX_COMPILATION_CACHE_DIR``: the many
short runs of the same small models compile each program once instead of once per process
(a 2-step quickstart run: 56 s of CPU without the cache, 20 s with it). Compiled programs are
the same either way, so no number changes. Launched processes store every program (their
small ones too, ``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0``: each launch reuses those of the
launches before it); the test processes themselves store only programs that took
``IN_PROCESS_MIN_COMPILE_SECONDS`` or more to compile: their op-by-op dispatch compiles
thousands of tiny programs (5,592 compilations in the in-process files, most of them taking
hundredths of a second), whose writes and look-ups cost more than they save (test_vit,
test_ewald, test_psiformer and test_laplacian on two workers, quiet machine, four runs one after
the other: 154 and 156 s storing every program, 144 and 137 s with the 1 s threshold; on
test_deduplication, test_cli, test_sampling and test_vs_netket no difference beyond the noise:
196 and 165 s against 181 and 178 s).

Every test process, and every process the tests launch, compiles with XLA's back-end
optimization level 0 (``UNOPTIMIZED_BACKEND``): about 40 % less compile time, which is most of
a short test. The tests compare numbers computed alike (R ranks with 1, resumed with
uninterrupted, float32 with float64) or against references with tolerances far above the last
bits that the level moves; the one check of exact bits, the float64 path of
``test_mixed_precision``, holds numbers recorded at this level (which were checked against the
default level's when recorded).

README's test command shares the files between two pytest workers (pytest-xdist,
``-n 2 --dist loadfile --no-loadscope-reorder``), which take the files in collection order. The
files whose tests launch whole jobs (mpirun, sbatch, the GPU check script) take minutes each, so
they are collected first, to run beside the many short files instead of alone at the end.
Without ``--no-loadscope-reorder`` pytest-xdist (3.x) reorders the files by their number of
tests, largest first, which puts exactly these files (1 to 7 tests each) last: the GPU check and
Slurm files then ran side by side in the last minutes of the CI.
"""

import atexit
import os
import shutil
import tempfile

import pytest

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # the outermost pytest owns the folder
    _cache = tempfile.mkdtemp(prefix="hpcvmc-test-jax-cache-")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
UNOPTIMIZED_BACKEND = "--xla_backend_optimization_level=0"
if UNOPTIMIZED_BACKEND not in os.environ.get("XLA_FLAGS", ""):  # read when jax's backend starts
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {UNOPTIMIZED_BACKEND}".strip()
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax  # noqa: E402  (after the BLAS setting, which is read when numpy loads)

IN_PROCESS_MIN_COMPILE_SECONDS = 1.0
jax.config.update("jax_enable_x64", True)
jax.config.update("jax_persistent_cache_min_compile_time_secs", IN_PROCESS_MIN_COMPILE_SECONDS)


LONG_FILES = ("test_mpi.py", "test_slurm.py", "test_gpu_check.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests of LONG_FILES first, in that order; all else in collection order."""
    items.sort(key=lambda item: (LONG_FILES + (item.path.name,)).index(item.path.name))
