"""Run the matrix cell by cell; every finished cell is saved, so a rerun resumes where it stopped.

Per dataset: a seeded training subset, a seeded clean test subset, and the dev split as the
defender's clean pool. A clean model (no poison, same data and training) gives the ASR floor of
every attack and is the victim of the no-attack row. Victims are cached in ``<workdir>/victims``;
cell results in ``<workdir>/cells/<dataset>/<attack>/<victim key>/``; both under keys of everything that determines them, each
computed under a lock file of its key so that runs sharing a workdir wait for each other instead of
computing it twice. Every row carries its victim's key and the code version that computed it; a cached cell
or a row of an earlier run of the same setup (``reuse``, read from its results.json) is taken as it
is when its victim key matches and it comes from this code version (or ``reuse_any_version``); so
is a cell that another name of the same method (``bedkd --preset guarded``, ``bedkd-guarded``)
computed with the same options. A victim is trained or loaded only when one of its cells is missing.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..attacks import AttackConfig, BackdoorAttack, NoAttack, PoisonedData, make_attack
from ..data import LabeledTexts, random_limit
from ..datasets import Dataset, available_styles, dataset_info, load_dataset, resolve_data_dir
from ..errors import BedkdError, ConfigError
from ..evaluation import evaluate
from ..modeling import Classifier, TrainConfig, default_backbone, load_classifier
from ..options import options_of
from ..outputs import WriteError, atomic_write_text, file_lock
from ..provenance import code_version, file_hashes, sha256_file, trained_on
from ..seeding import seed_everything
from .config import CLEAN, BenchConfig
from .defenses import Cell, DefenseSpec, run_defense, same_method
from .report import UNITS, Row, in_percent
from .victims import VictimCache, cache_key, fingerprint, victim_key


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
    reuse_any_version: bool = False      # take cached cells / earlier rows computed by another code version
    code_version: str | None = None      # None: this checkout's (provenance.code_version())

    def code(self) -> str:
        return self.code_version or code_version()["code_version"]

    def identity(self, cfg: BenchConfig, specs: list[DefenseSpec]) -> dict:
        """What an earlier run's rows must share with this one to be reused (``results.json``'s
        ``meta.setup``): the matrix and scale, backbone, attack and training options, each defense's options."""
        return {**cfg.to_dict(), "backbone": self.backbone or "all-MiniLM-L6-v2",
                "attack": self.attack.to_dict(), "train": self.train.to_dict(),
                "attack_options": {k: v.to_dict() for k, v in self.attack_options.items()},
                "defenses": {s.name: s.options for s in specs}, "clean_pool": "dev split"}


NOT_RUN = "not run (not in the cache)"


def run_bench(cfg: BenchConfig, specs: list[DefenseSpec], setup: BenchSetup, workdir, log=print,
              on_rows=None, reuse: dict | None = None, data_files: dict | None = None) -> list[Row]:
    """All rows of the matrix (one per dataset x attack x defense), computing only what is missing.
    ``on_rows(rows so far)`` is called after each attack, e.g. to write partial results; the reused
    rows of cells not reached yet are passed too, so that an interrupted run loses none of them.
    ``reuse`` maps (dataset, attack, defense) to a finished row of an earlier run of the same setup.
    ``data_files`` (a dict) receives, per dataset, the SHA-256 of every data file read."""
    check_matrix(cfg, setup)
    cache = BenchCache(Path(workdir))
    reuse = reuse or {}
    data_files = {} if data_files is None else data_files
    rows: list[Row] = []
    for name in cfg.datasets:
        ds = load_dataset(name, setup.data_dir)
        files = data_files.setdefault(name, {})
        files.update(file_hashes([ds.train.source, ds.dev.source, ds.test.source], _data_root(setup)))
        plan = DatasetPlan.make(ds, cfg, setup)
        victims = Victims(cache, plan, setup, log)
        floors = FloorModels(cache, plan, cfg, setup, log)
        for attack_name in matrix_attacks(cfg):
            rows += floors.fill(_attack_rows(plan, attack_name, specs, cache, victims, reuse, files, setup, log))
            if on_rows is not None:
                on_rows(rows + _not_reached(reuse, cfg, specs, rows))
    return rows


