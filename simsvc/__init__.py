"""simsvc: simulation experiments as a service."""

__version__ = "0.1.0"
