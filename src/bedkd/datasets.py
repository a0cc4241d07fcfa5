"""Named datasets of the shared data pack (SST-2, OLID, AG News) and user ones.

The pack layout is ``<data_dir>/<name>/clean/{train,dev,test}.tsv`` (see the pack's README).
The data directory comes from an argument or the ``BEDKD_DATA_DIR`` environment variable.
A user dataset is registered from its three files (:func:`register_dataset`), or is any folder
``<data_dir>/<name>/clean/`` holding ``train.tsv``, ``dev.tsv`` and ``test.tsv``
(:func:`dataset_info`); its number of classes comes from its labels. The paraphrase attacks
(SynBkd, StyleBkd) need the pack's paraphrase files, so they do not run on user datasets.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .data import LabeledTexts, read_labeled, require_all_classes
from .errors import BedkdError, ConfigError, InputError

DATA_DIR_ENV = "BEDKD_DATA_DIR"
SPLITS = ("train", "dev", "test")
_FOLDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class DatasetInfo:
    """What is known about a dataset before loading it."""
    name: str
    num_labels: int | None                  # None: inferred from the labels when loaded
    label_names: tuple[str, ...] = ()
    syntactic_target: int | None = None     # label HiddenKiller's ``syntactic`` files were relabeled to
    files: dict[str, Path] = field(default_factory=dict)   # user datasets: split -> file; empty: pack layout


@dataclass(frozen=True)
class Dataset:
    """A loaded dataset: the three clean splits and the number of classes."""
    name: str
    train: LabeledTexts
    dev: LabeledTexts
    test: LabeledTexts
    num_labels: int


# Label names from the pack README, section 2; the HiddenKiller targets are stated there too.
DATASETS: dict[str, DatasetInfo] = {
    "sst2": DatasetInfo("sst2", 2, ("negative", "positive"), syntactic_target=1),
    "olid": DatasetInfo("olid", 2, ("not offensive", "offensive"), syntactic_target=1),
    "agnews": DatasetInfo("agnews", 4, ("World", "Sports", "Business", "Sci/Tech"), syntactic_target=0),
}


def resolve_data_dir(data_dir=None) -> Path:
    """``data_dir`` if given, else ``$BEDKD_DATA_DIR``; the folder must exist."""
    if data_dir is None:
        data_dir = os.environ.get(DATA_DIR_ENV)
        if not data_dir:
            raise BedkdError(f"no data directory: pass data_dir or set {DATA_DIR_ENV}")
    path = Path(data_dir)
    if not path.is_dir():
        raise BedkdError(f"data directory {path} " + ("is not a folder" if path.exists() else "does not exist"))
    return path


def dataset_info(name: str, data_dir=None) -> DatasetInfo:
    """A registered dataset, else the user dataset in the folder ``<data_dir>/<name>/clean/``."""
    if name in DATASETS:
        return DATASETS[name]
    found = folder_dataset(name, data_dir)
    if found is None:
        raise ConfigError(f"unknown dataset '{name}'; choose from {', '.join(DATASETS)}, or give the data "
                          f"directory a folder {name}/clean/ with train.tsv, dev.tsv and test.tsv")
    return found


def folder_dataset(name: str, data_dir=None) -> DatasetInfo | None:
    """The user dataset ``<data_dir>/<name>/clean/{train,dev,test}.tsv``; None when there is no data
    directory or no such folder. A folder that lacks one of the three files is an error."""
    if not _FOLDER_NAME.fullmatch(name):
        return None
    try:
        root = resolve_data_dir(data_dir)
    except BedkdError:
        return None
    clean = root / name / "clean"
    if not clean.is_dir():
        return None
    files = {split: clean / f"{split}.tsv" for split in SPLITS}
    missing = [path.name for path in files.values() if not path.is_file()]
    if missing:
        raise ConfigError(f"{clean}: dataset '{name}' needs train.tsv, dev.tsv and test.tsv; "
                          f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing")
    return DatasetInfo(name, None, files=files)


def dataset_dir(name: str, data_dir=None) -> Path:
    """``<data_dir>/<name>`` of a pack dataset."""
    dataset_info(name, data_dir)
    path = resolve_data_dir(data_dir) / name
    if not path.is_dir():
        raise BedkdError(f"dataset folder {path} does not exist")
    return path


def clean_path(name: str, split: str, data_dir=None) -> Path:
    """The clean file of one split."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split '{split}'; choose from {', '.join(SPLITS)}")
    info = dataset_info(name, data_dir)
    if info.files:
        return info.files[split]
    return dataset_dir(name, data_dir) / "clean" / f"{split}.tsv"


def register_dataset(name: str, train, dev, test, num_labels: int | None = None,
                     label_names: tuple[str, ...] = (), replace: bool = False) -> DatasetInfo:
    """Register a user dataset from its three clean files (checked when loaded)."""
    if not name or "/" in name:
        raise ConfigError(f"dataset name {name!r} must be non-empty and contain no '/'")
    if name in DATASETS and not replace:
        raise ConfigError(f"dataset '{name}' is already registered (pass replace=True to override)")
    if num_labels is not None and num_labels < 2:
        raise ConfigError(f"num_labels must be >= 2, got {num_labels}")
    info = DatasetInfo(name, num_labels, tuple(label_names),
                       files={"train": Path(train), "dev": Path(dev), "test": Path(test)})
    DATASETS[name] = info
    return info


def load_dataset(name: str, data_dir=None) -> Dataset:
    """Read the clean train/dev/test files of ``name``."""
    info = dataset_info(name, data_dir)
    splits = {s: read_labeled(clean_path(name, s, data_dir)) for s in SPLITS}
    num_labels = info.num_labels or max(2, 1 + max(max(d.labels) for d in splits.values()))
    for split, data in splits.items():
        bad = [i for i, y in enumerate(data.labels) if not 0 <= y < num_labels]
        if bad:
            raise InputError(data.source, f"label {data.labels[bad[0]]} is outside {name}'s classes "
                                          f"0..{num_labels - 1}", data.line_of(bad[0]))
    if info.num_labels is None:
        # Classes inferred from the labels: each of 0..K-1 must have training rows (labels 1..K would
        # otherwise make a class 0 that nothing teaches, and the label flip maps onto it).
        require_all_classes(splits["train"], num_labels, f"dataset '{name}' (classes inferred from its labels)")
    return Dataset(name, splits["train"], splits["dev"], splits["test"], num_labels)


STYLE_SPLITS = ("train", "test")    # what StyleBkd poisons; the pack skipped some (its README, section 6)


def available_styles(name: str, data_dir=None) -> list[str]:
    """Styles whose ``style-<style>`` folder for ``name`` holds the splits StyleBkd poisons, sorted."""
    if dataset_info(name, data_dir).files:
        return []
    root = dataset_dir(name, data_dir)
    return sorted(p.name[len("style-"):] for p in root.glob("style-*")
                  if p.is_dir() and all((p / f"{split}.tsv").is_file() for split in STYLE_SPLITS))
