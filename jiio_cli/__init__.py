"""jiio: joint inference and input optimization in deep equilibrium networks."""

__version__ = "0.1.0"
