"""Rank-0 progress display: a live line on a terminal, plain lines in a batch log."""

from __future__ import annotations

import sys
from typing import Callable, TextIO


def format_energy(mean: float, error: float) -> str:
    """'-8.4512 +- 0.0031' with the digits the error bar supports (at least 4 decimals)."""
    decimals = 4
    if error > 0:
        decimals = max(4, min(10, 2 - int(f"{error:e}".split("e")[1])))
    return f"{mean:.{decimals}f} +- {error:.{decimals}f}"


class Progress:
    """Prints one status per step on rank 0; silent elsewhere.

    Args:
        total: the last step.
        enabled: False on ranks other than 0.
        stream: where to print (default: the current sys.stdout).
        every: in batch mode, print every this many steps (and the last).
        energy_text: formats (mean, error) for the line (default :func:`format_energy`; the
            systems pass theirs, which name the unit).
    """

    def __init__(self, total: int, enabled: bool, stream: TextIO | None = None, every: int = 1,
                 energy_text: Callable[[float, float], str] = format_energy):
        self.energy_text = energy_text
        self.total = total
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stdout
        self.live = enabled and self.stream.isatty()
        self.every = every

    def message(self, text: str) -> None:
        """Print a line of its own (ends the live line first)."""
        if not self.enabled:
            return
        if self.live:
            self.stream.write("\r\033[K")
        self.stream.write(text + "\n")
        self.stream.flush()

    def update(self, step: int, row: dict[str, float]) -> None:
        """Show the state after ``step`` completed steps."""
        if not self.enabled:
            return
        width = len(str(self.total))
        text = (
            f"step {step:>{width}}/{self.total}  E = {self.energy_text(row['energy'], row['error'])}"
            f"  var = {row['variance']:.4g}  acc = {row['acceptance']:.2f}"
            f"  R = {row['r_hat']:.3f}  {row['seconds']:.3f} s/step"
        )
        if self.live:
            done = int(30 * step / max(self.total, 1))
            self.stream.write(f"\r\033[K[{'#' * done}{'.' * (30 - done)}] {text}")
            if step == self.total:
                self.stream.write("\n")
            self.stream.flush()
        elif step % self.every == 0 or step == self.total:
            self.stream.write(text + "\n")
            self.stream.flush()
