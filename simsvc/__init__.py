"""simsvc: simulation experiments as a service."""

__version__ = "0.1.0"


class StartupError(Exception):
    """Why the service cannot start, said in one line to the operator (no traceback)."""
