"""Analysis of trained wave functions (attention maps, ...)."""
