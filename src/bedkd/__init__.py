"""bedkd: detect poisoned training data and purify backdoored text classifiers (BeDKD)."""
__version__ = "0.1.0"

from .errors import BedkdError, ConfigError, InputError  # noqa: E402

__all__ = ["__version__", "BedkdError", "ConfigError", "InputError"]