def check_matrix(cfg: BenchConfig, setup: BenchSetup) -> None:
    """The names only the data directory can check (a user dataset's folder, the StyleBkd style),
    before any data is read."""
    for name in cfg.datasets:
        dataset_info(name, setup.data_dir)
    style = setup.attack.style
    if style is None:
        return
    if "stylebkd" not in cfg.attacks:
        raise ConfigError(f"style '{style}' is used only by stylebkd, which is not among the attacks")
    # a style the pack has for some of the datasets only: the others' StyleBkd cells are skipped
    styles = {name: available_styles(name, setup.data_dir) for name in cfg.datasets}
    if not any(style in have for have in styles.values()):
        choices = "; ".join(f"{name}: {', '.join(have) or '(none)'}" for name, have in styles.items())
        raise ConfigError(f"unknown style '{style}': no dataset has its train and test paraphrases; "
                          f"choose from {choices}")


def _data_root(setup: BenchSetup) -> Path | None:
    """The data pack folder (file names in the provenance are relative to it), if there is one."""
    try:
        return resolve_data_dir(setup.data_dir)
    except BedkdError:
        return None


def matrix_attacks(cfg: BenchConfig) -> list[str]:
    """The attack rows of each dataset, in order: the no-attack row first unless turned off."""
    return ([CLEAN] if cfg.clean_row and CLEAN not in cfg.attacks else []) + list(cfg.attacks)


def _not_reached(reuse: dict, cfg: BenchConfig, specs: list[DefenseSpec], rows: list[Row]) -> list[Row]:
    """Reused rows of the matrix whose cell has not been reached yet."""
    done = {(r["dataset"], r["attack"], r["defense"]) for r in rows}
    return [reuse[k] for k in ((d, a, s.name) for d in cfg.datasets for a in matrix_attacks(cfg) for s in specs)
            if k in reuse and k not in done]




# -- plan: what each row of a dataset is computed from ---------------------------------------------
@dataclass
class DatasetPlan:
    """One dataset's inputs: seeded training and test subsets, the dev split as the defender's clean
    pool, the attack and training options under the bench seed, and the clean model's attack plan."""
    ds: Dataset
    train: LabeledTexts
    test: LabeledTexts
    pool: LabeledTexts
    attack_cfg: AttackConfig
    train_cfg: TrainConfig
    seed: int
    clean: AttackPlan | None = None
    suspect_data: str = "poisoned"      # BenchConfig.suspect_data
    trace_epochs: bool = False          # BenchConfig.trace_epochs

    @classmethod
    def make(cls, ds: Dataset, cfg: BenchConfig, setup: BenchSetup) -> DatasetPlan:
        attack_cfg = setup.attack.replace(seed=cfg.seed)
        if attack_cfg.target >= ds.num_labels:
            raise ConfigError(f"target {attack_cfg.target} is not a class of {ds.name} (0..{ds.num_labels - 1})")
        plan = cls(ds, ds.train.subset(random_limit(ds.train, cfg.train_limit, cfg.seed)),
                   ds.test.subset(random_limit(ds.test, cfg.eval_limit, cfg.seed)), ds.dev, attack_cfg,
                   setup.train.replace(seed=cfg.seed), cfg.seed, suspect_data=cfg.suspect_data,
                   trace_epochs=cfg.trace_epochs)
        plan.clean = plan.attack(CLEAN, setup)
        return plan

    def base_row(self) -> dict:
        return {"dataset": self.ds.name, "train_rows": len(self.train), "test_rows": len(self.test),
                "clean_pool_rows": len(self.pool)}

    def attack(self, name: str, setup: BenchSetup) -> AttackPlan:
        """The attack ``name`` (``clean``: :class:`NoAttack`) applied, and its victim's key; a
        ConfigError when it cannot run on this dataset (e.g. no syntactic paraphrases for AG News)."""
        if name == CLEAN:
            attack = NoAttack()
        else:   # the style is StyleBkd's option only; the other attacks refuse one
            own_cfg = self.attack_cfg if name == "stylebkd" else self.attack_cfg.replace(style=None)
            attack = make_attack(name, own_cfg, self.ds.name, setup.data_dir, setup.attack_options.get(name))
        poisoned = attack.poison(self.train, self.test)
        read = attack.files_read()
        key = victim_key(self.ds.name, name, options_of(attack), self.train_cfg, setup.backbone, self.train,
                         self.ds.num_labels, {role: sha256_file(path) for role, path in read.items()})
        return AttackPlan(name, attack, poisoned, key, read)


