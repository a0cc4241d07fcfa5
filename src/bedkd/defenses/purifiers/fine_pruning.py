"""Fine-pruning, adapted to transformer text classifiers.

Liu, Dolan-Gavitt, Garg, "Fine-Pruning: Defending Against Backdooring Attacks on Deep Neural
Networks", RAID 2018 (arXiv:1805.12185); reference code github.com/kangliucn/Fine-pruning-defense.

The paper records the mean activation of each channel of the last convolutional layer on clean
inputs, prunes channels in increasing order of activation (backdoor neurons are the ones clean
inputs leave dormant) until the clean validation accuracy has dropped by more than a threshold,
then fine-tunes the pruned network on clean data.

Transformer adaptation: the neurons are the feed-forward (FFN) intermediate units of the last
``layers`` encoder layers (the input of each FFN's down-projection, i.e. after the activation;
BERT/RoBERTa ``*.intermediate.dense`` -> ``*.output.dense``, DistilBERT ``ffn.lin1`` -> ``ffn.lin2``,
ALBERT ``ffn`` -> ``ffn_output``). Their mean activation is taken over the non-padding tokens of
the clean training rows. Pruning goes in steps of ``prune_step`` (a share of each layer's
neurons; the paper goes one neuron at a time, which on a 1536-unit FFN would cost a validation
pass per unit) up to ``prune_ratio``, and stops before the first step whose clean validation
accuracy is more than ``prune_acc_drop`` points below the unpruned model's. A pruned neuron's
weights (its row of the up-projection and bias, its column of the down-projection) are set to zero
and are zeroed again after every fine-tuning step, so the neuron stays removed, also in a saved
model. With ``GELU(0) = 0`` the zeroed column alone would do; both keep it removed for any activation.

Defaults: one layer (the paper prunes the last convolutional layer only); ``prune_ratio`` 0.8 (the
reference code prunes 48 of 60 conv3 channels); ``prune_acc_drop`` 4 points (our choice of the
paper's "pre-determined threshold"); steps of 5%. Fine-tuning uses the fine-tuning baseline's
settings (``finetuning``: AdamW lr 2e-5, batch 16, 4 epochs, epoch chosen on the held-out rows).
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from ...errors import BedkdError, ConfigError
from ...modeling.batching import collate, sorted_batches
from ...options import option
from .training import CleanRows, CleanRowsPurifier, CleanTrainingOptions, TrainSettings, accuracy, train_epochs

# (up-projection, down-projection) names inside one layer, for the HF families we know.
FFN_PATTERNS = (("intermediate.dense", "output.dense"), ("ffn.lin1", "ffn.lin2"), ("ffn", "ffn_output"))


@dataclass
class FinePruningConfig(CleanTrainingOptions):
    """Fine-pruning purifier options"""
    layers: int = option(1, "prune in this many of the last encoder layers' feed-forward blocks", low=1)
    prune_ratio: float = option(0.8, "largest share of each layer's FFN neurons to prune", above=0.0, high=1.0)
    prune_step: float = option(0.05, "share of neurons pruned per step", above=0.0, high=1.0)
    prune_acc_drop: float = option(4.0, "stop pruning before clean validation accuracy drops more than this "
                                        "many points", low=0.0, high=100.0)
    epochs: int = option(4, "fine-tuning passes over the clean rows", low=1)


@dataclass
class FFNBlock:
    """One feed-forward block: ``down(act(up(x)))``; its neurons are ``up``'s outputs."""
    name: str
    up: nn.Linear
    down: nn.Linear

    @property
    def size(self) -> int:
        return self.down.in_features


def find_ffn_blocks(model) -> list[FFNBlock]:
    """The feed-forward blocks of a BERT-like model, first layer first."""
    modules = dict(model.named_modules())
    for up_name, down_name in FFN_PATTERNS:
        blocks = []
        for name, up in modules.items():
            if not (name == up_name or name.endswith("." + up_name)):
                continue
            prefix = name[:len(name) - len(up_name)]
            down = modules.get(prefix + down_name)
            if isinstance(up, nn.Linear) and isinstance(down, nn.Linear) and up.out_features == down.in_features:
                blocks.append(FFNBlock(prefix.rstrip("."), up, down))
        if blocks:
            return blocks
    looked = ", ".join(f"*.{u} -> *.{d}" for u, d in FFN_PATTERNS)
    raise BedkdError(f"fine-pruning: no feed-forward block found in {type(model).__name__} (looked for {looked})")


@torch.no_grad()
def mean_activations(model, blocks: list[FFNBlock], ids: list[list[int]], pad: int,
                     batch_size: int = 64) -> list[torch.Tensor]:
    """Mean activation of each block's neurons over the non-padding tokens of ``ids``."""
    model.eval()
    sums = [torch.zeros(b.size, device=model.device) for b in blocks]
    current: dict[str, torch.Tensor] = {}

    def hook_for(j):
        def hook(module, inputs):
            mask = current["mask"].unsqueeze(-1).to(inputs[0].dtype)
            sums[j].add_((inputs[0] * mask).sum(dim=(0, 1)).float())
        return hook

    handles = [b.down.register_forward_pre_hook(hook_for(j)) for j, b in enumerate(blocks)]
    tokens = 0
    try:
        for rows in sorted_batches([len(x) for x in ids], batch_size):
            batch = collate([ids[i] for i in rows], pad, model.device)
            current["mask"] = batch["attention_mask"]
            model(**batch)
            tokens += int(batch["attention_mask"].sum())
    finally:
        for h in handles:
            h.remove()
    return [(s / max(tokens, 1)).cpu() for s in sums]


