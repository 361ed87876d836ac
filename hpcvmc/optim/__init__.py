"""Natural-gradient optimizers (minSR, SR) and their schedules."""
