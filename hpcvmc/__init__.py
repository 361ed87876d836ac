"""hpcvmc: variational Monte Carlo with neural-network wave functions, from a laptop to Slurm."""

__version__ = "0.1.0"
