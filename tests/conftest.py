"""Shared pytest set-up: one BLAS thread (the tests share 2 cores with MPI ranks and XLA's own
threads; spinning OpenBLAS threads slowed small LAPACK calls tenfold), float64 everywhere (the
tests compare with exact references) and one persistent JAX compilation cache for the session.

The cache folder is made once per session and handed to every process the tests start
(``hpcvmc`` subprocesses, ``mpirun`` ranks) through ``JAX_COMPILATION_CACHE_DIR``: the many
short runs of the same small models compile each program once instead of once per process
(a 2-step quickstart run: 56 s of CPU without the cache, 20 s with it). Compiled programs are
the same either way, so no number changes.
"""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # the outermost pytest owns the folder
    _cache = tempfile.mkdtemp(prefix="hpcvmc-test-jax-cache-")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax  # noqa: E402  (after the BLAS setting, which is read when numpy loads)

jax.config.update("jax_enable_x64", True)
