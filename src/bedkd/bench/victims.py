"""Cache of trained victims, keyed by everything that determines them.

A victim lives in ``<cache>/<key>/`` (model files + ``victim.json``). The key hashes the dataset,
the attack and all its options, the training options, the backbone (a local folder by its files'
content, see :func:`backbone_identity`), a fingerprint of the training rows' content and the SHA-256
of the data files the attack reads (SynBkd / StyleBkd paraphrases), so moving the data folder or the
backbone does not retrain, and changing any input does. A victim is trained under the
lock ``<cache>/<key>.lock``, so two runs sharing the cache train it once.
"""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

from ..data import LabeledTexts
from ..modeling import Classifier, load_classifier, save_classifier
from ..outputs import file_lock, writing


def cache_key(*parts) -> str:
    """A short hash of JSON-able ``parts`` (dicts are sorted)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def fingerprint(data: LabeledTexts) -> str:
    """Hash of the rows' texts and labels (not of the file's path)."""
    h = hashlib.sha256()
    for text, label in zip(data.texts, data.labels):
        h.update(f"{label}\t{text}\n".encode())
    return h.hexdigest()[:16]


def backbone_identity(backbone: str | None) -> str | None:
    """How a victim key names its backbone: None (the packaged MiniLM) as it is; a local folder by the
    SHA-256 of its files (names and content), so that the same weights at another path give the same key
    and other weights at the same path another; anything else (a hub name) as given. Keys of a folder
    named by its path, before this, do not match these."""
    if backbone is None or not Path(backbone).is_dir():
        return backbone
    root = Path(backbone)
    stats = [(p, p.stat()) for p in sorted(root.rglob("*")) if p.is_file()]
    files = tuple((p.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns) for p, st in stats)
    return _folder_hash(str(root), files)


@functools.lru_cache(maxsize=8)
def _folder_hash(root: str, files: tuple) -> str:
    """Hashed once per process for each state of the folder (names, sizes, modification times)."""
    h = hashlib.sha256()
    for name, _, _ in files:
        h.update(f"{name}\0".encode())
        with open(Path(root) / name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return f"folder sha256:{h.hexdigest()}"


def victim_key(dataset: str, attack: str, attack_options: dict, train_cfg, backbone: str | None,
               train: LabeledTexts, num_labels: int, attack_files: dict[str, str] | None = None) -> str:
    """Everything that determines a trained victim: dataset, attack and all its options, training
    options (seed included), backbone, the training rows' content, the number of classes, and
    ``attack_files``: {role: SHA-256} of the files the attack reads besides the training rows
    (content, not path; left out of the key when there are none, so those keys stay as they were)."""
    parts = ["victim", dataset, attack, attack_options, train_cfg.to_dict(), backbone_identity(backbone),
             fingerprint(train), num_labels]
    return cache_key(*parts, *([attack_files] if attack_files else []))


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
        with writing(self.root / key):
            self.root.mkdir(parents=True, exist_ok=True)
            save_classifier(clf, self.root / key, overwrite=True,
                            extra_files={"victim.json": json.dumps({"key": key, "meta": meta}, indent=2)})

    def lock(self, key: str, on_wait=None):
        """Exclusive lock of one victim (see :func:`bedkd.outputs.file_lock`)."""
        return file_lock(self.root / f"{key}.lock", on_wait)
