"""Model in, purified model out (the input model is never modified)."""
from .akd import AKDConfig
from .bedkd import DEFAULT_PRESET, PRESETS, BeDKD
from .fine_pruning import FinePruning, FinePruningConfig
from .finetuning import FineTuning, FineTuningConfig
from .kd import KDConfig, KnowledgeDistillation
from .nad import NAD, NADConfig

__all__ = ["BeDKD", "AKDConfig", "PRESETS", "DEFAULT_PRESET", "FineTuning", "FineTuningConfig", "FinePruning",
           "FinePruningConfig", "KnowledgeDistillation", "KDConfig", "NAD", "NADConfig"]
