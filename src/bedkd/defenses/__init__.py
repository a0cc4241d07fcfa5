"""Defenses, one file each, in one folder per role (interfaces in ``base.py``):

* ``purifiers/``     model in, purified model out: BeDKD, fine-tuning, fine-pruning, KD, NAD
* ``data_filters/``  find poisoned training rows: DMM (BeDKD's detector), BKI, CUBE
* ``input_filters/`` screen inputs at inference time: ONION, STRIP, RAP
"""
from .scanning import ScanConfig
from .base import DataFilter, Filtered, InputFilter, Purified, Purifier, Screened
from .data_filters import BKI, CUBE, BKIConfig, CUBEConfig, Detection, DMMConfig, DMMDetector, filter_metrics
from .input_filters import ONION, RAP, STRIP, ONIONConfig, RAPConfig, STRIPConfig, evaluate_screened
from .purifiers import (DEFAULT_PRESET, NAD, PRESETS, AKDConfig, BeDKD, FinePruning, FinePruningConfig, FineTuning,
                        FineTuningConfig, KDConfig, KnowledgeDistillation, NADConfig)

__all__ = ["Purifier", "Purified", "DataFilter", "Filtered", "InputFilter", "Screened",
           "BeDKD", "AKDConfig", "PRESETS", "DEFAULT_PRESET", "ScanConfig", "FineTuning", "FineTuningConfig", "FinePruning",
           "FinePruningConfig", "KnowledgeDistillation", "KDConfig", "NAD", "NADConfig",
           "DMMDetector", "DMMConfig", "Detection", "BKI", "BKIConfig", "CUBE", "CUBEConfig", "filter_metrics",
           "ONION", "ONIONConfig", "STRIP", "STRIPConfig", "RAP", "RAPConfig", "evaluate_screened"]