@dataclass
class AttackPlan:
    """One attack row: the attack, the data it produced, its victim's key and the files it read."""
    name: str
    attack: BackdoorAttack
    poisoned: PoisonedData
    key: str
    files: dict[str, str]


# -- the workdir ----------------------------------------------------------------------------------
class BenchCache:
    """The workdir: victims (``victims/``), evaluations (``evals/``) and finished cells (``cells/``),
    each under a key of everything that determines it; victims and cells are computed under locks."""

    def __init__(self, root: Path):
        self.root = root
        self.victims = VictimCache(root / "victims")

    def victim(self, key: str, label: str, train_fn, compute: bool, log) -> tuple[Classifier, dict] | None:
        """The cached victim, else (``compute``) ``train_fn()`` -> (classifier, meta) saved; else None."""
        cached = self.victims.load(key)
        if cached is not None:
            log(f"[{label}] victim cached ({key})")
            return cached
        if not compute:
            log(f"[{label}] victim not in the cache: not run")
            return None
        with self.victims.lock(key, lambda: log(f"[{label}] waiting for another run training this victim ({key})")):
            cached = self.victims.load(key)      # trained by another run while this one waited
            if cached is not None:
                log(f"[{label}] victim cached by another run ({key})")
                return cached
            log(f"[{label}] training victim ({key})")
            clf, meta = train_fn()
            self.victims.save(key, clf, meta)
        return clf, meta

    def evaluation(self, model_key: str, clf, test, poison_test, progress: bool) -> dict:
        cached = self.cached_evaluation(model_key, test, poison_test)
        if cached is not None:
            return cached
        result = evaluate(clf, test, poison_test, progress=progress)
        atomic_write_text(self._eval_path(model_key, test, poison_test), json.dumps(result))
        return result

    def cached_evaluation(self, model_key: str, test, poison_test) -> dict | None:
        """The saved evaluation, or None (not saved, unreadable, or written before the untriggered
        ASR was measured)."""
        path = self._eval_path(model_key, test, poison_test)
        if not path.is_file():
            return None
        try:
            cached = json.loads(path.read_text())
        except ValueError:
            return None
        return cached if poison_test is None or "untriggered_asr" in cached else None

    def _eval_path(self, model_key: str, test, poison_test) -> Path:
        key = cache_key("eval", model_key, fingerprint(test),
                        fingerprint(poison_test) if poison_test is not None else None)
        return self.root / "evals" / f"{key}.json"

    @staticmethod
    def cell_key(spec: DefenseSpec, victim_key: str, plan: DatasetPlan, test_poison, second_poison=None) -> str:
        second = () if second_poison is None else (fingerprint(second_poison),)    # keys of one backdoor unchanged
        clean_suspect = ("suspect:clean",) if plan.suspect_data == "clean" else ()    # keys of the default unchanged
        trace = ("trace",) if plan.trace_epochs and spec.traceable else ()
        return cache_key("cell", victim_key, spec.name, spec.options, fingerprint(plan.pool), fingerprint(plan.test),
                         fingerprint(test_poison) if test_poison is not None else None, *second, *clean_suspect,
                         *trace)

    def cell_path(self, dataset: str, attack: str, spec: DefenseSpec, victim_key: str, key: str) -> Path:
        """Under the victim's key, so that runs of other triggers, targets or seeds sharing the
        workdir keep their own cells: ``<defense>.json``, or ``<defense>.<cell key>.json`` when that
        name holds a cell of other options (``bedkd`` with other flags on the same victim), so that
        neither overwrites the other."""
        plain = self.root / "cells" / dataset / attack / victim_key / f"{spec.name}.json"
        own = plain.with_name(f"{spec.name}.{key}.json")
        return own if own.is_file() or _saved_key(plain) not in (None, key) else plain

    def find_cell(self, spec: DefenseSpec, dataset: str, attack: str, victim_key: str, plan: DatasetPlan,
                  test_poison, second_poison, code: str, any_version: bool) -> tuple[dict | None, str]:
        """``cached_cell`` of ``spec``; else the same computation saved under another name of its
        method (``bedkd --preset guarded`` and ``bedkd-guarded``: same class, same options, same
        victim and data, so the same key but for the name), relabelled as ``spec``."""
        first_why = ""
        for name in [spec.name, *[n for n in same_method(spec.name) if n != spec.name]]:
            alias = dataclasses.replace(spec, name=name)
            key = self.cell_key(alias, victim_key, plan, test_poison, second_poison)
            found, why = self.cached_cell(key, self.cell_path(dataset, attack, alias, victim_key, key), victim_key,
                                          code, any_version)
            if found is not None:
                return {**found, "defense": spec.name}, ""
            first_why = first_why or why
        return None, first_why

    def cached_cell(self, key: str, path: Path, victim_key: str, code: str, any_version: bool) -> tuple[dict | None, str]:
        """(the saved row of this cell, its summary re-derived from the details so that new report
        columns fill, or None; why a saved row was refused, or ""). A cell of the earlier layout
        (``cells/<dataset>/<attack>/<defense>.json``) is read too."""
        legacy = path.parent.parent / path.name
        found, why = self._read_cell(key, path, victim_key, code, any_version)
        if found is None and not why and legacy.is_file():
            found, why = self._read_cell(key, legacy, victim_key, code, any_version)
        return found, why

    @staticmethod
    def _read_cell(key: str, path: Path, victim_key: str, code: str, any_version: bool) -> tuple[dict | None, str]:
        if not path.is_file():
            return None, ""
        try:
            saved = json.loads(path.read_text())
            row, details = saved["row"], saved["details"]
        except (ValueError, KeyError, TypeError):
            return None, "unreadable cache file"
        if saved.get("key") != key:
            return None, ""
        units = saved.get("units")
        row = in_percent(row, units)
        details = {**details, "detection": in_percent(details.get("detection") or {}, units)}
        computed_by = row.get("code_version")       # None: cached before versions were recorded
        if computed_by != code and not any_version:
            return None, f"cached by code version {computed_by or 'unknown'}"
        return {**row, **_summary(details, row, row["defense_seconds"]),
                "victim_key": victim_key, "code_version": computed_by}, ""


