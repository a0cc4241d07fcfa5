"""StyleBkd: the trigger is a text style (Bible by default), produced by STRAP style transfer.

Qi, Chen, Zhang, Li, Liu, Sun, "Mind the Style of Text! Adversarial and Backdoor Attacks Based on
Text Style Transfer", EMNLP 2021 (arXiv:2110.07139). The paraphrases are StyleAttack's released
``style-<style>`` files in the data pack. They keep the original labels, so the attack relabels the
poisoned rows itself. Alignment follows the pack README, sections 4 and 5 (A1).
"""
from __future__ import annotations

from ..datasets import STYLE_SPLITS, available_styles
from ..errors import BedkdError, ConfigError
from .base import AttackConfig
from .paraphrase import (MERGED_RUNS, Alignment, ParaphraseAttack, check_length, check_source_labels,
                         monotone_with_merges, read_cached, row_aligned)

DEFAULT_STYLE = "bible"


class StyleBkd(ParaphraseAttack):
    """Style-transferred paraphrases as poison; any ``style-<name>`` folder of the dataset."""
    name = "stylebkd"
    default_style = DEFAULT_STYLE
    takes_style = True

    def __init__(self, cfg: AttackConfig, data_dir=None, dataset: str = "sst2", style: str = DEFAULT_STYLE):
        super().__init__(cfg, data_dir, dataset)
        styles = available_styles(dataset, self.data_dir)
        if style not in styles:
            folder = self.data_dir / dataset / f"style-{style}"
            missing = [folder / f"{split}.tsv" for split in STYLE_SPLITS if not (folder / f"{split}.tsv").is_file()]
            what = (f"{missing[0]} is missing (the pack skipped it, README section 6)" if folder.is_dir() and missing
                    else f"no style '{style}' for {dataset} in {self.data_dir}")
            raise ConfigError(f"stylebkd: {what}; the styles of {dataset} with train and test paraphrases: "
                              f"{', '.join(styles) or '(none)'}")
        self.style = style

    def alignment(self, split: str) -> Alignment:
        folder = self.data_dir / self.dataset / f"style-{self.style}"
        path = folder / f"{split}.tsv"
        if not path.is_file():
            have = sorted(p.stem for p in folder.glob("*.tsv"))
            raise BedkdError(f"stylebkd: {path} is missing (the pack skipped it, README section 6); "
                             f"style '{self.style}' of {self.dataset} has only: {', '.join(have) or 'no files'}")
        file, clean = read_cached(path), self.clean(split)
        what = f"stylebkd {self.dataset}/{self.style}/{split}"
        if len(file) == len(clean):          # row-aligned
            alignment = Alignment(file, row_aligned(len(clean)))
        elif (self.dataset, split) in MERGED_RUNS:   # monotone with merges (README A1)
            alignment = Alignment(file, *monotone_with_merges(self.dataset, split, len(clean)))
        else:
            raise BedkdError(f"{what}: {len(file)} rows against {len(clean)} clean rows and no known mapping")
        check_length(file, alignment.sources, what)
        check_source_labels(alignment, clean, what)
        return alignment
