"""Tasks: each builds input-optimisation problems from data, a training step and metrics."""
