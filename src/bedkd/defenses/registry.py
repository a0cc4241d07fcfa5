"""Every defense by name: its class (whose role interface says how it is run), its option records
with their CLI prefixes, and its defaults. Drivers (``bedkd bench``) dispatch from here, on the
role class, never on a name.

Defaults beyond each record's own:
* ``bedkd`` starts from the chosen preset (``PRESETS``); ``bedkd-<preset>`` is BeDKD under that
  preset, fixed (no option flags).
* ``kd`` is BeDKD's trust step alone, so it is matched to BeDKD's AKD options of the same run
  (``KDConfig.matching``): the same rows, loss, optimiser settings and epochs.
* ``rap``: its published trigger "cf" is also a BadNets trigger word, so the default here is
  another rare single-token word, "jj", and the defense does not reuse the attacker's trigger.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..options import Options
from .base import DataFilter, InputFilter, Purifier
from .data_filters.bki import BKI, BKIConfig
from .data_filters.cube import CUBE, CUBEConfig
from .data_filters.dmm import DMMConfig
from .input_filters.onion import ONION, ONIONConfig
from .input_filters.rap import RAP, RAPConfig
from .input_filters.strip import STRIP, STRIPConfig
from .purifiers.akd import AKDConfig
from .purifiers.bedkd import PRESETS, BeDKD
from .purifiers.fine_pruning import FinePruning, FinePruningConfig
from .purifiers.finetuning import FineTuning, FineTuningConfig
from .purifiers.kd import KDConfig, KnowledgeDistillation
from .purifiers.nad import NAD, NADConfig
from .scanning import ScanConfig

ROLES: dict[type, str] = {Purifier: "purifier", DataFilter: "data_filter", InputFilter: "input_filter"}
Defaults = Callable[[str, dict], tuple[Options, ...]]     # (BeDKD preset, records of the methods before) -> records


@dataclass(frozen=True)
class Method:
    """A defense: its class, its option records in constructor order, each under a CLI prefix
    (``--<prefix>-<option>``), and how its default records are made."""
    name: str
    cls: type
    configs: tuple[tuple[str, type[Options]], ...]
    defaults: Defaults | None = None     # None: each record's own defaults
    flags: bool = True                   # False: fixed options (a BeDKD preset), no CLI flags

    @property
    def role(self) -> str:
        """purifier, data_filter or input_filter: the role interface ``cls`` implements."""
        return next(name for role, name in ROLES.items() if issubclass(self.cls, role))

    def default_configs(self, preset: str = "reference", before: dict | None = None) -> tuple[Options, ...]:
        if self.defaults is not None:
            return self.defaults(preset, before or {})
        return tuple(cls() for _, cls in self.configs)


BEDKD_CONFIGS = (("dmm", DMMConfig), ("akd", AKDConfig), ("scan", ScanConfig))


def _kd_defaults(preset: str, before: dict) -> tuple[Options, ...]:
    akd = before["bedkd"][1] if "bedkd" in before else PRESETS[preset][1]
    return (KDConfig.matching(akd),)


def _fixed_preset(preset: str) -> Method:
    return Method(f"bedkd-{preset}", BeDKD, BEDKD_CONFIGS, lambda _, __: PRESETS[preset], flags=False)


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("bedkd", BeDKD, BEDKD_CONFIGS, lambda preset, _: PRESETS[preset]),
    Method("finetune", FineTuning, (("finetune", FineTuningConfig),)),
    Method("fineprune", FinePruning, (("fineprune", FinePruningConfig),)),
    Method("kd", KnowledgeDistillation, (("kd", KDConfig),), _kd_defaults),
    Method("nad", NAD, (("nad", NADConfig),)),
    Method("bki", BKI, (("bki", BKIConfig),)),
    Method("cube", CUBE, (("cube", CUBEConfig),)),
    Method("onion", ONION, (("onion", ONIONConfig),)),
    Method("strip", STRIP, (("strip", STRIPConfig),)),
    Method("rap", RAP, (("rap", RAPConfig),), lambda _, __: (RAPConfig(trigger="jj"),)),
    *(_fixed_preset(preset) for preset in PRESETS),
)}
