"""One experiment end to end: poison, train the victim, evaluate, purify, evaluate again.

Used by ``bedkd demo`` and by the benchmark scripts; every stage is timed. Cache files are written
atomically, so an interrupted run leaves whole entries only.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from .attacks import AttackConfig, make_attack
from .bench.runner import attack_files
from .bench.victims import cache_key
from .data import LabeledTexts, random_limit, write_tsv
from .defenses import AKDConfig, BeDKD, DMMConfig, ScanConfig
from .evaluation import evaluate
from .modeling import TrainConfig, default_backbone, load_classifier, save_classifier
from .outputs import atomic_write_text, writing
from .provenance import environment, sha256_file
from .seeding import seed_everything


@dataclass
class Experiment:
    """Inputs of one experiment; ``defenses`` maps a name to (DMM, AKD) options."""
    train: LabeledTexts
    test: LabeledTexts
    clean_pool: LabeledTexts
    attack: str
    attack_cfg: AttackConfig = field(default_factory=AttackConfig)
    train_cfg: TrainConfig = field(default_factory=TrainConfig)
    defenses: dict[str, tuple[DMMConfig, AKDConfig, ScanConfig]] = field(default_factory=dict)
    train_limit: int | None = None
    backbone: str | None = None
    dataset: str | None = None     # data-pack dataset of ``train``/``test``: SynBkd / StyleBkd read its paraphrases
    data_dir: str | Path | None = None


def machine() -> dict:
    """The machine a result was computed on; see :func:`bedkd.provenance.environment`."""
    return environment()


def _cached(path: Path, key: str, reuse: bool):
    if reuse and path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("key") == key:
            return saved["result"]
    return None


def run_experiment(exp: Experiment, workdir: Path, progress: bool = True, log=print, reuse: bool = True) -> dict:
    """Run (or, with ``reuse``, load from ``workdir``) the victim and each defense.

    The victim is cached under a key of everything that determines it (data, attack, training
    options, backbone); each defense result under the victim's key plus its own options.
    """
    workdir = Path(workdir)
    with writing(workdir):
        workdir.mkdir(parents=True, exist_ok=True)
    num_labels = max(2, max(exp.train.labels) + 1)
    train = exp.train.subset(random_limit(exp.train, exp.train_limit, exp.train_cfg.seed))
    attack = make_attack(exp.attack, exp.attack_cfg, exp.dataset, exp.data_dir)
    poisoned = attack.poison(train, exp.test)
    with writing(workdir / "test_poison.tsv"):
        write_tsv(workdir / "test_poison.tsv", poisoned.test_poison)
    log(f"[{exp.attack}] poisoned {len(poisoned.poisoned_rows)} of {len(train)} training rows")

    # paraphrase attacks: the content of the files they read (no extra part for the others, so their keys stay)
    files = attack_files(attack)
    read = {role: sha256_file(path) for role, path in files.items()}
    victim_key = cache_key(exp.attack, exp.attack_cfg.to_dict(), exp.train_cfg.to_dict(), exp.train_limit,
                           exp.backbone, exp.train.source, len(exp.train), exp.test.source, len(exp.test),
                           *([read] if read else []))
    before = _cached(workdir / "victim.json", victim_key, reuse and (workdir / "victim").is_dir())
    if before is not None:
        victim = load_classifier(str(workdir / "victim"))
        log(f"[{exp.attack}] victim (cached): CACC {before['cacc']:.2f}  ASR {before['asr']:.2f}")
    else:
        seed_everything(exp.train_cfg.seed)   # the new classification head is drawn at load time
        victim = load_classifier(exp.backbone or default_backbone(), num_labels=num_labels)
        t = time.perf_counter()
        attack.train_victim(victim, poisoned, exp.train_cfg, progress=progress)
        train_seconds = time.perf_counter() - t
        with writing(workdir / "victim"):
            save_classifier(victim, workdir / "victim", overwrite=True)
        before = {**evaluate(victim, exp.test, poisoned.test_poison, progress=progress), "train_seconds": train_seconds}
        atomic_write_text(workdir / "victim.json", json.dumps({"key": victim_key, "result": before}, indent=2))
        log(f"[{exp.attack}] victim: CACC {before['cacc']:.2f}  ASR {before['asr']:.2f}  ({train_seconds:.0f} s)")

    result = {"attack": exp.attack, "attack_config": exp.attack_cfg.to_dict(), "train_config": exp.train_cfg.to_dict(),
              "train_rows": len(train), "poisoned_rows": len(poisoned.poisoned_rows),
              "clean_pool_rows": len(exp.clean_pool), "test_rows": len(exp.test),
              "poison_test_rows": len(poisoned.test_poison), "victim": before, "defenses": {},
              **({"attack_files": files} if files else {})}
    for name, configs in exp.defenses.items():
        key = cache_key(victim_key, *[c.to_dict() for c in configs], exp.clean_pool.source, len(exp.clean_pool))
        cache = workdir / f"defense_{name}.json"
        done = _cached(cache, key, reuse)
        if done is None:
            out = BeDKD(*configs).purify(victim, exp.clean_pool, poisoned.train,
                                         poisoned_rows=poisoned.poisoned_rows, progress=progress)
            after = evaluate(out.classifier, exp.test, poisoned.test_poison, progress=progress)
            atomic_write_text(workdir / f"report_{name}.json", json.dumps(out.report, indent=2))
            done = {**after, "detection": out.report["detection"], "seconds": out.report["seconds"],
                    "selected_epoch": out.report["selected_epoch"], "epochs_run": len(out.report["epochs"]),
                    "stop_reason": out.report["stop_reason"], "data": out.report["data"]}
            atomic_write_text(cache, json.dumps({"key": key, "result": done}, indent=2))
        log(f"[{exp.attack}] {name}: CACC {done['cacc']:.2f}  ASR {done['asr']:.2f}  "
            f"({done['seconds']['total']:.0f} s, epoch {done['selected_epoch']})")
        result["defenses"][name] = done
    return result
