"""Cache of trained victims, keyed by everything that determines them.

A victim lives in ``<cache>/<key>/`` (model files + ``victim.json``). The key hashes the dataset,
the attack and all its options, the training options, the backbone and a fingerprint of the training
rows' content, so moving the data folder does not retrain, and changing any input does.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..data import LabeledTexts
from ..modeling import Classifier, load_classifier, save_classifier
from ..options import Options


def cache_key(*parts) -> str:
    """A short hash of JSON-able ``parts`` (dicts are sorted)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def fingerprint(data: LabeledTexts) -> str:
    """Hash of the rows' texts and labels (not of the file's path)."""
    h = hashlib.sha256()
    for text, label in zip(data.texts, data.labels):
        h.update(f"{label}\t{text}\n".encode())
    return h.hexdigest()[:16]


def options_of(obj) -> dict:
    """Every ``Options`` attribute of an attack or defense object, by attribute name."""
    return {k: v.to_dict() for k, v in sorted(vars(obj).items()) if isinstance(v, Options)}


def victim_key(dataset: str, attack: str, attack_options: dict, train_cfg, backbone: str | None,
               train: LabeledTexts, num_labels: int) -> str:
    """Everything that determines a trained victim: dataset, attack and all its options, training
    options (seed included), backbone, the training rows' content, the number of classes."""
    return cache_key("victim", dataset, attack, attack_options, train_cfg.to_dict(), backbone,
                     fingerprint(train), num_labels)


class VictimCache:
    def __init__(self, root):
        self.root = Path(root)

    def load(self, key: str) -> tuple[Classifier, dict] | None:
        folder = self.root / key
        meta = folder / "victim.json"
        if not meta.is_file():
            return None
        saved = json.loads(meta.read_text())
        if saved.get("key") != key:
            return None
        return load_classifier(str(folder)), saved["meta"]

    def save(self, key: str, clf: Classifier, meta: dict) -> None:
        """Written atomically: an interrupted save leaves no half victim behind."""
        self.root.mkdir(parents=True, exist_ok=True)
        save_classifier(clf, self.root / key, overwrite=True,
                        extra_files={"victim.json": json.dumps({"key": key, "meta": meta}, indent=2)})
