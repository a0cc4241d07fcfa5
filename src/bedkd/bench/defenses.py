"""The defenses ``bedkd bench`` runs, by role, and how one is run on one victim.

* purifier: model in, model out; evaluated like the victim.
* data filter: drops training rows; the victim is retrained on the rest (same attack training).
* input filter: fitted on the clean pool; rejected clean inputs count as errors (see
  ``defenses.screening_eval``), and the false rejection rate is reported.
"""
from __future__ import annotations

import functools
import inspect
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..data import LabeledTexts, per_class_split
from ..defenses.base import DataFilter, InputFilter, Purifier
from ..defenses.data_filters.filter_metrics import filter_metrics
from ..defenses.input_filters.onion import ONION, ONIONConfig
from ..defenses.input_filters.screening_eval import evaluate_screened, screened_asr
from ..defenses.registry import METHODS
from ..errors import ConfigError
from ..evaluation import evaluate
from ..modeling import Classifier
from ..modeling.calibration import head_bias, shift_head
from ..modeling.language_model import load_language_model
from ..options import Options

NONE = "none"


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
    second_poison: LabeledTexts | None = None   # a second backdoor's triggered test rows (attack "multi")
    trace_epochs: bool = False        # --trace-epochs: BeDKD measures each epoch on the test rows (a diagnostic)


@dataclass
class DefenseSpec:
    """A configured defense of one bench run (``role`` "none": the victim as is)."""
    name: str
    role: str
    build: Callable[[], object] | None = None
    options: dict = field(default_factory=dict)
    traceable: bool = False           # its purify takes an ``epoch_probe`` (--trace-epochs)


# Input filters are fitted on as many clean rows per class as BeDKD uses (320 trust + 50 held out).
INPUT_FILTER_ROWS_PER_CLASS = 370


def make_spec(name: str, configs: tuple[Options, ...] | None = None, preset: str = "reference") -> DefenseSpec:
    if name == NONE:
        return DefenseSpec(NONE, "none")
    if name not in METHODS:
        raise ConfigError(f"unknown defense '{name}'; choose from {', '.join(defense_names())}")
    method = METHODS[name]
    configs = configs or method.default_configs(preset)
    if name == "onion" and configs[0].lm_dir is None:      # fail before any victim is trained
        raise ConfigError("onion needs a causal language model directory: --onion-lm DIR (e.g. GPT-2); "
                          "offline, build SmolLM2 with 'bedkd lm smollm2 --out DIR'")
    build = _onion_builder(configs[0]) if name == "onion" else (lambda: method.cls(*configs))
    traceable = "epoch_probe" in inspect.signature(method.cls.purify).parameters \
        if hasattr(method.cls, "purify") else False
    return DefenseSpec(name, method.role, build,
                       {prefix: c.to_dict() for (prefix, _), c in zip(method.configs, configs)}, traceable)


def same_method(name: str) -> list[str]:
    """The names under which ``name``'s class runs (a BeDKD preset and ``bedkd`` itself); [name]
    for ``none``."""
    if name not in METHODS:
        return [name]
    return [n for n, m in METHODS.items() if m.cls is METHODS[name].cls]


def defense_names() -> list[str]:
    """Every name ``--defenses`` takes."""
    return [NONE, *METHODS]


def _onion_builder(cfg: ONIONConfig) -> Callable[[], ONION]:
    """ONION filters that share one language model (loaded at first use), so that its perplexity
    memo carries over from cell to cell: the clean test texts are scored once per dataset."""
    @functools.cache
    def shared_lm():
        return load_language_model(cfg.lm_dir, cfg.allow_pickle, cfg.lm_batch_size, cfg.lm_max_length)
    return lambda: ONION(cfg, lm=shared_lm())


def build_specs(names: list[str], configs: dict[str, tuple[Options, ...]] | None = None,
                preset: str = "reference") -> list[DefenseSpec]:
    configs = configs or {}
    return [make_spec(n, configs.get(n), preset) for n in names]


def run_defense(spec: DefenseSpec, cell: Cell) -> dict:
    """Defended metrics plus what the defense reports (detection, seconds, data used), run as its
    role interface says."""
    if spec.role == "none":
        return {}
    defense = spec.build()
    if isinstance(defense, Purifier):
        return _purify(defense, cell, spec.traceable and cell.trace_epochs)
    if isinstance(defense, DataFilter):
        return _filter(defense, cell)
    if isinstance(defense, InputFilter):
        return _screen(defense, cell)
    raise TypeError(f"{type(defense).__name__} implements no defense role")


