"""Shared pytest set-up: float64 everywhere (the tests compare with exact references)."""

import jax

jax.config.update("jax_enable_x64", True)
