"""Screen inputs at inference time: rewrite them (ONION) or reject them (STRIP, RAP)."""
from .onion import ONION, ONIONConfig
from .rap import RAP, RAPConfig
from .screening_eval import evaluate_screened
from .strip import STRIP, STRIPConfig

__all__ = ["ONION", "ONIONConfig", "STRIP", "STRIPConfig", "RAP", "RAPConfig", "evaluate_screened"]