def _purify(defense, cell: Cell, trace: bool = False) -> dict:
    probe = EpochTrace(cell) if trace else None
    out = defense.purify(cell.victim, cell.clean_pool, cell.suspect, progress=cell.progress,
                         **({"epoch_probe": probe} if probe else {}))
    det = out.detection.metrics(cell.poisoned_rows) if out.detection is not None else {}
    report = {**out.report, "detection": det} if det else out.report      # scored against the ground truth
    data = report.get("data") or {}
    detection = {} if not det else {
        "flagged": det.get("flagged"), "flagged_precision": det.get("flagged_precision"),
        "flagged_recall": det.get("flagged_recall_scanned"), "flagged_recall_all": det.get("flagged_recall_all"),
        "kept": det.get("kept"), "kept_precision": det.get("kept_precision")}
    traced = {"trace_seconds": probe.seconds} if probe else {}
    return {**_evaluate(out.classifier, cell), **traced, "detection": detection, "seconds": report.get("seconds", {}),
            "clean_rows_used": data.get("clean_budget_rows", data.get("trust_rows", 0) + data.get("val_rows", 0)),
            "selected_epoch": report.get("selected_epoch"), **verdict_fields(report.get("verdict") or {}),
            "report": report}


def verdict_fields(verdict: dict) -> dict:
    """A row's digest of a scan verdict's report: evidence, target, the strongest found trigger, and
    whether the rest test of ``--scan-label-check-unexplained`` reaches its line (None: not run), so
    that a row tells whether that option could have changed it."""
    found = (verdict.get("trigger_search") or {}).get("found")
    tests = verdict.get("rest_tests")
    return {"backdoor_found": verdict.get("backdoor"), "target_found": verdict.get("target"),
            "trigger_found": " ".join(found["words"]) if found else None,
            "unexplained_acts": None if tests is None else any(t["acts"] for t in tests)}


class EpochTrace:
    """``--trace-epochs``: the test numbers of a model as BeDKD's epoch rule sees it, its classification
    head's bias moved by ``offsets`` (the clean-prior shift it would leave with) for the measurement
    and restored exactly after. A diagnostic: the rule never reads it; it lets benchmarks/
    guard_margin.py --replay tell what another rule would have kept, in test numbers. ``seconds``: its time."""

    def __init__(self, cell: Cell):
        self.cell, self.seconds = cell, 0.0

    def __call__(self, model, offsets) -> dict:
        start = time.perf_counter()
        bias = head_bias(model)
        saved = bias.detach().clone()
        try:
            if offsets is not None:
                shift_head(model, offsets)
            got = _evaluate(Classifier(model, self.cell.victim.tokenizer, self.cell.victim.source), self.cell,
                            per_class=True)
        finally:
            with torch.no_grad():
                bias.copy_(saved)
        self.seconds += time.perf_counter() - start
        return {k: v for k, v in got.items() if k in ("cacc", "cacc_per_class", "asr", "untriggered_asr", "second_asr")}


def _evaluate(model: Classifier, cell: Cell, per_class: bool = False) -> dict:
    """CACC, ASR and the untriggered ASR, and the second backdoor's where the attack planted two
    (``per_class``: each class's CACC too)."""
    return evaluate(model, cell.test, cell.test_poison, progress=cell.progress, second_poison=cell.second_poison,
                    per_class=per_class)


def _filter(defense, cell: Cell) -> dict:
    if cell.retrain is None:
        raise ConfigError(f"{defense.name}: a data filter retrains the victim on the rows it keeps, and this cell's "
                          "suspicious data is not the victim's training data (--suspect-data clean)")
    start = time.perf_counter()
    filtered = defense.filter(cell.victim, cell.suspect, cell.clean_pool, progress=cell.progress)
    filter_seconds = time.perf_counter() - start
    removed = set(filtered.removed_rows)
    kept = [i for i in range(len(cell.suspect)) if i not in removed]
    start = time.perf_counter()
    retrained = cell.retrain(kept)
    m = filter_metrics(filtered.removed_rows, cell.poisoned_rows, len(cell.suspect))
    return {**_evaluate(retrained, cell),
            "detection": {"flagged": m["removed"], "flagged_precision": m["precision_pct"],
                          "flagged_recall": m["recall_pct"], "flagged_recall_all": m["recall_pct"]},
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
    if cell.second_poison is not None:
        out["second_asr"] = screened_asr(cell.victim, defense, cell.second_poison, cell.progress)
    return {**out, "seconds": {"fit": fit_seconds, "screen": time.perf_counter() - start - fit_seconds},
            "clean_rows_used": len(fit_rows), "report": getattr(defense, "fit_report", {})}