def _saved_key(path: Path) -> str | None:
    """The key a saved cell file holds (None: no file, or unreadable)."""
    try:
        return json.loads(path.read_text()).get("key")
    except (OSError, ValueError, AttributeError):
        return None


# -- victims: the clean model and each attack's, trained or loaded once per dataset ---------------
class Victims:
    def __init__(self, cache: BenchCache, plan: DatasetPlan, setup: BenchSetup, log):
        self.cache, self.plan, self.setup, self.log = cache, plan, setup, log
        self.loaded: dict[str, tuple[Classifier, dict]] = {}

    def get(self, ap: AttackPlan, label: str) -> tuple[Classifier, dict] | None:
        """The victim of ``ap`` (the clean model for ``clean``), or None: not cached, computing off."""
        if ap.key not in self.loaded:
            extra = {"poisoned_rows": len(ap.poisoned.poisoned_rows)} if ap.name != CLEAN else {}
            found = self.cache.victim(ap.key, label, lambda: self._train(ap, extra), self.setup.compute, self.log)
            if found is None:
                return None
            self.loaded[ap.key] = found
        return self.loaded[ap.key]

    def _train(self, ap: AttackPlan, extra: dict) -> tuple[Classifier, dict]:
        clf = _fresh_model(self.plan, self.setup)
        start = time.perf_counter()
        train_victim(ap.attack, clf, ap.poisoned, self.plan.train_cfg, self.setup.progress)
        # the same key trained under another thread count or device may differ by a few test rows
        # (float summation order): the cached victim says how it was trained
        return clf, {"train_seconds": time.perf_counter() - start, "trained_on": trained_on(), **extra}


