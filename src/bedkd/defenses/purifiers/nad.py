"""Neural Attention Distillation (NAD), adapted to transformer text classifiers.

Li, Lyu, Koren, Lyu, Li, Ma, "Neural Attention Distillation: Erasing Backdoor Triggers from Deep
Neural Networks", ICLR 2021 (arXiv:2101.05930); reference code github.com/bboylyg/NAD.

A copy of the suspicious model is fine-tuned on the clean rows to give the *teacher*; the
*student*, another copy of the suspicious model, is then trained on the same rows with
``CE + beta · Σ_l AT(student_l, teacher_l)``. AT is the attention-transfer loss of Zagoruyko and
Komodakis that NAD uses: a layer's feature map is reduced over its channels to
``a = Σ_c |f_c|^p`` (p = 2), divided by its L2 norm over the positions, and teacher and student
maps are compared by mean squared error.

Transformer adaptation (ours; we found no published text version): a layer's "feature map" is
its output hidden states ``[tokens, hidden]``, channels are the hidden units and positions are
the tokens, so each layer gives one attention value per token; padding tokens are excluded from
the norm and the mean. The attention *probabilities* would be the other choice; hidden states
work with every attention implementation (SDPA returns no probabilities) and are what the
paper's maps are, feature activations. The reference configuration matches only the deepest
group of layers with beta 5000 (its ``config.py``: beta1 = beta2 = 0, beta3 = 5000, p = 2), so the
defaults match the last encoder layer's output (``layers=1``) with ``beta=5000``.

Schedule: the reference code trains the student for 20 epochs (SGD, lr 0.1, CIFAR-scale CNNs) and
BackdoorBench's NAD fine-tunes the teacher for 10 (``te_epochs``). For a pretrained transformer we use the fine-tuning baseline's recipe
(``finetuning``: AdamW lr 2e-5, batch 16, 4 teacher epochs, the BERT paper's range) and 10 student
epochs (BeDKD's number of cycles). Both the teacher's and the student's epoch are chosen on the
held-out clean rows by the rule in ``finetuning``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...errors import ConfigError
from ...options import option
from .training import CleanRowsPurifier, CleanTrainingOptions, ExtraLoss, TrainSettings, train_epochs

EPS = 1e-6   # as the reference AT code


@dataclass
class NADConfig(CleanTrainingOptions):
    """NAD purifier options"""
    teacher_epochs: int = option(4, "epochs of fine-tuning that make the teacher", low=1)
    epochs: int = option(10, "epochs of attention distillation into the student", low=1)
    beta: float = option(5000.0, "weight of the attention loss (the reference's, for the deepest layers)", low=0.0)
    power: float = option(2.0, "power p of the attention map", above=0.0)
    layers: int = option(1, "how many of the last encoder layers' outputs are matched", low=1)


def attention_map(hidden: torch.Tensor, mask: torch.Tensor, power: float) -> torch.Tensor:
    """``[B, T, H]`` hidden states -> ``[B, T]``: ``Σ_h |x|^p`` per token, zero on padding, unit L2
    norm over each row's tokens."""
    am = hidden.float().abs().pow(power).sum(dim=-1) * mask.to(torch.float32)
    return am / (am.norm(dim=1, keepdim=True) + EPS)


def attention_loss(student_hidden, teacher_hidden, mask: torch.Tensor, layers: int, power: float) -> torch.Tensor:
    """Σ over the last ``layers`` layers of the mean squared difference of the attention maps over the
    non-padding tokens. ``*_hidden`` are a model's ``hidden_states`` tuples."""
    real = mask.to(torch.float32)
    total = torch.zeros((), device=mask.device)
    for layer in range(1, layers + 1):
        diff = attention_map(student_hidden[-layer], mask, power) - attention_map(teacher_hidden[-layer], mask, power)
        total = total + (diff.pow(2) * real).sum() / real.sum()
    return total


class NAD(CleanRowsPurifier):
    """Fine-tune a teacher, then distil its attention into a copy of the suspicious model
    (the input is never modified)."""
    name, method, options = "nad", "NAD", NADConfig

    def _check_model(self, suspect_model):
        depth = int(getattr(suspect_model.model.config, "num_hidden_layers", 0) or 0)
        if depth and self.config.layers > depth:
            raise ConfigError(f"NADConfig.layers={self.config.layers} but the model has {depth} encoder layers")

    def _train(self, suspect_model, rows, seconds, progress):
        cfg, pad = self.config, suspect_model.tokenizer.pad_token_id
        teacher = suspect_model.copy()
        teacher_run = train_epochs(teacher.model, rows, pad, TrainSettings.of(cfg, epochs=cfg.teacher_epochs),
                                   desc="NAD: teacher", progress=progress)
        teacher.model.requires_grad_(False)
        seconds["teacher"] = teacher_run.seconds

        student = suspect_model.copy()
        term = ExtraLoss("attention_loss", _attention_term(teacher.model, cfg), hidden_states=True)
        run = train_epochs(student.model, rows, pad, TrainSettings.of(cfg), extra=term,
                           desc="NAD: student", progress=progress)
        seconds["student"] = run.seconds
        return student, run, {"teacher": teacher_run.report()}


def _attention_term(teacher_model, cfg: NADConfig):
    """``beta ·`` attention loss between the student's output and the frozen teacher's on a batch."""
    def term(student_out, batch) -> torch.Tensor:
        with torch.no_grad():
            teacher_out = teacher_model(**batch, output_hidden_states=True)
        loss = attention_loss(student_out.hidden_states, teacher_out.hidden_states, batch["attention_mask"],
                              cfg.layers, cfg.power)
        return cfg.beta * loss
    return term
