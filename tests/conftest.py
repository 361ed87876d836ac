"""Shared pytest set-up: one BLAS thread (the tests share 2 cores with MPI ranks and XLA's own
threads; spinning OpenBLAS threads slowed small LAPACK calls tenfold) and float64 everywhere
(the tests compare with exact references)."""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402  (after the BLAS setting, which is read when numpy loads)

jax.config.update("jax_enable_x64", True)
