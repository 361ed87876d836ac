"""The version of hpcvmc (written into checkpoints and exported states)."""

__version__ = "0.1.0"