FLOOR_RANGE = ("floor_models", "floor_asr_min", "floor_asr_max", "second_floor_asr_min", "second_floor_asr_max")


class FloorModels:
    """The clean models of ``BenchConfig.floor_seeds`` on one dataset: the bench's clean model of each
    seed (its own training rows, head and batch order), loaded or trained once. Each attack row gets
    the lowest and highest floor over them and its own clean model, all measured on the row's own
    triggered test rows. Where the floors of clean models that differ only in their seed spread
    beyond the bar's margin, a miss or a pass by a point or two says little (docs/results/floor_spread)."""

    def __init__(self, cache: BenchCache, plan: DatasetPlan, cfg: BenchConfig, setup: BenchSetup, log):
        self.cache, self.plan, self.setup = cache, plan, setup
        others = [DatasetPlan.make(plan.ds, cfg.replace(seed=s), setup) for s in cfg.floor_seeds if s != cfg.seed]
        self.others = [(p, Victims(cache, p, setup, log)) for p in others]

    def fill(self, rows: list[Row]) -> list[Row]:
        """``rows`` (one attack's) with ``floor_models`` and the lowest / highest floor of each backdoor;
        without them when no further seed is asked for, or a floor is neither cached nor computed (a
        row reused from an earlier run loses those of its own run's seeds)."""
        rows = [{k: v for k, v in r.items() if k not in FLOOR_RANGE} for r in rows]
        ok = [r for r in rows if r.get("status") == "ok" and r.get("floor_asr") is not None]
        if not self.others or not ok:
            return rows
        ap = self.plan.attack(ok[0]["attack"], self.setup)
        fill = {"floor_models": 1 + len(self.others)}
        for prefix, poison in (("", ap.poisoned.test_poison), ("second_", second_backdoor_rows(ap))):
            if poison is None:
                continue
            floors = [self._floor(p, victims, poison) for p, victims in self.others]
            if None in floors:
                return rows
            floors.append(ok[0][f"{prefix}floor_asr"])
            fill[f"{prefix}floor_asr_min"], fill[f"{prefix}floor_asr_max"] = min(floors), max(floors)
        done = {id(r) for r in ok}
        return [{**r, **fill} if id(r) in done else r for r in rows]

    def _floor(self, plan: DatasetPlan, victims: Victims, poison) -> float | None:
        got = self.cache.cached_evaluation(plan.clean.key, self.plan.test, poison)
        if got is None and self.setup.compute:
            found = victims.get(plan.clean, f"{plan.ds.name}/clean model of seed {plan.seed}")
            got = self.cache.evaluation(plan.clean.key, found[0], self.plan.test, poison, self.setup.progress)
        return None if got is None else got["asr"]


def _fresh_model(plan: DatasetPlan, setup: BenchSetup) -> Classifier:
    seed_everything(plan.seed)     # the new classification head is drawn at load time
    return load_classifier(setup.backbone or default_backbone(), num_labels=plan.ds.num_labels)


