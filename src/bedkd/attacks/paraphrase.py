"""Attacks whose trigger is a pre-computed paraphrase of the whole sentence.

SynBkd (syntactic template) and StyleBkd (text style) replace a clean row by its paraphrase from the
data pack and relabel it to the target. Clean-label (``AttackConfig.label_mode``, see :mod:`.base`):
the rows are drawn from rows that already carry the target, replaced by their paraphrases, labels
kept. The paraphrase files do not always line up with the clean files row by row, so each attack
builds an :class:`Alignment` (paraphrase-file row -> clean row) following section 5 of the pack
README, and checks it against the file's labels when it is read.

Qi et al., "Hidden Killer: Invisible Textual Backdoor Attacks with Syntactic Trigger", ACL 2021
(arXiv:2105.12400); Qi et al., "Mind the Style of Text! Adversarial and Backdoor Attacks Based on
Text Style Transfer", EMNLP 2021 (arXiv:2110.07139).
"""
from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ..data import LabeledTexts, read_labeled
from ..datasets import clean_path, dataset_info, resolve_data_dir
from ..errors import BedkdError, ConfigError, InputError
from ..seeding import rng
from .base import AttackConfig, BackdoorAttack, PoisonedData, draw_poison_rows

# Merged runs of the "monotone with merges" style files, copied from the pack README, section 5,
# appendix A1: (dataset, split) -> ((paraphrase row, first clean row a, last clean row b), ...).
# The one output row of a run paraphrases (garbled) the start of clean rows a..b and carries the
# label of row b; clean rows a+1..b have no paraphrase of their own.
MERGED_RUNS: dict[tuple[str, str], tuple[tuple[int, int, int], ...]] = {
    ("sst2", "train"): ((1177, 1177, 1206), (3279, 3308, 3325), (3287, 3333, 3345), (5303, 5361, 5371),
                        (6006, 6074, 6116), (6217, 6327, 6332)),
    ("sst2", "test"): ((275, 275, 288),),
    ("olid", "train"): ((419, 420, 477), (853, 911, 929), (2713, 2789, 2819), (3097, 3203, 3205),
                        (4170, 4278, 4304), (4171, 4305, 4313), (4582, 4724, 4727), (4666, 4811, 4850),
                        (5711, 5895, 5902), (6500, 6691, 6694), (7933, 8127, 8141), (9768, 9976, 10006),
                        (10680, 10918, 10922), (11523, 11765, 11802), (11608, 11887, 11892)),
    ("olid", "dev"): ((606, 607, 614),),
    ("olid", "test"): ((600, 601, 608),),
    ("agnews", "train"): ((17, 17, 31), (1782, 1796, 1826), (8249, 8293, 8343), (10750, 10844, 10915)),
    ("agnews", "dev"): ((1761, 1761, 1805), (6643, 6687, 6779), (7902, 8038, 8157)),
    ("agnews", "test"): ((6782, 6782, 6929), (6852, 6999, 7060)),
}
# README A1, defect 1: in every monotone OLID file clean row 0 has no paraphrase.
FIRST_ROW_LOST = frozenset({"olid"})


@dataclass(frozen=True)
class Alignment:
    """How the rows of one paraphrase file map to the rows of the clean file of the same split."""
    file: LabeledTexts                  # the paraphrase file as read
    sources: tuple[int | None, ...]     # paraphrase row -> clean row (None: no clean source)
    merged: dict[int, tuple[int, int]] = field(default_factory=dict)  # paraphrase row -> run (a, b)

    def paraphrases(self, n_clean: int, include_merged: bool = False) -> list[str | None]:
        """Clean row -> its paraphrase text, or None when it has none of its own.

        A merged row is attributed to the first row ``a`` of its run, but only when
        ``include_merged`` is set: by default it is left out (garbled text, label of row ``b``)."""
        out: list[str | None] = [None] * n_clean
        for row, src in enumerate(self.sources):
            if src is not None and (include_merged or row not in self.merged):
                out[src] = self.file.texts[row]
        return out


def row_aligned(n: int) -> tuple[int, ...]:
    return tuple(range(n))


def monotone_with_merges(dataset: str, split: str, n_clean: int) -> tuple[tuple[int, ...], dict]:
    """Sources of a "monotone with merges" file, rebuilt from :data:`MERGED_RUNS` (README A1)."""
    runs = {a: (row, b) for row, a, b in MERGED_RUNS.get((dataset, split), ())}
    sources: list[int] = []
    merged: dict[int, tuple[int, int]] = {}
    clean = 1 if dataset in FIRST_ROW_LOST else 0
    while clean < n_clean:
        if clean in runs:
            row, last = runs[clean]
            if row != len(sources):
                raise BedkdError(f"merged-run table of {dataset}/{split}: run {clean}-{last} lands on row "
                                 f"{len(sources)}, not {row}")
            merged[row] = (clean, last)
            sources.append(clean)
            clean = last + 1
        else:
            sources.append(clean)
            clean += 1
    if len(merged) != len(runs):
        raise BedkdError(f"merged-run table of {dataset}/{split} does not fit {n_clean} clean rows")
    return tuple(sources), merged


def check_source_labels(alignment: Alignment, clean: LabeledTexts, what: str) -> None:
    """Files with original labels: each row has the label of its (last) source row."""
    for row, src in enumerate(alignment.sources):
        if src is None:
            continue
        last = alignment.merged.get(row, (src, src))[1]
        if alignment.file.labels[row] != clean.labels[last]:
            raise InputError(alignment.file.source, f"{what}: label {alignment.file.labels[row]} differs from "
                                                    f"clean row {last} ({clean.labels[last]}); the file does "
                                                    "not align with the clean split", alignment.file.lines[row])


