"""AKD's choice of the epoch to return (:class:`CycleChoice`), and its replay on a finished run
(:func:`replay_choice`).

Choosing the epoch never looks at a test set (``selection``):

* ``last`` — the authors' code: the last epoch.
* ``validation`` — the earlier ``fast`` rule: within ``max_cacc_drop`` points of the start on the
  balanced held-out rows, the least "flag agreement" (share of held-out flagged rows still predicted
  as their poisoned label), ties to the later epoch.
* ``guarded`` — clean accuracy weighted by the clean pool's class shares (the natural distribution,
  not the balanced held-out one) must not fall below the start by more than ``max_cacc_drop`` points
  plus ``guard_se`` (2) standard errors of the paired difference (a guard against collapse that does
  not turn on a row or two; the margin grows with the rows an epoch changes, so a churning epoch 2-3
  points down may pass: docs/results/ablation_guard_se; ``guard_margin_cap`` bounds it in points;
  ``guard_mix_shift``: the guard must also hold at the worst class mix within that distance of the
  pool's shares, so that a trade between classes that the pool's mix hides does not pass).
  Among those epochs, the ones whose backdoor proxy (the share of held-out clean rows with a found
  trigger inserted that go to its target, less the share that go there without it; else the flag
  agreement) is within ``proxy_tolerance`` of the lowest count as equal, and the most accurate of
  them is kept (``tie_break='target-rate'``, with a found trigger: the one whose held-out trigger rows
  go to the target least often, then the most accurate; ``signed_proxy``: a proxy below zero, a trigger
  that keeps rows off its target, is not counted as zero; ties: the later; with ``flag_tiebreak`` and a found trigger, of those only the ones
  whose flag agreement is within ``proxy_tolerance`` of their lowest; with ``untriggered_latest`` and no
  found trigger, the latest epoch within the guard, the flag agreement aside, and with ``untriggered_mean``
  the weights of the last few such epochs are held, to be averaged after the run). ``patience`` counts from
  the first epoch within the guard.
  Optionally the run stops once the trigger proxy is at the clean level (``stop_proxy``). When no
  epoch passes the accuracy guard, the model as it was before the cycles is returned (epoch 0; the
  backdoor may remain, and the purify report warns): this rule never trades clean accuracy beyond
  its guard for a lower ASR. With ``start_candidate`` that model (measured as it would be returned,
  ``start["as_returned"]``) is a candidate from the start, epoch 0, when a found trigger gives the
  proxy: a reset of the trigger's embeddings may already have taken the backdoor out, and the cycles
  then only cost accuracy; with ``start_keep_se`` that start, when it ties the lowest proxy, is kept unless a
  tied epoch is more accurate by more than that many standard errors of its paired change, or its found
  trigger adds less by more than that many, paired over the held-out trigger rows, so that a row or two does
  not choose the cycles over the smaller change; with ``start_max_proxy`` the start is a candidate only
  when its own found trigger adds at most that much on the held-out rows (0: the reset took the
  trigger's measured effect out; else a start with a residual trigger, within the proxy tolerance of a
  cycle epoch, could be kept over cycles that remove it). Every guarded run with a found trigger records ``start["as_returned"]``,
  so :func:`replay_choice` tells what ``start_candidate`` would keep on a run made without it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch

from ...errors import BedkdError
from ...modeling.training import COMPLETED, cpu_state

if TYPE_CHECKING:
    from .akd import AKDConfig

ABORT_AFTER = 2   # consecutive collapsed epochs that end an AKD run


class CycleChoice:
    """AKD's :class:`bedkd.modeling.training.Selector`: the ``selection`` rule (module doc) and the
    stops. Divergence guard: a collapsed epoch (clean validation accuracy more than
    ``abort_cacc_drop`` points below the start) is never a candidate, and two in a row end the run
    (the first cycle often dips and recovers, as punishment starts before trust has caught up)."""

    def __init__(self, cfg: AKDConfig, start: dict, before: dict | None = None):
        self.cfg, self.start = cfg, start
        self.before = before             # guarded: the weights before the cycles, the fallback (epoch 0)
        self.guard = GuardedChoice(cfg)
        self.best: tuple[int, dict] | None = None
        self.best_key: tuple | None = None
        self.since_best = self.low_streak = 0
        self.reason: str | None = None
        self.cycle_within_guard = False  # patience counts from the first cycle epoch within the guard
        if cfg.selection == "guarded" and cfg.start_candidate and before is not None and "as_returned" in start \
                and _start_admitted(start["as_returned"], cfg):
            self.guard.offer({**start["as_returned"], "epoch": 0}, start, lambda: before)
            self.best = (0, before) if self.guard.chosen == 0 else None

    def offer(self, record: dict, model) -> None:
        cfg, start, epoch = self.cfg, self.start, record["epoch"]
        collapsed = start["val_acc"] is not None and record["val_acc"] is not None and \
            record["val_acc"] < start["val_acc"] - cfg.abort_cacc_drop / 100
        self.low_streak = self.low_streak + 1 if collapsed else 0
        if self.low_streak >= ABORT_AFTER:
            self.reason = (f"clean validation accuracy was more than {cfg.abort_cacc_drop} points below the start "
                           f"for {ABORT_AFTER} epochs (epoch {epoch})")
            return
        if cfg.selection == "guarded":
            guard, before = self.guard, self.guard.chosen
            first = False
            if not collapsed and guard.offer(record, start, lambda: cpu_state(model)):
                first, self.cycle_within_guard = not self.cycle_within_guard, True
            # patience counts from the first cycle epoch within the guard: a run whose first cycles dip
            # (strong repair rows) may still recover within its epoch budget
            self.since_best = 0 if not self.cycle_within_guard or first or guard.chosen != before \
                else self.since_best + 1
            self.best = (guard.chosen, guard.states[guard.chosen]) if guard.chosen is not None else None
            if guard.chosen is not None and _proxy_done(record, cfg) and guard.eligible(record, start):
                self.reason = f"the trigger proxy reached the clean level at epoch {epoch}"
                return
        else:
            key = selection_key(record, start, cfg)
            if not collapsed and (self.best_key is None or key > self.best_key):
                self.best_key, self.best, self.since_best = key, (epoch, cpu_state(model)), 0
            else:
                self.since_best += 1
        if cfg.patience is not None and self.since_best >= cfg.patience:
            self.reason = f"no better validated epoch for {cfg.patience} epochs"

    def stop(self, record: dict) -> str | None:
        return self.reason

    def finish(self, model, last_epoch: int, finite: bool, stop: str) -> int:
        if self.cfg.selection == "last" and stop == COMPLETED:
            return last_epoch
        if self.best is None and self.before is not None:
            model.load_state_dict(self.before)
            return 0
        if self.best is None:
            raise BedkdError(f"AKD found no usable epoch ({stop}); lower --akd-lr or set --akd-punish-cap")
        chosen, state = self.best
        model.load_state_dict(state)
        return chosen


@dataclass(frozen=True)
class Replay:
    """What a selection rule would have kept of a finished run (:func:`replay_choice`)."""
    epoch: int | None       # the kept epoch (0: the model before the cycles); None: no usable epoch
    stopped_after: int      # the last epoch the rule would have trained
    exact: bool             # False: the rule would have trained past the run's last record, or returns a
                            # model the records do not measure (untriggered_mean)


def replay_choice(records: list[dict], start: dict, cfg: AKDConfig) -> Replay:
    """The epoch ``cfg``'s selection rule (``selection``, ``max_cacc_drop``, ``guard_se``, ``proxy_tolerance``,
    ``tie_break``, ``untriggered_latest``, ``patience``, ``stop_proxy``, ``abort_cacc_drop``) keeps,
    given the per-epoch records of a run (a purify report's ``epochs`` and ``start``). The cycles train the same way
    whatever the rule keeps, so this is the rule's choice on that run, through :class:`CycleChoice`
    itself; not ``exact`` when the run stopped (another rule's patience) before this rule would have, or
    when ``start_candidate`` asks for the start as returned and the run (an older one) did not record it, or
    when ``untriggered_mean`` would average epochs (a mean of weights the records cannot give)."""
    unrecorded = cfg.start_candidate and start.get("trigger_asr") is not None and "as_returned" not in start
    choice = CycleChoice(cfg, start, before={} if cfg.selection == "guarded" else None)
    stub = torch.nn.Module()         # no weights: the choice's kept states are empty
    last = 0
    for record in records:
        last = record["epoch"]
        losses = [v for k, v in record.items() if k.endswith("_loss") or k == "bias_shift"]
        if not all(math.isfinite(v) for v in losses if isinstance(v, (int, float))):
            break
        choice.offer(record, stub)
        if choice.stop(record) is not None:
            break
    else:
        if cfg.selection == "last" and last >= cfg.epochs:
            return Replay(last, last, True)
        if last < cfg.epochs:
            return Replay(_kept(choice), last, False)
    return Replay(_kept(choice), last, not unrecorded and not choice.guard.averages())


def _kept(choice: CycleChoice) -> int | None:
    if choice.best is not None:
        return choice.best[0]
    return 0 if choice.before is not None else None


def _start_admitted(as_returned: dict, cfg: AKDConfig) -> bool:
    """``start_max_proxy``: whether the start's own found trigger adds at most that much on the held-out rows."""
    return cfg.start_max_proxy is None or backdoor_proxy(as_returned, signed=True) <= cfg.start_max_proxy + 1e-9


def _proxy_done(record: dict, cfg: AKDConfig) -> bool:
    if cfg.stop_proxy is None or record["trigger_asr"] is None:
        return False
    return record["trigger_asr"] <= (record["clean_to_target"] or 0.0) + cfg.stop_proxy


class GuardedChoice:
    """The ``guarded`` rule: among epochs whose class-weighted clean accuracy is within the allowed
    drop (plus ``guard_se`` standard errors, at most ``guard_margin_cap`` points), those whose backdoor
    proxy is within ``proxy_tolerance`` of the lowest; of these, the most accurate (ties: the later).
    Only their weights are kept."""

    def __init__(self, cfg: AKDConfig):
        self.cfg = cfg
        self.records: dict[int, dict] = {}
        self.states: dict[int, dict] = {}
        self.chosen: int | None = None

    def eligible(self, record: dict, start: dict) -> bool:
        change = (record["val_acc_weighted"] or 0.0) - (start["val_acc_weighted"] or 0.0)
        if not self._within(change, record.get("val_change_se") or 0.0):
            return False
        worst = worst_mix_change(record, start, self.cfg.guard_mix_shift) if self.cfg.guard_mix_shift else None
        return worst is None or self._within(*worst)

    def _within(self, change: float, se: float) -> bool:
        margin = self.cfg.guard_se * se
        if self.cfg.guard_margin_cap is not None:
            margin = min(margin, self.cfg.guard_margin_cap / 100)
        return change >= -self.cfg.max_cacc_drop / 100 - margin - 1e-9

    def averages(self) -> bool:
        """``untriggered_mean``: whether the run returns a mean of weights (more than one held epoch, no
        found trigger), not the chosen epoch's alone."""
        return self.cfg.untriggered_mean > 1 and len(self.states) > 1 and \
            all(r["trigger_asr"] is None for r in self.records.values())

    def offer(self, record: dict, start: dict, state: Callable[[], dict]) -> bool:
        """Take ``record`` (its weights from ``state()``) when it is within the guard; whether it was."""
        if not self.eligible(record, start):
            return False
        if self.cfg.untriggered_latest and record["trigger_asr"] is None:     # no proxy: the latest epoch
            self.records[record["epoch"]], self.states[record["epoch"]] = record, state()
            for epoch in sorted(self.states)[:-self.cfg.untriggered_mean]:     # untriggered_mean's epochs stay
                del self.records[epoch], self.states[epoch]
            self.chosen = record["epoch"]
            return True
        self.records[record["epoch"]] = record
        self.states[record["epoch"]] = state()
        signed = self.cfg.signed_proxy
        low = min(backdoor_proxy(r, signed) for r in self.records.values())
        for epoch in [e for e, r in self.records.items()
                      if backdoor_proxy(r, signed) > low + self.cfg.proxy_tolerance + 1e-9]:
            del self.records[epoch], self.states[epoch]
        pool = _flag_tied(self.records, self.cfg.proxy_tolerance) if self.cfg.flag_tiebreak else self.records
        self.chosen = max(pool, key=self._tie_key(pool))
        if self.cfg.start_keep_se is not None and 0 in pool and \
                not any(_earns_change(pool[e], pool[0], self.cfg.start_keep_se) for e in pool if e != 0):
            self.chosen = 0
        for epoch in [e for e in self.states if e != self.chosen and e not in self.records]:
            del self.states[epoch]
        return True

    def _tie_key(self, pool: dict[int, dict]) -> Callable[[int], tuple]:
        """How the tied epochs rank (the largest key is kept): class-weighted held-out accuracy, then the later
        epoch; with ``tie_break='target-rate'`` and a found trigger, first the lowest share of held-out trigger
        rows sent to the target."""
        lean = self.cfg.tie_break == "target-rate" and all(r["trigger_asr"] is not None for r in pool.values())
        return lambda e: ((-round(pool[e]["trigger_asr"], 6),) if lean else ()) + \
            (round(pool[e]["val_acc_weighted"] or 0.0, 6), e)


def worst_mix(shares: list[float], changes: list[float], shift: float) -> list[float]:
    """The class mix within total-variation distance ``shift`` of ``shares`` that weighs ``changes``
    lowest: up to ``shift`` of the mass moved, from the classes that changed most, onto the one that
    changed least."""
    mix = list(shares)
    low = min(range(len(changes)), key=lambda c: changes[c])
    budget = shift
    for c in sorted(range(len(changes)), key=lambda c: -changes[c]):
        if c != low and budget > 0:
            moved = min(mix[c], budget)
            mix[c], mix[low], budget = mix[c] - moved, mix[low] + moved, budget - moved
    return mix


def worst_mix_change(record: dict, start: dict, shift: float) -> tuple[float, float] | None:
    """``guard_mix_shift``: the held-out accuracy change against the start, and its paired standard
    error, at the class mix within ``shift`` of the clean pool's shares that weighs the change lowest
    (:func:`worst_mix`); None when the records lack the per-class numbers (written before they were)."""
    mine, theirs = record.get("val_acc_per_class"), start.get("val_acc_per_class")
    ses, shares = record.get("val_change_se_per_class"), start.get("class_shares")
    if not (mine and theirs and ses and shares):
        return None
    classes = [c for c in range(len(shares)) if mine[c] is not None and theirs[c] is not None]
    total = sum(shares[c] for c in classes)
    mix = worst_mix([shares[c] / total for c in classes], [mine[c] - theirs[c] for c in classes], shift)
    change = sum(w * (mine[c] - theirs[c]) for w, c in zip(mix, classes))
    se = math.sqrt(sum((w * (ses[c] or 0.0)) ** 2 for w, c in zip(mix, classes)))
    return change, se


def _earns_change(record: dict, start: dict, se: float) -> bool:
    """``start_keep_se``: whether an epoch is more accurate than the start by more than ``se`` standard errors
    of its paired change, or its found trigger adds less than the start's by more than ``se`` standard errors,
    paired over the held-out trigger rows."""
    gain = (record["val_acc_weighted"] or 0.0) - (start["val_acc_weighted"] or 0.0)
    if gain > se * (record.get("val_change_se") or 0.0) + 1e-9:
        return True
    mine, theirs = record.get("trigger_row_effects"), start.get("trigger_row_effects")
    if not mine or not theirs or len(mine) != len(theirs) or \
            record.get("trigger_rows_target") != start.get("trigger_rows_target"):   # proxy_targets='worst'
        return False
    less, sd = paired_difference(theirs, mine)
    return sd > 0 and less > se * sd + 1e-9


EFFECT = {"+": 1, "-": -1, "0": 0}


def sign_test_wins(more: int, fewer: int, z: float) -> bool:
    """A paired sign test on the rows that change: ``more`` rows moved one way, ``fewer`` the other;
    true when ``more`` wins by at least ``z`` standard errors (d >= z * sqrt(n), n = more + fewer)."""
    return more > fewer and more - fewer >= z * math.sqrt(more + fewer)


def paired_difference(first: str, second: str) -> tuple[float, float]:
    """The backdoor proxy of ``first`` less that of ``second``, paired row by row over the held-out trigger
    rows (``trigger_row_effects`` strings of two records), and its standard error."""
    d = [EFFECT[a] - EFFECT[b] for a, b in zip(first, second)]
    mean = sum(d) / len(d)
    se = (sum((v - mean) ** 2 for v in d) / (len(d) - 1) / len(d)) ** 0.5 if len(d) > 1 else 0.0
    return mean, se


def _flag_tied(records: dict[int, dict], tolerance: float) -> dict[int, dict]:
    """``flag_tiebreak``: of records whose trigger proxy ties, those whose flag agreement is within
    ``tolerance`` of their lowest (all of them when a record has no found trigger or no flag agreement:
    without a trigger the flag agreement is the proxy already)."""
    if any(r.get("trigger_asr") is None or r.get("flag_agreement") is None for r in records.values()):
        return records
    low = min(r["flag_agreement"] for r in records.values())
    return {e: r for e, r in records.items() if r["flag_agreement"] <= low + tolerance + 1e-9}


def backdoor_proxy(record: dict, signed: bool = False) -> float:
    """The backdoor proxy: what a found trigger adds, the share of held-out clean rows that go to
    its target with the trigger inserted less the share that go there without it (the raw rate
    would also fall when the model merely stops predicting the target class, which costs clean
    accuracy), at least zero unless ``signed`` (``signed_proxy``); else the flag agreement."""
    if record["trigger_asr"] is not None:
        added = record["trigger_asr"] - (record["clean_to_target"] or 0.0)
        return added if signed else max(0.0, added)
    return record["flag_agreement"] if record["flag_agreement"] is not None else 0.0


def selection_key(record: dict, start: dict, cfg: AKDConfig) -> tuple:
    """The ``validation`` rule; larger is better (see the module doc)."""
    acc = record["val_acc"] if record["val_acc"] is not None else 0.0
    floor = (start["val_acc"] or 0.0) - cfg.max_cacc_drop / 100
    agree = record["flag_agreement"] if record["flag_agreement"] is not None else 0.0
    return (acc >= floor - 1e-9, -round(agree, 2), record["epoch"])