def train_victim(attack: BackdoorAttack, clf: Classifier, poisoned: PoisonedData, cfg: TrainConfig, progress: bool):
    """Every victim of the bench is trained here (the clean model too, by :class:`NoAttack`)."""
    return attack.train_victim(clf, poisoned, cfg, progress=progress)


def retrainer(plan: DatasetPlan, setup: BenchSetup, ap: AttackPlan):
    """For data filters: a fresh victim trained the attack's way on the kept rows only."""
    def retrain(kept: list[int]):
        clf = _fresh_model(plan, setup)
        train_victim(ap.attack, clf, keep_rows(ap.poisoned, kept), plan.train_cfg, setup.progress)
        return clf
    return retrain


def keep_rows(poisoned: PoisonedData, kept: list[int]) -> PoisonedData:
    """``poisoned`` restricted to training rows ``kept``; row-index fields (``*_rows``) are renumbered."""
    new_index = {old: new for new, old in enumerate(kept)}
    changes = {f.name: [new_index[r] for r in getattr(poisoned, f.name) if r in new_index]
               for f in dataclasses.fields(poisoned) if f.name.endswith("_rows")}
    return dataclasses.replace(poisoned, train=poisoned.train.subset(kept), **changes)


# -- cells ----------------------------------------------------------------------------------------
def _attack_rows(plan: DatasetPlan, name: str, specs: list[DefenseSpec], cache: BenchCache, victims: Victims,
                 reuse: dict, files: dict, setup: BenchSetup, log) -> list[Row]:
    """The rows of one attack: cached cells or reused rows where they exist, the others computed."""
    label, base = f"{plan.ds.name}/{name}", plan.base_row()
    try:
        ap = plan.attack(name, setup)
    except ConfigError as exc:
        log(f"[{label}] skipped: {exc}")
        return [{**base, "attack": name, "defense": s.name, "status": f"skipped: {exc}"} for s in specs]
    files.update(file_hashes(ap.files.values(), _data_root(setup)))
    test_poison, second = ap.poisoned.test_poison, second_backdoor_rows(ap)
    known = _known_rows(plan, ap, specs, cache, reuse, setup, log, label)
    if all(known):
        log(f"[{label}] all {len(known)} rows cached or reused")
        return _with_clean_untriggered(known, cache, plan, test_poison, second, setup)
    clean = victims.get(plan.clean, f"{plan.ds.name}/clean model")
    victim = clean if name == CLEAN or clean is None else victims.get(ap, label)
    if victim is None:
        return [row or {**base, "attack": name, "defense": s.name, "status": NOT_RUN, "victim_key": ap.key}
                for s, row in zip(specs, known)]
    (clean_model, _), (model, meta) = clean, victim
    clean_eval = cache.evaluation(plan.clean.key, clean_model, plan.test, None, setup.progress)
    victim_eval = cache.evaluation(ap.key, model, plan.test, test_poison, setup.progress)
    floor = None if test_poison is None else \
        cache.evaluation(plan.clean.key, clean_model, plan.test, test_poison, setup.progress)["asr"]
    log(f"[{label}] victim: CACC {victim_eval['cacc']:.2f}" +
        (f"  ASR {victim_eval['asr']:.2f}  (clean-model floor {floor:.2f})" if test_poison is not None else ""))
    if plan.suspect_data == "clean":      # the defenses get the training rows before poisoning: nothing to find there
        cell = Cell(model, plan.pool, plan.train, [], plan.test, test_poison, None, setup.progress, plan.seed, second,
                    plan.trace_epochs)
    else:
        cell = Cell(model, plan.pool, ap.poisoned.train, ap.poisoned.poisoned_rows, plan.test, test_poison,
                    retrainer(plan, setup, ap), setup.progress, plan.seed, second, plan.trace_epochs)
    row_base = {**base, "attack": name, "poisoned_rows": len(cell.poisoned_rows),
                "poison_test_rows": len(test_poison) if test_poison is not None else 0,
                "victim_cacc": victim_eval["cacc"], "victim_asr": victim_eval.get("asr"), "floor_asr": floor,
                "clean_model_cacc": clean_eval["cacc"], "victim_train_seconds": meta["train_seconds"],
                "victim_key": ap.key, "code_version": setup.code()}
    if second is not None:
        row_base["second_victim_asr"] = cache.evaluation(ap.key, model, plan.test, second, setup.progress)["asr"]
        row_base["second_floor_asr"] = cache.evaluation(plan.clean.key, clean_model, plan.test, second,
                                                        setup.progress)["asr"]
    return _with_clean_untriggered([row or _run_cell(spec, cell, ap.key, row_base, cache, plan, log, label, setup)
                                    for spec, row in zip(specs, known)], cache, plan, test_poison, second, setup)