@contextmanager
def masked(blocks: list[FFNBlock], keep: list[torch.Tensor]):
    """Within the block, the pruned neurons' outputs are zeroed by hooks (weights untouched)."""
    def hook_for(mask):
        def hook(module, inputs):
            return (inputs[0] * mask.to(inputs[0].device, inputs[0].dtype),) + tuple(inputs[1:])
        return hook
    handles = [b.down.register_forward_pre_hook(hook_for(k)) for b, k in zip(blocks, keep)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def zero_pruned(blocks: list[FFNBlock], keep: list[torch.Tensor]) -> None:
    """Zero the weights of the pruned neurons (``keep`` False)."""
    for b, k in zip(blocks, keep):
        gone = (~k).to(b.up.weight.device)
        b.up.weight[gone] = 0.0
        if b.up.bias is not None:
            b.up.bias[gone] = 0.0
        b.down.weight[:, gone] = 0.0


def keep_masks(orders: list[torch.Tensor], ratio: float) -> list[torch.Tensor]:
    """Per block, False for the ``round(ratio · size)`` least active neurons."""
    masks = []
    for order in orders:
        keep = torch.ones(len(order), dtype=torch.bool)
        keep[order[:int(round(ratio * len(order)))]] = False
        masks.append(keep)
    return masks


def prune_ratios(max_ratio: float, step: float) -> list[float]:
    """``step, 2·step, ...`` below ``max_ratio``, then ``max_ratio``."""
    n = int(max_ratio / step + 1e-9)
    ratios = [round(step * i, 10) for i in range(1, n + 1) if step * i < max_ratio - 1e-9]
    return ratios + [max_ratio]


@dataclass
class PruneSearch:
    ratio: float
    steps: list[dict]
    base_val_acc: float | None
    stop_reason: str


def search_ratio(model, blocks, orders, budget: CleanRows, pad: int, cfg: FinePruningConfig,
                 progress: bool) -> PruneSearch:
    """The largest step whose clean validation accuracy is within ``prune_acc_drop`` of the start."""
    base = accuracy(model, budget.val_ids, budget.val_labels, pad)
    if base is None:
        return PruneSearch(cfg.prune_ratio, [], None, "no validation rows: pruned to prune_ratio")
    floor = base - cfg.prune_acc_drop / 100
    chosen, steps, stop = 0.0, [], "reached prune_ratio"
    for ratio in tqdm(prune_ratios(cfg.prune_ratio, cfg.prune_step), desc="fine-pruning: prune",
                      disable=not progress, unit="step"):
        with masked(blocks, keep_masks(orders, ratio)):
            acc = accuracy(model, budget.val_ids, budget.val_labels, pad)
        steps.append({"ratio": ratio, "val_acc": acc})
        if acc < floor - 1e-9:
            stop = f"clean validation accuracy fell more than {cfg.prune_acc_drop} points at ratio {ratio}"
            break
        chosen = ratio
    return PruneSearch(chosen, steps, base, stop)


class FinePruning(CleanRowsPurifier):
    """Prune dormant FFN neurons of a copy of the suspicious model, then fine-tune it with the
    pruned neurons kept at zero (the input is never modified)."""
    name, method, options = "fineprune", "fine-pruning", FinePruningConfig

    def _check_model(self, suspect_model):
        blocks = len(find_ffn_blocks(suspect_model.model))
        if self.config.layers > blocks:
            raise ConfigError(f"FinePruningConfig.layers={self.config.layers} but the model has {blocks} "
                              "feed-forward blocks")

    def _train(self, suspect_model, rows, seconds, progress):
        cfg = self.config
        student = suspect_model.copy()
        model, pad = student.model, student.tokenizer.pad_token_id
        blocks = find_ffn_blocks(model)[-cfg.layers:]
        t1 = time.perf_counter()
        means = mean_activations(model, blocks, rows.train_ids, pad)
        orders = [torch.argsort(m, stable=True) for m in means]
        seconds["activations"] = time.perf_counter() - t1

        t2 = time.perf_counter()
        search = search_ratio(model, blocks, orders, rows, pad, cfg, progress)
        keep = keep_masks(orders, search.ratio)
        zero_pruned(blocks, keep)
        seconds["pruning"] = time.perf_counter() - t2

        run = train_epochs(model, rows, pad, TrainSettings.of(cfg), after_step=lambda m: zero_pruned(blocks, keep),
                           desc="fine-pruning: fine-tune", progress=progress)
        seconds["finetune"] = run.seconds
        report = {"pruning": {
            "layers": [b.name for b in blocks],
            "neurons_per_layer": [b.size for b in blocks],
            "pruned_per_layer": [int((~k).sum()) for k in keep],
            "ratio": search.ratio,
            "base_val_acc": search.base_val_acc,
            "steps": search.steps,
            "stop_reason": search.stop_reason,
            "pruned_neurons": {b.name: sorted(int(i) for i in torch.nonzero(~k).flatten()) for b, k in zip(blocks, keep)},
        }}
        if search.ratio == 0.0:
            report["warning"] = "the first pruning step already cost too much clean accuracy: nothing was pruned"
        return student, run, report
