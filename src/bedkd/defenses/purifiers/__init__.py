"""Model in, purified model out (the input model is never modified)."""
from .bedkd import PRESETS, AKDConfig, BeDKD, PurifyResult
from .fine_pruning import FinePruning, FinePruningConfig
from .finetuning import FineTuning, FineTuningConfig
from .kd import KDConfig, KnowledgeDistillation
from .nad import NAD, NADConfig

__all__ = ["BeDKD", "AKDConfig", "PRESETS", "PurifyResult", "FineTuning", "FineTuningConfig", "FinePruning",
           "FinePruningConfig", "KnowledgeDistillation", "KDConfig", "NAD", "NADConfig"]
