"""hpcvmc: variational Monte Carlo with neural-network wave functions, from a laptop to Slurm.

The Python API (:mod:`hpcvmc.api`) and the component registry (:mod:`hpcvmc.registry`) are
available from the package itself: ``hpcvmc.load_config``, ``hpcvmc.run``,
``hpcvmc.read_history``, ``hpcvmc.Component``, ``hpcvmc.register``, ...
"""

from hpcvmc.api import config_from_tables, load_config, read_final, read_history, run
from hpcvmc.errors import InputError
from hpcvmc.registry import Component, register

__version__ = "0.1.0"

__all__ = ["Component", "InputError", "config_from_tables", "load_config", "read_final",
           "read_history", "register", "run"]
