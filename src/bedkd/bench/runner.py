"""Run the matrix cell by cell; every finished cell is saved, so a rerun resumes where it stopped.

Per dataset: a seeded training subset, a seeded clean test subset, and the dev split as the
defender's clean pool. A clean model (no poison, same data and training) gives the ASR floor of
every attack and is the victim of the no-attack row. Victims are cached in ``<workdir>/victims``;
cell results in ``<workdir>/cells``; both under keys of everything that determines them.
Rows of an earlier run of the same setup (``reuse``, read from its results.json) are taken as
they are; a victim is trained or loaded only when one of its cells is missing.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..attacks import AttackConfig, PoisonedData, make_attack
from ..data import random_limit
from ..datasets import Dataset, load_dataset
from ..errors import ConfigError
from ..evaluation import evaluate
from ..modeling import TrainConfig, default_backbone, load_classifier
from ..outputs import atomic_write_text
from ..seeding import seed_everything
from .config import CLEAN, BenchConfig
from .defenses import Cell, DefenseSpec, run_defense
from .victims import VictimCache, cache_key, fingerprint, options_of, victim_key


@dataclass
class BenchSetup:
    """Everything besides the matrix that determines the results."""
    data_dir: Path | None = None
    attack: AttackConfig = field(default_factory=AttackConfig)
    attack_options: dict = field(default_factory=dict)     # attack name -> its own options (EPConfig ...)
    train: TrainConfig = field(default_factory=TrainConfig)
    backbone: str | None = None          # None: all-MiniLM-L6-v2
    progress: bool = False
    compute: bool = True                 # False: report cached results only; the rest is "not run"


class NotRun(Exception):
    """A result is not cached and computing is off."""


NOT_RUN = "not run (not in the cache)"


def run_bench(cfg: BenchConfig, specs: list[DefenseSpec], setup: BenchSetup, workdir, log=print,
              on_rows=None, reuse: dict | None = None) -> list[dict]:
    """All rows of the matrix (one per dataset x attack x defense), computing only what is missing.
    ``on_rows(rows so far)`` is called after each attack, e.g. to write partial results; the reused
    rows of cells not reached yet are passed too, so that an interrupted run loses none of them.
    ``reuse`` maps (dataset, attack, defense) to a finished row of an earlier run of the same setup."""
    workdir = Path(workdir)
    victims = VictimCache(workdir / "victims")
    reuse = reuse or {}
    rows: list[dict] = []
    for name in cfg.datasets:
        ds = load_dataset(name, setup.data_dir)
        for attack_rows in _run_dataset(ds, cfg, specs, setup, workdir, victims, log, reuse):
            rows += attack_rows
            if on_rows is not None:
                on_rows(rows + _not_reached(reuse, cfg, specs, rows))
    return rows


def matrix_attacks(cfg: BenchConfig) -> list[str]:
    """The attack rows of each dataset, in order: the no-attack row first unless turned off."""
    return ([CLEAN] if cfg.clean_row and CLEAN not in cfg.attacks else []) + list(cfg.attacks)


def _not_reached(reuse: dict, cfg: BenchConfig, specs: list[DefenseSpec], rows: list[dict]) -> list[dict]:
    """Reused rows of the matrix whose cell has not been reached yet."""
    done = {(r["dataset"], r["attack"], r["defense"]) for r in rows}
    return [reuse[k] for k in ((d, a, s.name) for d in cfg.datasets for a in matrix_attacks(cfg) for s in specs)
            if k in reuse and k not in done]


def _run_dataset(ds: Dataset, cfg, specs, setup, workdir, victims, log, reuse: dict) -> list[dict]:
    train = ds.train.subset(random_limit(ds.train, cfg.train_limit, cfg.seed))
    test = ds.test.subset(random_limit(ds.test, cfg.eval_limit, cfg.seed))
    pool = ds.dev
    attack_cfg = setup.attack.replace(seed=cfg.seed)
    if attack_cfg.target >= ds.num_labels:
        raise ConfigError(f"target {attack_cfg.target} is not a class of {ds.name} (0..{ds.num_labels - 1})")
    train_cfg = setup.train.replace(seed=cfg.seed)
    base = {"dataset": ds.name, "train_rows": len(train), "test_rows": len(test), "clean_pool_rows": len(pool)}
    clean_key = victim_key(ds.name, CLEAN, {}, train_cfg, setup.backbone, train, ds.num_labels)
    attacks = matrix_attacks(cfg)
    clean = []          # [(model, meta, eval)] once needed

    def clean_model():
        if not clean:
            model, meta = _victim(victims, clean_key, ds, setup, cfg.seed, log, f"{ds.name}/clean model",
                                  lambda clf: _finetune(clf, train, train_cfg, setup.progress))
            clean.append((model, meta, _cached_eval(workdir, clean_key, model, test, None, setup.progress)))
        return clean[0]

    for attack_name in attacks:
        label = f"{ds.name}/{attack_name}"
        earlier = [reuse.get((ds.name, attack_name, s.name)) for s in specs]
        if attack_name != CLEAN:
            try:
                attack = make_attack(attack_name, attack_cfg, ds.name, setup.data_dir,
                                     setup.attack_options.get(attack_name))
                poisoned = attack.poison(train, test)
            except ConfigError as exc:       # e.g. no syntactic training paraphrases for AG News
                log(f"[{label}] skipped: {exc}")
                yield [{**base, "attack": attack_name, "defense": s.name, "status": f"skipped: {exc}"} for s in specs]
                continue
        key = clean_key if attack_name == CLEAN else victim_key(
            ds.name, attack_name, options_of(attack), train_cfg, setup.backbone, train, ds.num_labels)
        poison_test = None if attack_name == CLEAN else poisoned.test_poison
        # a cell of the workdir first (it keeps the details), else a row of an earlier results.json
        known = [_cached_cell(_cell_key(spec, key, pool, test, poison_test),
                              _cell_path(workdir, ds.name, attack_name, spec)) or row
                 for spec, row in zip(specs, earlier)]
        if all(known):
            log(f"[{label}] all {len(known)} rows cached or reused")
            yield known
            continue
        not_run = [row or {**base, "attack": attack_name, "defense": s.name, "status": NOT_RUN}
                   for s, row in zip(specs, known)]
        try:
            clean_model_, clean_meta, clean_eval = clean_model()
        except NotRun:
            yield not_run
            continue
        if attack_name == CLEAN:
            victim, meta, suspect, poisoned_rows = clean_model_, clean_meta, train, []
            victim_eval = clean_eval
            floor = None
        else:
            try:
                victim, meta = _victim(victims, key, ds, setup, cfg.seed, log, label,
                                       lambda clf: attack_victim_trainer(attack, clf, poisoned, train_cfg,
                                                                         setup.progress),
                                       {"poisoned_rows": len(poisoned.poisoned_rows)})
            except NotRun:
                yield not_run
                continue
            suspect, poisoned_rows = poisoned.train, poisoned.poisoned_rows
            victim_eval = _cached_eval(workdir, key, victim, test, poison_test, setup.progress)
            floor = _cached_eval(workdir, clean_key, clean_model_, test, poison_test, setup.progress)["asr"]
        log(f"[{label}] victim: CACC {victim_eval['cacc']:.2f}" +
            (f"  ASR {victim_eval['asr']:.2f}  (clean-model floor {floor:.2f})" if poison_test is not None else ""))
        retrain = _retrainer(ds, setup, cfg.seed, train_cfg, attack if attack_name != CLEAN else None,
                             poisoned if attack_name != CLEAN else None, train)
        cell = Cell(victim, pool, suspect, poisoned_rows, test, poison_test, retrain, setup.progress, cfg.seed)
        row_base = {**base, "attack": attack_name, "poisoned_rows": len(poisoned_rows),
                    "poison_test_rows": len(poison_test) if poison_test is not None else 0,
                    "victim_cacc": victim_eval["cacc"], "victim_asr": victim_eval.get("asr"), "floor_asr": floor,
                    "clean_model_cacc": clean_eval["cacc"], "victim_train_seconds": meta["train_seconds"]}
        yield [row or _run_cell(spec, cell, key, row_base, workdir, log, label, setup.compute)
               for spec, row in zip(specs, known)]


def _cell_key(spec: DefenseSpec, victim_key: str, pool, test, test_poison) -> str:
    return cache_key("cell", victim_key, spec.name, spec.options, fingerprint(pool), fingerprint(test),
                     fingerprint(test_poison) if test_poison is not None else None)


def _cell_path(workdir: Path, dataset: str, attack: str, spec: DefenseSpec) -> Path:
    return workdir / "cells" / dataset / attack / f"{spec.name}.json"


def _cached_cell(key: str, path: Path) -> dict | None:
    """The saved row of this cell, its summary re-derived from the details (so new report columns fill)."""
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    if saved.get("key") != key:
        return None
    row = saved["row"]
    return {**row, **_summary(saved["details"], row, row["defense_seconds"])}


def _run_cell(spec: DefenseSpec, cell: Cell, victim_key: str, row_base: dict, workdir: Path, log, label,
              compute: bool = True) -> dict:
    key = _cell_key(spec, victim_key, cell.clean_pool, cell.test, cell.test_poison)
    path = _cell_path(workdir, row_base["dataset"], row_base["attack"], spec)
    if not compute:
        return {**row_base, "defense": spec.name, "status": NOT_RUN}
    start = time.perf_counter()
    out = run_defense(spec, cell)
    seconds = time.perf_counter() - start
    if not out:         # no defense: the victim's numbers
        out = {"cacc": row_base["victim_cacc"], "asr": row_base["victim_asr"]}
    row = {**row_base, "defense": spec.name, "status": "ok",
           **_summary(out, row_base, seconds if spec.role != "none" else 0.0)}
    atomic_write_text(path, json.dumps({"key": key, "row": row, "details": out}, indent=2))
    if spec.role != "none":
        asr = f"  ASR {row['asr']:.2f}" if row["asr"] is not None else ""
        log(f"[{label}] {spec.name}: CACC {row['cacc']:.2f}{asr}  ({seconds:.0f} s)")
    return row


def _summary(out: dict, base: dict, seconds: float) -> dict:
    det = out.get("detection") or {}
    asr = out.get("asr")
    stages = out.get("seconds") or {}
    return {"cacc": out["cacc"], "asr": asr, "cacc_change": out["cacc"] - base["victim_cacc"],
            "asr_reduction": None if asr is None else base["victim_asr"] - asr,
            "flagged": det.get("flagged"), "kept": det.get("kept"),
            "flagged_precision": det.get("flagged_precision"), "flagged_recall": det.get("flagged_recall"),
            "flagged_recall_all": det.get("flagged_recall_all"), "kept_precision": det.get("kept_precision"),
            "frr": out.get("frr"), "detection_rate": out.get("detection_rate"), "clean_rows_used": out.get("clean_rows_used", 0),
            "defense_seconds": seconds,
            "dmm_seconds": stages.get("dmm"), "scan_seconds": stages.get("scan"), "akd_seconds": stages.get("akd"),
            "selected_epoch": out.get("selected_epoch")}


def _victim(victims: VictimCache, key: str, ds: Dataset, setup: BenchSetup, seed: int, log, label: str, train_fn,
            extra: dict | None = None):
    cached = victims.load(key)
    if cached is not None:
        log(f"[{label}] victim cached ({key})")
        return cached
    if not setup.compute:
        log(f"[{label}] victim not in the cache: not run")
        raise NotRun(label)
    log(f"[{label}] training victim ({key})")
    seed_everything(seed)     # the new classification head is drawn at load time
    clf = load_classifier(setup.backbone or default_backbone(), num_labels=ds.num_labels)
    start = time.perf_counter()
    train_fn(clf)
    meta = {"train_seconds": time.perf_counter() - start, **(extra or {})}
    victims.save(key, clf, meta)
    return clf, meta


def _retrainer(ds, setup, seed, train_cfg, attack, poisoned: PoisonedData | None, clean_train):
    """For data filters: a fresh victim trained the attack's way on the kept rows only."""
    def retrain(kept: list[int]):
        seed_everything(seed)
        clf = load_classifier(setup.backbone or default_backbone(), num_labels=ds.num_labels)
        if poisoned is None:
            _finetune(clf, clean_train.subset(kept), train_cfg, setup.progress)
        else:
            attack.train_victim(clf, keep_rows(poisoned, kept), train_cfg, progress=setup.progress)
        return clf
    return retrain


def keep_rows(poisoned: PoisonedData, kept: list[int]) -> PoisonedData:
    """``poisoned`` restricted to training rows ``kept``; row-index fields (``*_rows``) are renumbered."""
    new_index = {old: new for new, old in enumerate(kept)}
    changes = {f.name: [new_index[r] for r in getattr(poisoned, f.name) if r in new_index]
               for f in dataclasses.fields(poisoned) if f.name.endswith("_rows")}
    return dataclasses.replace(poisoned, train=poisoned.train.subset(kept), **changes)


def _finetune(clf, data, cfg, progress):
    from ..modeling import finetune
    return finetune(clf, data, cfg, progress=progress)


def attack_victim_trainer(attack, clf, poisoned: PoisonedData, cfg, progress):
    return attack.train_victim(clf, poisoned, cfg, progress=progress)


def _cached_eval(workdir: Path, model_key: str, clf, test, poison_test, progress) -> dict:
    key = cache_key("eval", model_key, fingerprint(test), fingerprint(poison_test) if poison_test is not None else None)
    path = workdir / "evals" / f"{key}.json"
    if path.is_file():
        return json.loads(path.read_text())
    result = evaluate(clf, test, poison_test, progress=progress)
    atomic_write_text(path, json.dumps(result))
    return result