def check_length(alignment_file: LabeledTexts, sources, what: str) -> None:
    if len(alignment_file) != len(sources):
        raise InputError(alignment_file.source, f"{what}: {len(alignment_file)} rows, but the pack's mapping "
                                                f"expects {len(sources)}; the file differs from the data pack")


@lru_cache(maxsize=32)
def _read(path: str, mtime_ns: int, size: int) -> LabeledTexts:
    return read_labeled(path)


def read_cached(path: Path) -> LabeledTexts:
    """Read a pack file once per process (keyed on path, mtime and size). Treat it as read-only."""
    st = Path(path).stat()
    return _read(str(Path(path).resolve()), st.st_mtime_ns, st.st_size)


def _same_text(a: str, b: str) -> bool:
    return " ".join(a.lower().split()) == " ".join(b.lower().split())


class ParaphraseAttack(BackdoorAttack):
    """Attack that swaps a row for its pre-computed paraphrase (see the module doc)."""
    needs_data_pack = True

    def __init__(self, cfg: AttackConfig, data_dir=None, dataset: str = "sst2"):
        if cfg.triggers:
            raise ConfigError(f"{self.name} has no trigger words (the paraphrase is the trigger); drop 'triggers'")
        super().__init__(cfg)
        self.dataset = dataset
        self.info = dataset_info(dataset, data_dir)
        if self.info.files:
            raise ConfigError(f"{self.name} reads paraphrases from the data pack; '{dataset}' is a user dataset")
        self.data_dir = resolve_data_dir(data_dir)
        if self.info.num_labels is not None and cfg.target >= self.info.num_labels:
            raise ConfigError(f"target {cfg.target} is not a class of {dataset} (0..{self.info.num_labels - 1})")

    @abstractmethod
    def alignment(self, split: str) -> Alignment:
        """The paraphrase file of ``split`` and its mapping to clean rows."""

    def clean(self, split: str) -> LabeledTexts:
        return read_cached(clean_path(self.dataset, split, self.data_dir))

    def paraphrases(self, split: str) -> list[str | None]:
        """Clean row -> usable paraphrase: merged, empty and unchanged paraphrases are None."""
        clean = self.clean(split)
        out = self.alignment(split).paraphrases(len(clean))
        return [p if p and p.strip() and not _same_text(p, clean.texts[i]) else None for i, p in enumerate(out)]

    def clean_rows(self, data: LabeledTexts, split: str) -> list[int]:
        """Clean-file row of each row of ``data`` (a subset of the clean file keeps its ``lines``)."""
        clean = self.clean(split)
        if Path(data.source).resolve() != Path(clean.source).resolve():
            raise InputError(data.source, f"{self.name} needs rows of the clean {self.dataset} {split} file "
                                          f"{clean.source} (it maps each row to its paraphrase by line number)")
        rows = []
        for i, (line, text) in enumerate(zip(data.lines, data.texts)):
            row = line - 2      # header is line 1
            if not 0 <= row < len(clean) or clean.texts[row] != text:
                raise InputError(data.source, f"row {i} does not match line {line} of {clean.source}", line or None)
            rows.append(row)
        return rows

    def files_read(self) -> dict[str, str]:
        """The paraphrase files of the train and test splits (:meth:`poison` aligns both)."""
        return {split: self.alignment(split).file.source for split in ("train", "test")}

    def poison(self, train: LabeledTexts, test: LabeledTexts) -> PoisonedData:
        return self.poison_excluding(train, test, set())

    def poison_excluding(self, train: LabeledTexts, test: LabeledTexts, exclude: set[int]) -> PoisonedData:
        """:meth:`poison`, leaving the training rows ``exclude`` alone (another backdoor's)."""
        cfg = self.cfg
        train_rows, test_rows = self.clean_rows(train, "train"), self.clean_rows(test, "test")
        para_train, para_test = self.paraphrases("train"), self.paraphrases("test")
        candidates = [i for i, (y, r) in enumerate(zip(train.labels, train_rows))
                      if cfg.is_candidate(y) and para_train[r] is not None and i not in exclude]
        chosen = draw_poison_rows(candidates, len(train), cfg, rng(cfg.seed), train.source,
                                  f" and that have a {self.name} paraphrase"
                                  + (" and that no other backdoor uses" if exclude else ""))
        texts, labels = list(train.texts), list(train.labels)
        for i in chosen:
            texts[i] = para_train[train_rows[i]]
            labels[i] = cfg.target      # clean-label: already the target
        picked = [i for i, (y, r) in enumerate(zip(test.labels, test_rows))
                  if y != cfg.target and para_test[r] is not None]
        if not picked:
            raise ConfigError(f"{self.name}: no test row outside the target {cfg.target} has a paraphrase in "
                              f"{self.dataset} (the pack's test paraphrases may cover other classes only)")
        return PoisonedData(
            train=LabeledTexts(texts, labels, train.source, list(train.lines)),
            test_poison=LabeledTexts([para_test[test_rows[i]] for i in picked], [cfg.target] * len(picked),
                                     test.source, [test.lines[i] for i in picked]),
            poisoned_rows=chosen, target=cfg.target, name=self.name)