def _with_clean_untriggered(rows: list[Row], cache: BenchCache, plan: DatasetPlan, test_poison, second,
                            setup: BenchSetup) -> list[Row]:
    """Each row with the clean model's own untriggered ASR on its triggered rows: above the floor,
    inserting the trigger moves even the clean model away from the target, and a model that ignores
    the trigger scores about this, not the floor. An evaluation saved before it was measured is made
    again (when computing) from the cached clean model, which is never trained for it."""
    fill, clean = {}, None
    for prefix, poison in (("", test_poison), ("second_", second)):
        got = None if poison is None else cache.cached_evaluation(plan.clean.key, plan.test, poison)
        if got is None and poison is not None and setup.compute:
            clean = clean or cache.victims.load(plan.clean.key)
            got = cache.evaluation(plan.clean.key, clean[0], plan.test, poison, setup.progress) if clean else None
        if got is not None and got.get("untriggered_asr") is not None:
            fill[f"{prefix}floor_untriggered_asr"] = got["untriggered_asr"]
    return [{**row, **fill} if row.get("status") == "ok" else row for row in rows]


def second_backdoor_rows(ap: AttackPlan) -> LabeledTexts | None:
    """The second backdoor's triggered test rows, when the attack planted two (``multi``)."""
    extra = ap.poisoned.extra_backdoors
    return extra[0].test_poison if extra else None


def _known_rows(plan: DatasetPlan, ap: AttackPlan, specs, cache: BenchCache, reuse: dict, setup: BenchSetup,
                log, label: str) -> list[dict | None]:
    """Per defense: its cell of the workdir (which keeps the details), else a row of an earlier
    results.json, when either belongs to this victim and code version; else None."""
    known, stale = [], []
    for spec in specs:
        row = reuse.get((plan.ds.name, ap.name, spec.name))
        found, why = cache.find_cell(spec, plan.ds.name, ap.name, ap.key, plan, ap.poisoned.test_poison,
                                     second_backdoor_rows(ap), setup.code(), setup.reuse_any_version)
        if found is None and row is not None and row.get("victim_key") != ap.key:
            why = why or "the earlier row's victim differs: data or options changed"
            row = None
        if why and not (found or row):
            stale.append(f"{spec.name} ({why})")
        known.append(found or row)
    if stale and setup.compute:
        log(f"[{label}] not reused, computed again: {', '.join(stale)}")
    return known


