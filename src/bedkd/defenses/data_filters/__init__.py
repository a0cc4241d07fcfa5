"""Find the poisoned rows of a suspicious training set."""
from .bki import BKI, BKIConfig
from .cube import CUBE, CUBEConfig
from .dmm import Detection, DMMConfig, DMMDetector
from .filter_metrics import filter_metrics

__all__ = ["DMMDetector", "DMMConfig", "Detection", "BKI", "BKIConfig", "CUBE", "CUBEConfig", "filter_metrics"]
