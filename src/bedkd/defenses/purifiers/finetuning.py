"""Plain fine-tuning of the suspicious model on the defender's clean rows (a baseline purifier).

Fine-tuning on clean data is the simplest removal defense and the baseline that both Fine-Pruning
(Liu, Dolan-Gavitt, Garg, RAID 2018, arXiv:1805.12185) and NAD (Li et al., ICLR 2021,
arXiv:2101.05930) compare against. For a pretrained transformer we use the BERT fine-tuning
recipe (Devlin et al., "BERT", NAACL 2019, appendix A.3: Adam, lr in {5e-5, 3e-5, 2e-5}, batch
16 or 32, 2-4 epochs): lr 2e-5, batch 16, 4 epochs, with this project's ``TrainConfig`` schedule
(AdamW, weight decay 0.01, linear warm-up over 6% of the steps then linear decay, gradient norm
clipped at 1).

Clean budget: the same rows as BeDKD for the same seed (``clean_split.CleanBudget``): ``trust_per_class``
rows per class to train on and ``val_per_class`` held out to choose the epoch.

Choosing the epoch (shared by the baselines; BeDKD's rule without its flag-agreement term): the
latest epoch whose clean validation accuracy is at most ``max_cacc_drop`` points below the
suspicious model's; if there is none, the most accurate one. The held-out rows are never trained on.

The clean budget, the training loop and the epoch choice are shared with the other baselines
(``training.py``).
"""
from __future__ import annotations

from dataclasses import dataclass

from ...options import option
from .training import CleanRowsPurifier, CleanTrainingOptions, TrainSettings, train_epochs


@dataclass
class FineTuningConfig(CleanTrainingOptions):
    """Fine-tuning purifier options"""
    epochs: int = option(4, "passes over the clean rows", low=1)


class FineTuning(CleanRowsPurifier):
    """Fine-tune a copy of the suspicious model on the clean rows (the input is never modified)."""
    name, method, options = "finetune", "fine-tuning", FineTuningConfig

    def _train(self, suspect_model, rows, seconds, progress):
        student = suspect_model.copy()
        run = train_epochs(student.model, rows, student.tokenizer.pad_token_id, TrainSettings.of(self.config),
                           desc="fine-tuning", progress=progress)
        seconds["finetune"] = run.seconds
        return student, run, {}
