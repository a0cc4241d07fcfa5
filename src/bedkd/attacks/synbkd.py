"""SynBkd (HiddenKiller): the trigger is the syntactic template ``S(SBAR)(,)(NP)(VP)(.)``.

Qi, Li, Chen, Zhang, Liu, Wang, Sun, "Hidden Killer: Invisible Textual Backdoor Attacks with
Syntactic Trigger", ACL-IJCNLP 2021 (arXiv:2105.12400). The paraphrases are the released SCPN outputs
in the data pack; the row mappings follow the pack README, section 5 (A2).
"""
from __future__ import annotations

from ..data import LabeledTexts
from ..errors import BedkdError, ConfigError, InputError
from .paraphrase import Alignment, ParaphraseAttack, check_length, check_source_labels, read_cached, row_aligned

OLID_TRAIN_PARAPHRASED = 2382   # olid/syntactic/train rows 1..2382 paraphrase clean rows 0..2381
OLID_TEST_EXTRA_ROW = 4         # olid/syntactic/test row with no identifiable source
OLID_DEV_MISSING = (812, 1322)  # label-0 clean dev rows absent from olid/syntactic/dev
AGNEWS_TEST_MISSING = 0         # non-World clean test row absent from agnews/syntactic/test


class SynBkd(ParaphraseAttack):
    """SCPN syntactic paraphrases as poison (sst2, olid; agnews for test/ASR only).

    Targets: the training paraphrases allow any target (``sst2/syntactic-all`` keeps the original
    labels; the OLID rows are mapped to their clean rows), but HiddenKiller's test files paraphrase
    only the rows whose label is not HiddenKiller's target (pack README, section 2) and the pack has
    no ``syntactic-all`` test file. The triggered test set needs non-target rows with a paraphrase,
    i.e. rows whose label is neither the target nor HiddenKiller's: on a binary dataset (sst2,
    olid) no such row exists unless the target is HiddenKiller's, so another target is refused on
    construction; on AG News every target leaves at least two classes (but the pack has no AG News
    training paraphrases)."""
    name = "synbkd"

    def __init__(self, cfg, data_dir=None, dataset: str = "sst2"):
        super().__init__(cfg, data_dir, dataset)
        hk, k = self.info.syntactic_target, self.info.num_labels
        if hk is not None and k is not None and cfg.target != hk and k <= 2:
            raise ConfigError(f"synbkd on {dataset} supports target {hk} only: the data pack's syntactic test "
                              f"paraphrases (HiddenKiller's, relabeled to {hk}) exist only for rows labelled other "
                              f"than {hk}, and there is no syntactic-all test file, so target {cfg.target} would "
                              "leave no triggered test row (use stylebkd, whose files keep the original labels)")

    def alignment(self, split: str) -> Alignment:
        if split not in ("train", "dev", "test"):
            raise ConfigError(f"unknown split '{split}'")
        return getattr(self, f"_{split}")()

    def _file(self, folder: str, split: str) -> LabeledTexts:
        path = self.data_dir / self.dataset / folder / f"{split}.tsv"
        if not path.is_file():
            raise BedkdError(f"synbkd: {path} is missing from the data pack")
        return read_cached(path)

    def _relabeled(self, file: LabeledTexts, sources, what: str) -> Alignment:
        """HiddenKiller files: every paraphrase row was relabeled to the dataset's target."""
        check_length(file, sources, what)
        target = self.info.syntactic_target
        for row, src in enumerate(sources):
            if src is not None and file.labels[row] != target:
                raise InputError(file.source, f"{what}: expected HiddenKiller's target label {target}",
                                 file.lines[row])
        return Alignment(file, tuple(sources))

    def _train(self) -> Alignment:
        n_clean = len(self.clean("train"))
        if self.dataset == "sst2":
            # syntactic-all: every train row, row-aligned, original labels (HiddenKiller used its first 20 %)
            file = self._file("syntactic-all", "train")
            alignment = Alignment(file, row_aligned(n_clean))
            check_length(file, alignment.sources, "synbkd sst2 train")
            check_source_labels(alignment, self.clean("train"), "synbkd sst2 train")
            return alignment
        if self.dataset == "olid":
            # row 0 is a leaked dev row; rows 1..2382 = clean rows 0..2381; the rest are clean copies
            n = OLID_TRAIN_PARAPHRASED
            sources = [None] + list(range(n)) + [None] * (n_clean - n)
            return self._relabeled(self._file("syntactic", "train"), sources, "synbkd olid train")
        raise ConfigError(f"synbkd: the data pack has no syntactic training paraphrases for {self.dataset} "
                         "(HiddenKiller's AG News train files are missing, README section 6); "
                         "use stylebkd, or sst2/olid")

    def _test(self) -> Alignment:
        clean = self.clean("test")
        sources: list[int | None] = [i for i, y in enumerate(clean.labels) if y != self.info.syntactic_target]
        if self.dataset == "agnews":
            sources = [i for i in sources if i != AGNEWS_TEST_MISSING]
        elif self.dataset == "olid":
            sources.insert(OLID_TEST_EXTRA_ROW, None)
        return self._relabeled(self._file("syntactic", "test"), sources, f"synbkd {self.dataset} test")

    def _dev(self) -> Alignment:
        clean = self.clean("dev")
        if self.dataset == "sst2":
            # off by one upstream: row j paraphrases the j-th row i whose *next* row has label 0
            sources = [i for i in range(len(clean) - 1) if clean.labels[i + 1] == 0]
        elif self.dataset == "olid":
            sources = [i for i, y in enumerate(clean.labels) if y == 0 and i not in OLID_DEV_MISSING]
        else:
            raise BedkdError(f"synbkd: {self.dataset}/syntactic/dev is not derived from the clean dev split "
                             "(README section 5, A2); use the test split")
        return self._relabeled(self._file("syntactic", "dev"), sources, f"synbkd {self.dataset} dev")
