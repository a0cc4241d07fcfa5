"""The one training driver every loop of the project runs on.

* :func:`optimizer_step` — one update: zero the gradients, backward, clip the gradient norm, step
  the optimiser and the schedule, then an optional hook (fine-pruning re-applies its mask there).
* :func:`linear_warmup` — the schedule of every AdamW run: linear warm-up, then linear decay to 0.
  Deviation from ``transformers.get_linear_schedule_with_warmup``: that one gives the first step a
  learning rate of 0, this one ``1 / warm`` of the peak; kept so that the cached victims and every
  recorded result stay what they were.
* :func:`run_epochs` — the epoch loop: train one epoch, measure, record, stop on a non-finite loss
  or when the selector says so, then load the epoch the selector chose. A selector keeps the
  weights it may return on the CPU (:func:`cpu_state`), never on the device.

Update rules that are not an optimiser step (EP's and RAP's single embedding rows) stay in their
own files and use :func:`run_epochs` for the epoch loop only.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Protocol

import torch
from tqdm.auto import tqdm

from ..errors import BedkdError


def optimizer_step(model, optimizer, loss: torch.Tensor, grad_clip: float | None = None, scheduler=None,
                   after_step: Callable | None = None) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    if after_step is not None:
        after_step(model)


def linear_warmup(optimizer, total_steps: int, warmup: float):
    """Learning rate x min((step + 1) / warm, (total - step) / (total - warm)), warm = max(1, warmup x total)."""
    warm = max(1, int(warmup * total_steps))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warm, max(0.0, (total_steps - step) / max(1, total_steps - warm))))


def cpu_state(model) -> dict:
    """A copy of the weights on the CPU (a kept epoch does not hold device memory)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def mean_state(states: list[dict]) -> dict:
    """The element-wise mean of state dicts of one architecture (integer buffers from the last)."""
    return {k: torch.stack([s[k] for s in states]).mean(0) if states[-1][k].is_floating_point() else states[-1][k]
            for k in states[-1]}


class Selector(Protocol):
    """Chooses the epoch to return. ``offer`` sees each finished epoch's record (with finite losses);
    ``stop`` may end the run early with a reason; ``finish`` loads the chosen weights and returns
    the chosen epoch (``stop``: why the run ended)."""

    def offer(self, record: dict, model) -> None: ...

    def stop(self, record: dict) -> str | None: ...

    def finish(self, model, last_epoch: int, finite: bool, stop: str) -> int: ...


COMPLETED = "completed all epochs"


class LastEpoch:
    """The last epoch; a non-finite loss is an error."""

    def offer(self, record: dict, model) -> None:
        pass

    def stop(self, record: dict) -> str | None:
        return None

    def finish(self, model, last_epoch: int, finite: bool, stop: str) -> int:
        if not finite:
            raise BedkdError(f"training diverged at epoch {last_epoch} (non-finite loss); lower the learning rate")
        return last_epoch


@dataclass
class EpochRun:
    chosen: int
    epochs: list[dict]
    start: dict
    stop_reason: str
    seconds: float = 0.0
    mean: dict | None = None     # a mean of epochs' weights measured after the run (AKD's untriggered_mean)

    def report(self) -> dict:
        return {"start": self.start, "epochs": self.epochs, "selected_epoch": self.chosen,
                "stop_reason": self.stop_reason, **({"epoch_mean": self.mean} if self.mean is not None else {})}


def run_epochs(model, epochs: int, train_epoch: Callable[[int], dict], selector: Selector | None = None, *,
               measure: Callable[[], dict] | None = None, start: dict | None = None, desc: str = "train",
               progress: bool = False, postfix: Callable[[dict], dict] | None = None) -> EpochRun:
    """Epochs 1..``epochs`` of ``train_epoch(epoch) -> {loss name: mean value or None}``, each
    followed by ``measure() -> dict`` (e.g. validation accuracy); ``start`` is the measure before
    training. Leaves ``model`` at the chosen epoch's weights, in eval mode."""
    t0 = time.perf_counter()
    selector = selector or LastEpoch()
    records, stop, finite = [], COMPLETED, True
    bar = tqdm(range(1, epochs + 1), desc=desc, disable=not progress, unit="epoch")
    for epoch in bar:
        losses = train_epoch(epoch)
        record = {"epoch": epoch, **losses, **(measure() if measure is not None else {})}
        records.append(record)
        if postfix is not None:
            bar.set_postfix(**postfix(record))
        if not all(math.isfinite(v) for v in losses.values() if isinstance(v, (int, float))):
            stop, finite = f"non-finite loss at epoch {epoch}", False
            break
        selector.offer(record, model)
        reason = selector.stop(record)
        if reason is not None:
            stop = reason
            break
    bar.close()
    chosen = selector.finish(model, len(records), finite, stop)
    model.eval()
    return EpochRun(chosen, records, start or {}, stop, time.perf_counter() - t0)
