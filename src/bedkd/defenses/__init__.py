"""Defenses, one file each, grouped by role: detectors find poisoned training rows, transformers
take a model and return a purified one."""
from .bedkd import PRESETS, AKDConfig, BeDKD, PurifyResult
from .dmm import Detection, DMMConfig, DMMDetector

__all__ = ["AKDConfig", "BeDKD", "PurifyResult", "PRESETS", "DMMConfig", "DMMDetector", "Detection"]
