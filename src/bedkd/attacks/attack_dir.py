"""The folder ``bedkd attack`` writes and ``bedkd train --attack-dir`` reads.

``train.tsv`` (the poisoned training set), ``test_poison.tsv`` (triggered non-target test rows),
``poisoned_rows.txt`` / ``augmented_rows.txt`` (0-based row numbers, one per line) and
``attack.json`` (the attack's name, its options and where its input came from).
"""
from __future__ import annotations

import json
from pathlib import Path

from ..data import check_rows, read_labeled, read_row_indices, write_tsv
from ..errors import InputError
from ..options import options_of
from . import ATTACK_OPTIONS, ATTACKS, make_attack
from .base import AttackConfig, BackdoorAttack, PoisonedData

RECORD = "attack.json"


def save_attack_dir(folder, name: str, attack: BackdoorAttack, result: PoisonedData, source: dict) -> None:
    """Write ``result`` of ``attack`` (called ``name``) into the existing ``folder``; ``source``
    (input files, dataset) goes into the record as is."""
    folder = Path(folder)
    write_tsv(folder / "train.tsv", result.train)
    write_tsv(folder / "test_poison.tsv", result.test_poison)
    for field in ("poisoned_rows", "augmented_rows"):
        (folder / f"{field}.txt").write_text("".join(f"{r}\n" for r in getattr(result, field)))
    (folder / RECORD).write_text(json.dumps(
        {"attack": name, "config": attack.cfg.to_dict(), "options": options_of(attack), **source,
         "poisoned": len(result.poisoned_rows), "augmented": len(result.augmented_rows),
         "train_rows": len(result.train), "test_poison_rows": len(result.test_poison),
         "trains_victim": attack.trains_victim}, indent=2))


def load_attack_dir(folder) -> tuple[BackdoorAttack | None, PoisonedData]:
    """(attack, PoisonedData) from a ``bedkd attack`` output; attack is None when plain fine-tuning
    on its train.tsv is the attack's training (every data-poisoning attack)."""
    folder = Path(folder)
    meta_path = folder / RECORD
    if not meta_path.is_file():
        raise InputError(meta_path, "not found: --attack-dir must be an output of 'bedkd attack'")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        name, cfg = meta["attack"], AttackConfig.from_dict(meta["config"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(meta_path, f"not a valid attack record ({type(exc).__name__}: {exc})") from None
    if name not in ATTACKS:
        raise InputError(meta_path, f"unknown attack '{name}'")
    augmented = folder / "augmented_rows.txt"
    poisoned = PoisonedData(train=read_labeled(folder / "train.tsv"), test_poison=read_labeled(folder / "test_poison.tsv"),
                            poisoned_rows=read_row_indices(folder / "poisoned_rows.txt"), target=cfg.target,
                            augmented_rows=read_row_indices(augmented) if augmented.is_file() else [])
    check_rows(poisoned.poisoned_rows + poisoned.augmented_rows, len(poisoned.train), folder / "poisoned_rows.txt")
    if not ATTACKS[name].trains_victim:
        return None, poisoned
    own_cls = ATTACK_OPTIONS.get(name)
    own = own_cls.from_dict((meta.get("options") or {}).get("options", {})) if own_cls else None
    return make_attack(name, cfg, options=own), poisoned
