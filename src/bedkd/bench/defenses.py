"""The defenses ``bedkd bench`` runs, by role, and how one is run on one victim.

* purifier: model in, model out; evaluated like the victim.
* data filter: drops training rows; the victim is retrained on the rest (same attack training).
* input filter: fitted on the clean pool; rejected clean inputs count as errors (see
  ``defenses.screening_eval``), and the false rejection rate is reported.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass, field
from typing import Callable

from ..data import LabeledTexts, per_class_split
from ..defenses import PRESETS, AKDConfig, BeDKD, DMMConfig, ScanConfig
from ..defenses.data_filters.bki import BKI, BKIConfig
from ..defenses.data_filters.cube import CUBE, CUBEConfig
from ..defenses.data_filters.filter_metrics import filter_metrics
from ..defenses.purifiers.fine_pruning import FinePruning, FinePruningConfig
from ..defenses.purifiers.finetuning import FineTuning, FineTuningConfig
from ..defenses.purifiers.kd import KDConfig, KnowledgeDistillation
from ..defenses.purifiers.nad import NAD, NADConfig
from ..defenses.input_filters.onion import ONION, ONIONConfig
from ..defenses.input_filters.rap import RAP, RAPConfig
from ..defenses.input_filters.screening_eval import evaluate_screened
from ..defenses.input_filters.strip import STRIP, STRIPConfig
from ..errors import ConfigError
from ..evaluation import evaluate
from ..modeling import Classifier
from ..modeling.language_model import load_language_model
from ..options import Options


@dataclass
class Cell:
    """Everything a defense sees in one benchmark cell."""
    victim: Classifier
    clean_pool: LabeledTexts          # the defender's clean data (the budget is drawn from it)
    suspect: LabeledTexts             # the suspicious training set the victim was trained on
    poisoned_rows: list[int]          # ground truth, only for detection metrics
    test: LabeledTexts
    test_poison: LabeledTexts | None  # None on the no-attack row
    retrain: Callable[[list[int]], Classifier] | None = None   # a victim trained on these suspect rows only
    progress: bool = False
    seed: int = 0


@dataclass(frozen=True)
class Method:
    """A defense the bench knows: its role, class and option records, each under a CLI prefix
    (``--<prefix>-<option>``); the constructor takes the records in this order."""
    name: str
    role: str                              # purifier | data_filter | input_filter
    cls: type
    configs: tuple[tuple[str, type[Options]], ...]


BEDKD_CONFIGS = (("dmm", DMMConfig), ("akd", AKDConfig), ("scan", ScanConfig))
METHODS: dict[str, Method] = {m.name: m for m in (
    Method("bedkd", "purifier", BeDKD, BEDKD_CONFIGS),
    Method("finetune", "purifier", FineTuning, (("finetune", FineTuningConfig),)),
    Method("fineprune", "purifier", FinePruning, (("fineprune", FinePruningConfig),)),
    Method("kd", "purifier", KnowledgeDistillation, (("kd", KDConfig),)),
    Method("nad", "purifier", NAD, (("nad", NADConfig),)),
    Method("bki", "data_filter", BKI, (("bki", BKIConfig),)),
    Method("cube", "data_filter", CUBE, (("cube", CUBEConfig),)),
    Method("onion", "input_filter", ONION, (("onion", ONIONConfig),)),
    Method("strip", "input_filter", STRIP, (("strip", STRIPConfig),)),
    Method("rap", "input_filter", RAP, (("rap", RAPConfig),)),
)}
NONE = "none"


@dataclass
class DefenseSpec:
    """A configured defense of one bench run."""
    name: str
    role: str
    build: Callable[[], object] | None = None
    options: dict = field(default_factory=dict)


# RAP's published trigger "cf" is also a BadNets trigger word; the bench gives RAP another rare
# single-token word so that the defense does not reuse the attacker's trigger.
BENCH_OVERRIDES: dict[str, dict] = {"rap": {"trigger": "jj"}}
# Input filters are fitted on as many clean rows per class as BeDKD uses (320 trust + 50 held out).
INPUT_FILTER_ROWS_PER_CLASS = 370


# BeDKD under a fixed preset, beside the bench's ``bedkd`` (whose preset is ``--preset``); these take
# no option flags, only the bench seed.
PRESET_VARIANTS = {f"bedkd-{preset}": preset for preset in PRESETS}


def default_configs(name: str, preset: str = "fast") -> tuple[Options, ...]:
    if name == "bedkd":
        return PRESETS[preset]
    if name in PRESET_VARIANTS:
        return PRESETS[PRESET_VARIANTS[name]]
    return tuple(cls().replace(**BENCH_OVERRIDES.get(name, {})) for _, cls in METHODS[name].configs)


def make_spec(name: str, configs: tuple[Options, ...] | None = None, preset: str = "fast") -> DefenseSpec:
    if name == NONE:
        return DefenseSpec(NONE, "none")
    if name not in METHODS and name not in PRESET_VARIANTS:
        raise ConfigError(f"unknown defense '{name}'; choose from {', '.join(defense_names())}")
    method = METHODS.get(name) or dataclasses.replace(METHODS["bedkd"], name=name)
    configs = configs or default_configs(name, preset)
    if name == "onion" and configs[0].lm_dir is None:      # fail before any victim is trained
        raise ConfigError("onion needs a causal language model directory: --onion-lm DIR (e.g. GPT-2); "
                          "offline, build SmolLM2 with 'bedkd lm smollm2 --out DIR'")
    build = _onion_builder(configs[0]) if name == "onion" else (lambda: method.cls(*configs))
    return DefenseSpec(name, method.role, build,
                       {prefix: c.to_dict() for (prefix, _), c in zip(method.configs, configs)})


def defense_names() -> list[str]:
    """Every name ``--defenses`` takes."""
    return [NONE, *METHODS, *PRESET_VARIANTS]


def _onion_builder(cfg: ONIONConfig) -> Callable[[], ONION]:
    """ONION filters that share one language model (loaded at first use), so that its perplexity
    memo carries over from cell to cell: the clean test texts are scored once per dataset."""
    @functools.cache
    def shared_lm():
        return load_language_model(cfg.lm_dir, cfg.allow_pickle, cfg.lm_batch_size, cfg.lm_max_length)
    return lambda: ONION(cfg, lm=shared_lm())


def build_specs(names: list[str], configs: dict[str, tuple[Options, ...]] | None = None,
                preset: str = "fast") -> list[DefenseSpec]:
    configs = configs or {}
    return [make_spec(n, configs.get(n), preset) for n in names]


def run_defense(spec: DefenseSpec, cell: Cell) -> dict:
    """Defended metrics plus what the defense reports (detection, seconds, data used)."""
    if spec.role == "none":
        return {}
    defense = spec.build()
    return {"purifier": _purify, "data_filter": _filter, "input_filter": _screen}[spec.role](defense, cell)


def _purify(defense, cell: Cell) -> dict:
    out = defense.purify(cell.victim, cell.clean_pool, cell.suspect, progress=cell.progress)
    det = out.detection.metrics(cell.poisoned_rows) if out.detection is not None else {}
    report = {**out.report, "detection": det} if det else out.report      # scored against the ground truth
    data = report.get("data") or {}
    detection = {} if not det else {
        "flagged": det.get("flagged"), "flagged_precision": det.get("flagged_precision"),
        "flagged_recall": det.get("flagged_recall_scanned"), "flagged_recall_all": det.get("flagged_recall_all"),
        "kept": det.get("kept"), "kept_precision": det.get("kept_precision")}
    verdict = report.get("verdict") or {}
    found = (verdict.get("trigger_search") or {}).get("found")
    return {**evaluate(out.classifier, cell.test, cell.test_poison, progress=cell.progress),
            "detection": detection, "seconds": report.get("seconds", {}),
            "clean_rows_used": data.get("clean_budget_rows", data.get("trust_rows", 0) + data.get("val_rows", 0)),
            "selected_epoch": report.get("selected_epoch"), "backdoor_found": verdict.get("backdoor"),
            "target_found": verdict.get("target"), "trigger_found": " ".join(found["words"]) if found else None,
            "report": report}


def _filter(defense, cell: Cell) -> dict:
    start = time.perf_counter()
    filtered = defense.filter(cell.victim, cell.suspect, cell.clean_pool, progress=cell.progress)
    filter_seconds = time.perf_counter() - start
    removed = set(filtered.removed_rows)
    kept = [i for i in range(len(cell.suspect)) if i not in removed]
    start = time.perf_counter()
    retrained = cell.retrain(kept)
    m = filter_metrics(filtered.removed_rows, cell.poisoned_rows, len(cell.suspect))
    frac = lambda v: None if v is None else v / 100   # noqa: E731  (DMM's metrics are fractions)
    return {**evaluate(retrained, cell.test, cell.test_poison, progress=cell.progress),
            "detection": {"flagged": m["removed"], "flagged_precision": frac(m["precision_pct"]),
                          "flagged_recall": frac(m["recall_pct"]), "flagged_recall_all": frac(m["recall_pct"])},
            "seconds": {"filter": filter_seconds, "retrain": time.perf_counter() - start},
            "clean_rows_used": 0, "report": filtered.report}


def _screen(defense, cell: Cell) -> dict:
    start = time.perf_counter()
    fit_rows = per_class_split(cell.clean_pool, [INPUT_FILTER_ROWS_PER_CLASS], cell.seed)[0]
    defense.fit(cell.victim, cell.clean_pool.subset(fit_rows), progress=cell.progress)
    fit_seconds = time.perf_counter() - start
    poison = cell.test_poison or LabeledTexts([], [], "no attack", [])
    out = evaluate_screened(cell.victim, defense, cell.test, poison, progress=cell.progress)
    if cell.test_poison is None:
        out["asr"] = out["detection_rate"] = None
    return {**out, "seconds": {"fit": fit_seconds, "screen": time.perf_counter() - start - fit_seconds},
            "clean_rows_used": len(fit_rows), "report": getattr(defense, "fit_report", {})}