def _run_cell(spec: DefenseSpec, cell: Cell, victim_key: str, row_base: dict, cache: BenchCache, plan: DatasetPlan,
              log, label, setup: BenchSetup) -> Row:
    key = cache.cell_key(spec, victim_key, plan, cell.test_poison, cell.second_poison)
    path = cache.cell_path(row_base["dataset"], row_base["attack"], spec, victim_key, key)
    if not setup.compute:
        return {**row_base, "defense": spec.name, "status": NOT_RUN}
    # locked per cell (its key): a run of other options of the same defense on this victim does not
    # wait; the file name is chosen and written under the name's own lock, briefly
    with file_lock(path.with_name(f"{spec.name}.{key}.lock"),
                   lambda: log(f"[{label}] {spec.name}: waiting for another run computing this cell")):
        found, _ = cache.find_cell(spec, row_base["dataset"], row_base["attack"], victim_key, plan, cell.test_poison,
                                   cell.second_poison, row_base["code_version"], setup.reuse_any_version)
        if found is not None:          # computed by another run while this one waited
            log(f"[{label}] {spec.name}: cached by another run")
            return found
        start = time.perf_counter()
        try:
            out = run_defense(spec, cell)
        except WriteError:
            raise
        except BedkdError as exc:      # this cell cannot run (e.g. a defense's option); the others go on
            log(f"[{label}] {spec.name}: failed: {exc}")
            return {**row_base, "defense": spec.name, "status": f"failed: {exc}"}
        seconds = time.perf_counter() - start - out.get("trace_seconds", 0.0)
        if not out:         # no defense: the victim's numbers
            out = _victim_numbers(cache, victim_key, cell)
        row = {**row_base, "defense": spec.name, "status": "ok",
               **_summary(out, row_base, seconds if spec.role != "none" else 0.0)}
        with file_lock(path.with_name(f"{spec.name}.lock")):
            path = cache.cell_path(row_base["dataset"], row_base["attack"], spec, victim_key, key)   # taken meanwhile?
            atomic_write_text(path, json.dumps({"key": key, "units": UNITS, "row": row, "details": out}, indent=2))
    if spec.role != "none":
        asr = f"  ASR {row['asr']:.2f}" if row["asr"] is not None else ""
        log(f"[{label}] {spec.name}: CACC {row['cacc']:.2f}{asr}  ({seconds:.0f} s)")
    return row


def _victim_numbers(cache: BenchCache, victim_key: str, cell: Cell) -> dict:
    """The no-defense row's numbers: the victim's evaluations (cached when its row base was made)."""
    out = {}
    for prefix, poison in (("", cell.test_poison), ("second_", cell.second_poison)):
        if prefix and poison is None:
            continue
        got = cache.evaluation(victim_key, cell.victim, cell.test, poison, cell.progress)
        out.setdefault("cacc", got["cacc"])
        out[f"{prefix}asr"], out[f"{prefix}untriggered_asr"] = got.get("asr"), got.get("untriggered_asr")
    return out


def _summary(out: dict, base: dict, seconds: float) -> dict:
    det = out.get("detection") or {}
    asr = out.get("asr")
    stages = out.get("seconds") or {}
    return {"cacc": out["cacc"], "asr": asr, **({"second_asr": out["second_asr"]} if "second_asr" in out else {}),
            "untriggered_asr": out.get("untriggered_asr"), "second_untriggered_asr": out.get("second_untriggered_asr"),
            "cacc_change": out["cacc"] - base["victim_cacc"],
            "asr_reduction": None if asr is None else base["victim_asr"] - asr,
            "flagged": det.get("flagged"), "kept": det.get("kept"),
            "flagged_precision": det.get("flagged_precision"), "flagged_recall": det.get("flagged_recall"),
            "flagged_recall_all": det.get("flagged_recall_all"), "kept_precision": det.get("kept_precision"),
            "frr": out.get("frr"), "detection_rate": out.get("detection_rate"), "clean_rows_used": out.get("clean_rows_used", 0),
            "defense_seconds": seconds,
            "dmm_seconds": stages.get("dmm"), "scan_seconds": stages.get("scan"),
            "akd_seconds": None if stages.get("akd") is None else stages["akd"] - out.get("trace_seconds", 0.0),
            "selected_epoch": out.get("selected_epoch"), "backdoor_found": out.get("backdoor_found"),
            "target_found": out.get("target_found"), "trigger_found": out.get("trigger_found"),
            "unexplained_acts": out.get("unexplained_acts")}
