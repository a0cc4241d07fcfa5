"""AKD, BeDKD's adversarial knowledge distillation: the trust/punish cycles.

Wu et al., "BeDKD: Backdoor Defense based on Dynamic Knowledge Distillation and Directional
Mapping Modulator", AAAI 2026 (arXiv:2508.01595). A copy of the suspicious model (the student) is
trained in cycles: *trust* distillation from the frozen suspicious model on clean rows, then
*punish* distillation on the punished rows, with the same loss negated.

Guard against divergence. The negated loss has no lower bound (CE and the hidden-state MSE grow
without limit as the student moves away), so an unguarded run can wreck the model. Three guards,
all options: (1) ``punish_cap`` clamps each punished sample's loss, so a sample stops pushing once
it is that far from the teacher; (2) ``grad_clip`` bounds every update; (3) after each epoch the
clean validation accuracy is checked, and the run stops once it has been more than
``abort_cacc_drop`` points below the suspicious model's for two epochs in a row (such epochs are
never kept), or on a non-finite loss.

The epoch is chosen by :mod:`.epoch_choice` (``selection``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import ConfigError
from ...modeling.batching import collate, shuffled_batches
from ...modeling.calibration import clean_mix_offsets, logit_shift, shift_head
from ...modeling.inference import predict_proba_ids
from ...modeling.training import EpochRun, cpu_state, mean_state, optimizer_step, run_epochs
from ...options import option
from ...seeding import seed_everything
from ..clean_split import LAYOUTS, ORDERS
from ..distillation import LossForm, LossOptions, distill_epoch, weighted_mean
from .epoch_choice import CycleChoice, backdoor_proxy, sign_test_wins

SELECTIONS = ("validation", "last", "guarded")


@dataclass
class AKDConfig(LossOptions):
    """AKD purification options"""
    trust_per_class: int = option(320, "clean rows per class for trust distillation", low=1)
    val_per_class: int = option(50, "clean rows per class held out to choose the epoch", low=0)
    val_extra: int = option(0, "also hold out up to this many more clean rows per class that no stage uses",
                            low=0)
    temperature: float = option(2.5, "distillation temperature", above=0.0)
    epochs: int = option(10, "maximum trust/punish cycles", low=1)
    lr: float = option(3e-5, "Adam learning rate", above=0.0)
    batch_size: int = option(16, "batch size", low=1)
    ce_weight: float = option(0.3, "weight of the CE term; distillation terms get 1 - this", low=0.0, high=1.0)
    punish_passes: int = option(3, "passes over the punished rows per cycle (the authors: 1)", low=1)
    punish_cap: float | None = option(10.0, "clamp each punished sample's loss at this value", above=0.0)
    punish_rows_per_cycle: int | None = option(None, "each punish pass takes a fresh seeded draw of this many "
                                                     "punished rows (none: all of them); with a punish set larger "
                                                     "than this (--scan-punish-rows excess) every row is reached "
                                                     "over the cycles while each pass pushes as hard as this many "
                                                     "rows do; 33 in the guarded preset", low=1, added=True)
    grad_clip: float | None = option(1.0, "clip the gradient norm at this value", above=0.0)
    synth_rows: int = option(0, "when the scan finds word triggers: this many trust rows with a trigger inserted "
                                "(of the labels synth_classes names)", low=0)
    repair_first: bool = option(False, "run the repair pass at the start of each cycle, before trust distillation "
                                       "(which then re-anchors the clean mapping the repair disturbed, and copies "
                                       "part of the backdoor back: docs/results/ablation_repair_first), instead "
                                       "of at its end", added=True)
    synth_per_trigger: bool = option(False, "synth_rows counts per found trigger (several trigger words get as "
                                            "many repair rows each as one would alone)", added=True)
    synth_mode: str = option("repair", "what those rows do: 'repair' (cross-entropy towards their own label, one "
                             "pass per cycle) or 'punish' (join the punished rows)", choices=("repair", "punish"))
    synth_classes: str = option("other", "repair rows are drawn from: 'other' (rows not of the trigger's target "
                                "label) or 'all' (every class, the target's too, so that the trigger carries no "
                                "label and the repair does not push the model towards the other classes)",
                                choices=("other", "all"), added=True)
    class_weights: str = option("balanced", "how the trust and repair rows of each class count: 'balanced' (as "
                                "drawn, the same number per class; the authors') or 'prior' (weighted to the clean "
                                "pool's class shares, so that training on balanced rows does not move the model "
                                "towards a balanced prior)", choices=("balanced", "prior"), added=True)
    reset_trigger_embeddings: bool = option(False, "when the scan finds word triggers: set to the mean embedding, "
                                                 "before the cycles, the input embedding of each trigger word that "
                                                 "is one token and in at most one in a hundred clean rows, and of "
                                                 "every piece of a word whose pieces are all that rare (an edited "
                                                 "embedding, as EP's, moves too little at this learning rate)",
                                             added=True)
    reset_max_changed: float | None = option(None, "with reset_trigger_embeddings: a found trigger word that is "
                                                   "not rare enough for the reset (a common piece) is reset all the "
                                                   "same when that changes the predictions of at most this share of "
                                                   "the held-out clean rows (measured word by word; none: never; "
                                                   "docs/results/ablation_reset_changed)",
                                             low=0.0, high=1.0, added=True)
    reset_value: str = option("mean", "with reset_trigger_embeddings: what a reset piece's input embedding becomes: "
                              "'mean' (the mean of every row of the embedding matrix), 'clean' (the mean of the "
                              "clean rows' tokens, each counted as often as it occurs: a typical token of the "
                              "defender's text; docs/results/ablation_reset_value), 'base' (the piece's own row "
                              "in the pre-trained model the suspicious one was fine-tuned from, reset_base: what "
                              "the token meant before any training on the poison; every piece of every found "
                              "word is reset, common ones too, since a common token keeps its meaning) or "
                              "'measured' (per found trigger, every piece of its words takes whichever of no "
                              "reset, base, clean, mean and the rows of the clean text's most frequent tokens "
                              "leaves the inserted trigger changing the fewest predictions of clean trust rows, "
                              "plus what it costs their accuracy; the share rule and reset_max_changed do not "
                              "apply)", choices=("mean", "clean", "base", "measured"), added=True)
    reset_base: str = option("", "with reset_value 'base' or 'measured': the pre-trained model (a directory, or a "
                             "hub id when online) whose input embeddings the suspicious model started from; "
                             "empty: the bundled all-MiniLM-L6-v2 ('measured' then leaves base out when it does "
                             "not match). Refused when its embeddings do not match the model's", added=True)
    reset_changed_words: str = option("all", "which words reset_max_changed measures: 'all' that fail the share rule, "
                                      "or 'pieces' (words of several pieces only: a one-token word common in the "
                                      "clean rows is ordinary vocabulary, as AddSent's 'this' is, and is kept; "
                                      "docs/results/ablation_reset_changed)", choices=("all", "pieces"), added=True)
    isolate_trigger_words: bool = option(False, "after the cycles, when the scan finds word triggers: a found word of "
                                               "several pieces that the embedding reset left (a common piece), in at "
                                               "most one in a hundred clean rows, becomes one new token of the returned "
                                               "model's tokenizer with the mean input embedding, so that the word no "
                                               "longer reaches its pieces while clean words that use them read as "
                                               "before; the saved tokenizer carries the tokens; on in the guarded "
                                               "preset, with isolate_keep 'paired' "
                                               "(docs/results/ablation_isolate_words)", added=True)
    isolate_keep: str = option("always", "with isolate_trigger_words: 'always' keep the new tokens; 'lower' only "
                               "when the held-out trigger proxy (clean rows with a found trigger inserted, sent to its "
                               "target) is lower with them than without; 'paired' only when, row by row, the rows "
                               "they take off the target outnumber the rows they send to it by at least two standard "
                               "errors of a sign test (d >= 2*sqrt(n), n the rows that change), so that a few held-out "
                               "rows do not decide; else the model is returned without them "
                               "(docs/results/ablation_isolate_words)", choices=("always", "lower", "paired"),
                               added=True)
    punish_when: str = option("always", "when a cycle runs its punish pass: 'always', or 'backdoor' (only while the "
                              "trigger proxy measured after the previous cycle, or at the start, is more than "
                              "proxy_tolerance above the clean rows' own rate of the target; without a found "
                              "trigger: always); did not bring the accuracy back on the one cell measured, "
                              "docs/results/ablation_punish_when", choices=("always", "backdoor"), added=True)
    match_teacher_prior: bool = option(False, "after each cycle, shift the classification head's bias so that the "
                                              "student's mean prediction on the held-out clean rows (their texts, "
                                              "not their labels) is the suspicious model's: a cycle that moves the "
                                              "decision threshold (punishing rows of a majority class does) then "
                                              "does not cost that class's accuracy (but what the threshold shift "
                                              "hid of the backdoor stays: docs/results/ablation_match_teacher_prior)",
                                       added=True)
    teacher_prior_shift: bool = option(False, "before the cycles, shift the suspicious model's logits on the trust "
                                              "rows (the distillation targets only) so that their mean prediction, "
                                              "each class weighted to its share of the clean pool, is those shares: "
                                              "trust distillation then does not teach the student the victim's lean "
                                              "towards its target on clean rows (docs/results/ablation_teacher_prior)",
                                       added=True)
    clean_prior_shift: bool = option(False, "after the cycles, when an epoch was kept: shift the classification "
                                            "head's bias so that the kept model's mean prediction on the held-out "
                                            "clean rows, each class weighted to its share of the clean pool, is "
                                            "those shares; kept only when the class-weighted held-out accuracy "
                                            "does not fall (a lean towards one class, which the victim's poison or "
                                            "the punish passes leave, is taken out: "
                                            "docs/results/ablation_clean_prior)", added=True)
    guard_prior_shift: bool = option(False, "with clean_prior_shift: the epoch rule measures each epoch as it would "
                                            "be returned, its clean-prior shift applied (where it does not lower "
                                            "the class-weighted held-out accuracy), accuracy and backdoor proxy "
                                            "alike; the start stays the suspicious model as given (a lean the "
                                            "punish passes leave then does not count as lost accuracy)",
                                     added=True)
    prior_shift_keep: str = option("gain", "with clean_prior_shift: when a shift is kept: 'gain' (the shifted "
                                           "model's class-weighted held-out accuracy is not below the unshifted "
                                           "one's) or 'start' (nor, else, below the model's before the cycles: a "
                                           "lean towards a majority-class target, which poison leaves and which "
                                           "raises accuracy on the natural mix as it raises ASR, is then taken out "
                                           "whenever the result is as accurate as the model it replaces; "
                                           "docs/results/ablation_prior_shift_keep)",
                                   choices=("gain", "start"), added=True)
    target_rate_cap: bool = option(False, "after the cycles, when an epoch was kept and a found trigger gave held-out "
                                          "rows: where the kept model sends more of those rows, without the trigger, "
                                          "to the trigger's target than the model before the cycles did, lower the "
                                          "target's logit (the head's bias) just enough that it sends no more; kept "
                                          "only while the class-weighted held-out accuracy stays within "
                                          "max_cacc_drop of the start (a lean towards the target that the cycles "
                                          "add is taken out; the victim's own lean is not: "
                                          "docs/results/ablation_target_rate_cap)", added=True)
    target_rate_cap_se: float = option(2.0, "with target_rate_cap: only when, row by row, the held-out rows the kept "
                                            "model sends to the target that the start did not outnumber those it "
                                            "takes off by at least this many standard errors of a sign test (0: any "
                                            "excess row, the rule of the first runs; docs/results/"
                                            "ablation_target_rate_cap)", low=0.0, added=True,
                                       keyed_with="target_rate_cap")      # the first cap runs had no margin
    repair_originals: bool = option(False, "the repair pass also trains each repair row's clean original (the row "
                                           "without the trigger) towards the same label: a pass that merely moves "
                                           "every row away from the trigger's target then pays for it on the "
                                           "originals, so the repair teaches that the trigger carries no label "
                                           "(with a majority-class target the plain repair cost OLID its accuracy: "
                                           "docs/results/ablation_repair_originals)", added=True)
    repair_target: str = option("label", "what each repair row is trained towards: its own label ('label'), or "
                                "the suspicious model's class probabilities on the same row without the trigger "
                                "('teacher': the trigger should change nothing; a row the model got wrong before the "
                                "trigger is not corrected, so the pass does not move the decision threshold, as the "
                                "hard labels of a minority class do when the target is the majority class; "
                                "docs/results/ablation_repair_originals)",
                                choices=("label", "teacher"), added=True)
    repair_poison: bool = option(False, "when the scan finds word triggers: the suspicious rows of a found trigger's "
                                        "target that hold it, with every found trigger of that target removed, join "
                                        "the repair rows, each trained towards the label the suspicious model gives "
                                        "it among the other labels (what dirty-label poison taught beside the "
                                        "trigger); only when the suspicious model already puts at least "
                                        "repair_poison_share of them in another label (clean-label poison: they stay "
                                        "in the target, and none is used; a seeded draw of repair_poison_rows "
                                        "of them, each beside a clean row of the label it leaves; "
                                        "docs/results/ablation_repair_poison)",
                                 added=True)
    repair_poison_share: float = option(0.5, "repair_poison: the share of the stripped rows the suspicious model "
                                             "must put outside their label for them to be used",
                                        low=0.0, high=1.0, added=True)
    repair_poison_rows: int = option(64, "repair_poison: at most this many of those rows (a seeded draw), each "
                                         "beside a clean trust row of the label it leaves, so that the pass does "
                                         "not move the decision threshold", low=1, added=True)
    repair_triggers: str = option("each", "each repair row gets one found trigger, in turn ('each'), or that one "
                                  "and a random number of the other found triggers of its target ('subsets': an "
                                  "attack may insert several trigger words into one row)",
                                  choices=("each", "subsets"), added=True)
    proxy_triggers: str = option("each", "the trigger proxy's held-out rows get one found trigger each, in turn "
                                 "('each'), or every found trigger of a target at once ('together': an attack that "
                                 "inserts several trigger words into a row is measured as it acts; "
                                 "docs/results/ablation_match_teacher_prior)",
                                 choices=("each", "together"), added=True)
    proxy_targets: str = option("pooled", "with found triggers of several targets (two backdoors), the trigger "
                                "proxy pools all their held-out rows ('pooled'), or is the target whose rows show "
                                "the largest excess over their own clean rate ('worst': a backdoor left on one "
                                "target is not averaged away by the others; docs/results/security)",
                                choices=("pooled", "worst"), added=True)
    selection: str = option("validation", "which epoch to keep (see bedkd.defenses.purifiers.epoch_choice)",
                            choices=SELECTIONS)
    max_cacc_drop: float = option(2.0, "selection: allowed drop of clean validation accuracy (points)", low=0.0)
    guard_se: float = option(2.0, "guarded: standard errors of the paired accuracy change added to max_cacc_drop "
                                   "(the noise margin; 0: the point estimate alone must be within max_cacc_drop, "
                                   "docs/results/ablation_guard_se)", low=0.0, added=True)
    guard_margin_cap: float | None = option(None, "guarded: the noise margin (guard_se standard errors) counts at "
                                                  "most this many points (none: no cap; a churning epoch's standard "
                                                  "error is several points on a few hundred held-out rows: "
                                                  "docs/results/guard_margin)", low=0.0, added=True)
    guard_mix_shift: float | None = option(None, "guarded: the accuracy guard must also hold on every class mix "
                                                 "within this total-variation distance of the clean pool's shares "
                                                 "(each class's held-out change and its standard error weighed at "
                                                 "the worst such mix; 1: every class on its own), so that a trade "
                                                 "of one class's accuracy for another's that the pool's mix hides "
                                                 "does not pass on a test set of another mix (none: the pool's mix "
                                                 "alone; docs/results/ablation_guard_mix)",
                                           low=0.0, high=1.0, added=True)
    proxy_tolerance: float = option(0.05, "guarded: epochs whose backdoor proxy is within this of the lowest "
                                          "count as equal (the most accurate of them is kept)", low=0.0, high=1.0)
    stop_proxy: float | None = option(None, "guarded: stop once the trigger proxy is at most this far above the "
                                            "clean rows' own rate of the target", low=0.0)
    abort_cacc_drop: float = option(15.0, "stop when clean validation accuracy drops this many points", above=0.0)
    start_candidate: bool = option(False, "guarded: the model before the cycles (found trigger words' embeddings "
                                          "reset) is a candidate like any epoch, measured as it would be returned "
                                          "(guard_prior_shift), when a found trigger gives the backdoor proxy (the "
                                          "flag agreement, without one, says nothing of a backdoor the cycles have "
                                          "not touched); patience still counts from the first cycle epoch within "
                                          "the guard", added=True)
    flag_tiebreak: bool = option(False, "guarded, with a found trigger: of the epochs whose trigger proxy counts as "
                                        "the lowest, only those whose flag agreement is within proxy_tolerance of "
                                        "their lowest are kept candidates (a backdoor the found words explain only "
                                        "in part stays visible in the held-out flagged rows: "
                                        "docs/results/agnews_stylebkd_6000)", added=True)
    signed_proxy: bool = option(False, "guarded, with a found trigger: the backdoor proxy keeps its sign, so an "
                                       "epoch whose found trigger sends fewer held-out rows to its target than go "
                                       "there without it ranks below one where the trigger adds nothing (by default "
                                       "both count as zero, and of such epochs the most accurate is kept: "
                                       "docs/results/ablation_signed_proxy)", added=True)
    tie_break: str = option("accuracy", "guarded, with a found trigger: of the epochs whose backdoor proxy counts "
                                        "as the lowest, keep the most accurate ('accuracy': class-weighted "
                                        "held-out accuracy, which rewards a lean towards a majority-class target) "
                                        "or the one whose held-out rows with the found trigger go to its target "
                                        "least often ('target-rate': the held-out ASR, lean included; ties: the "
                                        "most accurate; docs/results/ablation_tie_break)",
                            choices=("accuracy", "target-rate"), added=True)
    untriggered_latest: bool = option(False, "guarded, without a found trigger: the latest epoch within the "
                                             "accuracy guard is kept, not the one of least flag agreement (on "
                                             "held-out flagged rows that are mostly clean, the flag agreement "
                                             "follows the model's class lean more than the backdoor, and the "
                                             "relabelled rows take a paraphrase backdoor out over several epochs: "
                                             "docs/results/ablation_untriggered_latest)", added=True)
    untriggered_mean: int = option(1, "guarded, with untriggered_latest and without a found trigger: the mean of "
                                      "the weights of the last this many epochs within the accuracy guard is "
                                      "returned when it is itself within the guard, else the latest epoch (one "
                                      "epoch to the next moves a paraphrase backdoor's ASR by 2-3 points: "
                                      "docs/results/ablation_untriggered_mean; 1: the latest alone)",
                                   low=1, added=True)
    start_keep_se: float | None = option(None, "guarded, with start_candidate: when the model before the cycles ties "
                                               "the lowest backdoor proxy, it is kept unless a tied epoch's "
                                               "class-weighted held-out accuracy is above its own by more than this "
                                               "many standard errors of that epoch's paired change, or its found "
                                               "trigger adds less by more than that many, paired over the held-out "
                                               "trigger rows (the cycles must earn their change; none: the most "
                                               "accurate tied candidate is kept)",
                                         low=0.0, added=True)
    start_max_proxy: float | None = option(None, "guarded, with start_candidate: the start is a candidate only when "
                                                 "its backdoor proxy, what its found trigger adds on the held-out "
                                                 "rows, is at most this (0: the reset took the trigger's measured "
                                                 "effect out; above it, the cycles' epochs are weighed as without "
                                                 "start_candidate: docs/results/ablation_start_keep)", added=True)
    patience: int | None = option(3, "stop after this many epochs without a better validated epoch (guarded: "
                                     "counted from the first epoch within the accuracy guard)", low=1)
    clean_layout: str = option("nested", "trust rows: the first rows of each class, DMM's included, or the rows "
                               "after DMM's (the authors' separate slices)", choices=LAYOUTS)
    clean_order: str = option("shuffled", "order in which each class's clean rows are taken: seeded random, or "
                              "file order (the authors')", choices=ORDERS)
    seed: int = option(0, "random seed", low=0)

    def check(self):
        if self.synth_mode == "punish" and self.synth_classes == "all":
            raise ConfigError("AKDConfig: synth_classes='all' needs synth_mode='repair' (punished rows carry the "
                              "trigger's target label)")
        if self.clean_prior_shift and self.match_teacher_prior:
            raise ConfigError("AKDConfig: clean_prior_shift and match_teacher_prior shift the same bias towards "
                              "different priors; choose one")
        if self.teacher_prior_shift and self.match_teacher_prior:
            raise ConfigError("AKDConfig: teacher_prior_shift takes the suspicious model's lean out of the trust "
                              "targets, and match_teacher_prior moves the student's bias back to that lean; choose "
                              "one")
        if self.guard_prior_shift and not self.clean_prior_shift:
            raise ConfigError("AKDConfig: guard_prior_shift measures the epochs with the shift clean_prior_shift "
                              "applies; set clean_prior_shift too")
        if self.prior_shift_keep != "gain" and not self.clean_prior_shift:
            raise ConfigError("AKDConfig: prior_shift_keep decides when clean_prior_shift's shift is kept; set "
                              "clean_prior_shift too")
        if self.target_rate_cap and self.selection != "guarded":
            raise ConfigError("AKDConfig: target_rate_cap compares the kept epoch with the start of "
                              "selection='guarded'")
        if self.guard_mix_shift is not None and self.selection != "guarded":
            raise ConfigError("AKDConfig: guard_mix_shift widens selection='guarded''s accuracy guard")
        if self.start_candidate and self.selection != "guarded":
            raise ConfigError("AKDConfig: start_candidate is a candidate of selection='guarded'")
        if self.signed_proxy and self.selection != "guarded":
            raise ConfigError("AKDConfig: signed_proxy ranks selection='guarded''s candidates")
        if self.untriggered_latest and self.selection != "guarded":
            raise ConfigError("AKDConfig: untriggered_latest chooses among selection='guarded''s candidates")
        if self.untriggered_mean > 1 and not self.untriggered_latest:
            raise ConfigError("AKDConfig: untriggered_mean averages the epochs untriggered_latest keeps; set "
                              "untriggered_latest too")
        if self.start_keep_se is not None and not self.start_candidate:
            raise ConfigError("AKDConfig: start_keep_se weighs the start as a candidate; set start_candidate too")
        if self.start_max_proxy is not None and not self.start_candidate:
            raise ConfigError("AKDConfig: start_max_proxy admits the start as a candidate; set start_candidate too")
        if self.tie_break != "accuracy" and self.selection != "guarded":
            raise ConfigError("AKDConfig: tie_break chooses among selection='guarded''s candidates")
        if self.flag_tiebreak and self.selection != "guarded":
            raise ConfigError("AKDConfig: flag_tiebreak narrows selection='guarded''s candidates")
        if (self.selection != "last" or self.clean_prior_shift) and self.val_per_class + self.val_extra == 0:
            what = "clean_prior_shift" if self.selection == "last" else f"selection='{self.selection}'"
            raise ConfigError(f"AKDConfig: {what} needs held-out rows (val_per_class > 0)")
        super().check()


@dataclass
class Validator:
    """What is measured after each epoch, on rows no stage trains on."""
    pad: int
    val_ids: list[list[int]]
    val_labels: np.ndarray
    prior: np.ndarray                      # weight of each class (the clean pool's shares)
    probe_ids: list[list[int]] = field(default_factory=list)     # held-out flagged rows
    probe_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    trigger_ids: list[list[int]] = field(default_factory=list)   # held-out clean rows + a found trigger
    trigger_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))    # their index in val
    trigger_targets: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    trigger_texts: list[str] = field(default_factory=list)       # the same rows as text (to encode anew)
    worst_target: bool = False             # the proxy of the target with the largest excess, not all pooled
    shift_floor: float | None = None       # prior_shift_keep='start': the start's class-weighted accuracy

    def __call__(self, model, prior_shift: bool = False) -> tuple[dict, np.ndarray | None]:
        """The epoch's record and the per-row correctness on the held-out clean rows; ``prior_shift``
        (``guard_prior_shift``): as the model would be with its clean-prior shift (:meth:`prior_offsets`)."""
        correct = None
        record = {"val_acc": None, "val_acc_weighted": None, "flag_agreement": None, "trigger_asr": None,
                  "clean_to_target": None}
        without = None
        offsets = None
        if self.val_ids:
            proba = predict_proba_ids(model, self.val_ids, self.pad)
            if prior_shift:
                offsets = self.prior_offsets(proba)["applied"]
                record["bias_shift"] = 0.0 if offsets is None else float(np.abs(offsets).max())
            pred = _shifted(proba, offsets).argmax(axis=1)
            correct = pred == self.val_labels
            record["val_acc"] = float(correct.mean())
            record["val_acc_weighted"] = self.weighted(correct)
            record["val_acc_per_class"] = self.per_class(correct)
            record["class_shares"] = (self.prior / self.prior.sum()).tolist()     # the mix val_acc_weighted weighs
            if self.trigger_ids:      # the same rows without the trigger: how often they go to the target anyway
                without = pred[self.trigger_rows] == self.trigger_targets
        if self.probe_ids:
            pred = predict_proba_ids(model, self.probe_ids, self.pad).argmax(axis=1)
            record["flag_agreement"] = float((pred == self.probe_labels).mean())
        if self.trigger_ids:
            with_trigger = self.trigger_hits(model, offsets)
            rows = np.ones(len(with_trigger), dtype=bool)
            if self.worst_target and without is not None:
                def excess(t) -> float:
                    mine = self.trigger_targets == t
                    return with_trigger[mine].mean() - without[mine].mean()
                worst = max(np.unique(self.trigger_targets).tolist(), key=lambda t: (excess(t), -t))
                rows = self.trigger_targets == worst
                record["trigger_rows_target"] = int(worst)     # whose rows trigger_row_effects pairs
            record["trigger_asr"] = float(with_trigger[rows].mean())
            if without is not None:
                record["clean_to_target"] = float(without[rows].mean())
                record["clean_to_target_rows"] = "".join("1" if o else "0" for o in without[rows])
                record["trigger_row_effects"] = row_effects(with_trigger[rows], without[rows])
        return record, correct

    def trigger_hits(self, model, offsets: np.ndarray | None = None) -> np.ndarray:
        """Which held-out trigger rows the model (with bias ``offsets``) sends to their target."""
        proba = predict_proba_ids(model, self.trigger_ids, self.pad)
        return _shifted(proba, offsets).argmax(axis=1) == self.trigger_targets

    def prior_offsets(self, proba: np.ndarray) -> dict:
        """``clean_prior_shift``'s offsets of the head's bias for class probabilities ``proba`` on the
        held-out rows (their mean prediction, each class weighted to its share of the clean pool, then
        is those shares), the class-weighted accuracy before and after, and ``applied``: the offsets
        when they do not lower it, or (``shift_floor``) leave it at least that, else None."""
        labels = self.val_labels
        offsets = clean_mix_offsets(proba, labels, self.prior)
        before = self.weighted(proba.argmax(axis=1) == labels)
        after = self.weighted(_shifted(proba, offsets).argmax(axis=1) == labels)
        keep = after >= before - 1e-9 or (self.shift_floor is not None and after >= self.shift_floor - 1e-9)
        return {"offsets": offsets, "before": before, "after": after, "applied": offsets if keep else None}

    def per_class(self, correct: np.ndarray) -> list[float | None]:
        """Each class's share of correct held-out rows (None: the class has none)."""
        return [float(correct[self.val_labels == c].mean()) if (self.val_labels == c).any() else None
                for c in range(len(self.prior))]

    def weighted(self, correct: np.ndarray) -> float:
        accs = [(self.prior[c], a) for c, a in enumerate(self.per_class(correct)) if a is not None]
        total = sum(w for w, _ in accs)
        return float(sum(w * a for w, a in accs) / total)

    def paired_se(self, correct: np.ndarray, start: np.ndarray) -> float:
        """Standard error of the weighted accuracy change against the start, from paired rows."""
        total = sum(self.prior[c] for c in range(len(self.prior)) if (self.val_labels == c).any())
        return float(math.sqrt(sum((self.prior[c] / total * se) ** 2
                                   for c, se in enumerate(self.paired_se_per_class(correct, start)) if se)))

    def paired_se_per_class(self, correct: np.ndarray, start: np.ndarray) -> list[float | None]:
        """Each class's standard error of its accuracy change against the start, from paired rows
        (None: fewer than two held-out rows of the class)."""
        d = correct.astype(float) - start.astype(float)
        rows = [self.val_labels == c for c in range(len(self.prior))]
        return [float(math.sqrt(d[r].var(ddof=1) / r.sum())) if r.sum() > 1 else None for r in rows]


def row_effects(with_trigger: np.ndarray, without: np.ndarray) -> str:
    """Each held-out trigger row's part in the proxy, one character per row: ``+`` to the target with
    the trigger only, ``-`` without it only, ``0`` the same either way: two epochs' proxies can then be
    compared row by row (benchmarks/epochs.py)."""
    return "".join("+" if w and not o else "-" if o and not w else "0" for w, o in zip(with_trigger, without))


def shift_to_clean_prior(model, validator: Validator) -> dict:
    """``clean_prior_shift``: the head's bias shifted by :meth:`Validator.prior_offsets` (what a model
    without a lean predicts on the natural mix), only when the class-weighted held-out accuracy does
    not fall. Returns the offsets, both accuracies and whether it applied."""
    got = validator.prior_offsets(predict_proba_ids(model, validator.val_ids, validator.pad))
    if got["applied"] is not None:
        shift_head(model, got["applied"])
    return {"offsets": got["offsets"].tolist(), "val_acc_weighted_before": got["before"],
            "val_acc_weighted_after": got["after"], "applied": got["applied"] is not None}


def cap_target_rate(model, validator: Validator, start: dict, max_cacc_drop: float, z: float,
                    apply: bool = True) -> dict | None:
    """``target_rate_cap``: lower the found target's logit (the head's bias) until the held-out rows
    without the trigger go to it no more often than they did before the cycles (``start``), when the
    class-weighted held-out accuracy then stays within ``max_cacc_drop`` points of the start's. The
    smallest such offset is taken: it flips the kept model's excess rows with the lowest margins.
    ``z`` (``target_rate_cap_se``): only when, row by row against the start's record, the rows the kept
    model sends to the target that the start did not outnumber those it takes off by at least ``z``
    standard errors of a sign test (:func:`.epoch_choice.sign_test_wins`), so that a lean of one or two
    held-out rows, which is noise, buys no offset. None when there is nothing to compare (no found
    trigger); else the rates, the paired counts, accuracies and offsets. ``apply`` False: the model is
    left as it is (``applied`` then says whether the cap would shift it)."""
    if not validator.trigger_ids or start.get("clean_to_target") is None:
        return None
    rows, targets = validator.trigger_rows, validator.trigger_targets
    if "trigger_rows_target" in start:                 # proxy_targets='worst': the start's rows
        same = targets == start["trigger_rows_target"]
        rows, targets = rows[same], targets[same]
    proba = predict_proba_ids(model, validator.val_ids, validator.pad)
    logp = _shifted(proba, np.zeros(proba.shape[1]))
    mine = logp[rows]
    at = np.arange(len(rows))
    others = mine.copy()
    others[at, targets] = -np.inf
    margin = mine[at, targets] - others.max(axis=1)    # > 0: the row goes to its target
    hits = mine.argmax(axis=1) == targets
    was = np.frombuffer(start["clean_to_target_rows"].encode(), dtype=np.uint8) == ord("1")
    joined, left = int((hits & ~was).sum()), int((was & ~hits).sum())
    excess = int(hits.sum()) - int(was.sum())
    offsets = np.zeros(logp.shape[1])
    leans = excess > 0 and sign_test_wins(joined, left, z)
    if leans:
        offsets[np.unique(targets)] = -(np.sort(margin[hits])[excess - 1] + 1e-4)
    shifted = logp + offsets
    before = validator.weighted(logp.argmax(axis=1) == validator.val_labels)
    after = validator.weighted(shifted.argmax(axis=1) == validator.val_labels)
    applied = leans and after >= (start["val_acc_weighted"] or 0.0) - max_cacc_drop / 100 - 1e-9
    if applied and apply:
        shift_head(model, offsets)
    return {"start_rate": float(start["clean_to_target"]), "rate_before": float(hits.mean()),
            "rate_after": float((shifted[rows].argmax(axis=1) == targets).mean()), "rows": int(len(rows)),
            "rows_joined": joined, "rows_left": left, "paired_z": float(z),
            "offsets": offsets.tolist(), "val_acc_weighted_before": before, "val_acc_weighted_after": after,
            "applied": bool(applied)}


def rate_cap_replay(model, validator: Validator, start: dict, cfg: AKDConfig, probe: EpochProbe) -> dict | None:
    """A diagnostic (traced runs without ``target_rate_cap``): what the cap would do to the kept model,
    which is left as it is. The offsets are those of the rule without the margin (``z`` 0: with a margin
    that the excess passes they are the same); ``passes_margin`` says whether it passes
    ``target_rate_cap_se``'s, and ``test`` (where it would act) gives the probe's test numbers with the
    offsets, before a found trigger word's tokens are isolated."""
    replay = cap_target_rate(model, validator, start, cfg.max_cacc_drop, 0.0, apply=False)
    if replay is None:
        return None
    replay["passes_margin"] = sign_test_wins(replay["rows_joined"], replay["rows_left"], cfg.target_rate_cap_se)
    replay["paired_z"] = float(cfg.target_rate_cap_se)
    if replay["applied"]:
        replay["test"] = probe(model, np.asarray(replay["offsets"]))
    return replay


def _shifted(proba: np.ndarray, offsets: np.ndarray | None) -> np.ndarray:
    """Log-probabilities plus a bias shift (argmax-equivalent to the shifted model's); ``proba`` when none."""
    return proba if offsets is None else np.log(np.clip(proba, 1e-12, None)) + offsets


EpochProbe = Callable[[torch.nn.Module, "np.ndarray | None"], dict]   # (model, bias offsets) -> numbers


@dataclass
class RepairRows:
    """Clean rows carrying a found trigger (``synth_mode="repair"``) and what they are trained
    towards: class indices (their own labels) or, ``repair_target="teacher"``, class probabilities."""
    ids: list[list[int]]
    targets: torch.Tensor
    weights: torch.Tensor | None = None     # per-row loss weights (None: all 1)


def repair_epoch(model, optimizer, rows: RepairRows, pad: int, batch_size: int, seed: int,
                 grad_clip: float | None) -> float:
    """One pass of cross-entropy towards the rows' targets (labels or probabilities); returns the mean loss."""
    model.train()
    total = 0.0
    for batch_rows in shuffled_batches([len(x) for x in rows.ids], batch_size, seed):
        batch = collate([rows.ids[i] for i in batch_rows], pad, model.device)
        per_row = F.cross_entropy(model(**batch).logits, rows.targets[torch.as_tensor(batch_rows, device=model.device)],
                                  reduction="none")
        loss = weighted_mean(per_row, rows.weights, batch_rows)
        optimizer_step(model, optimizer, loss, grad_clip)
        total += loss.item() * len(batch_rows)
    model.eval()
    return total / max(len(rows.ids), 1)


def adversarial_cycles(model, trust, punish, pad: int, validator: Validator, cfg: AKDConfig,
                       progress: bool, repair: RepairRows | None = None,
                       teacher_prior: np.ndarray | None = None, probe: EpochProbe | None = None) -> EpochRun:
    """Trust/punish(/repair) cycles on ``model`` in place; leaves it at the chosen epoch's weights.
    ``teacher_prior`` (``match_teacher_prior``): the suspicious model's mean class probabilities on
    the validator's clean rows, which the student's are shifted back to after each cycle.
    ``probe`` (a diagnostic, the bench's ``--trace-epochs``): called on the start and on each epoch as
    it would be returned (its clean-prior shift as offsets); what it returns is recorded under
    ``"test"`` and never read by the epoch rule, so that other rules can be replayed on test numbers."""
    if cfg.match_teacher_prior and (teacher_prior is None or not validator.val_ids):
        raise ConfigError("AKD: match_teacher_prior needs held-out clean rows and the suspicious model's mean "
                          "prediction on them")
    seed_everything(cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    common = dict(form=LossForm.of(cfg), batch_size=cfg.batch_size, grad_clip=cfg.grad_clip)
    start, start_correct = validator(model)
    if probe is not None:
        start["test"] = probe(model, None)
    if cfg.prior_shift_keep == "start":
        validator.shift_floor = start["val_acc_weighted"]
    latest = [start]                     # the last measured record: punish_when='backdoor' reads it

    def repair_pass(seed: int) -> float | None:
        return repair_epoch(model, opt, repair, pad, cfg.batch_size, seed * 10 + 9, cfg.grad_clip) \
            if repair is not None else None

    def cycle(epoch: int) -> dict:
        seed = cfg.seed * 1000 + epoch - 1
        repair_loss = repair_pass(seed) if cfg.repair_first else None
        trust_loss = distill_epoch(model, opt, trust, pad, seed=seed, **common)
        punish_loss = None
        for p in range(cfg.punish_passes if punish is not None and punish_next_cycle(latest[-1], cfg) else 0):
            punish_loss = distill_epoch(model, opt, punish, pad, seed=seed * 10 + p, sign=-1.0,
                                        cap=cfg.punish_cap, max_rows=cfg.punish_rows_per_cycle, **common)
        if not cfg.repair_first:
            repair_loss = repair_pass(seed)
        losses = {"trust_loss": trust_loss, "punish_loss": punish_loss, "repair_loss": repair_loss}
        if cfg.match_teacher_prior:
            offsets = logit_shift(predict_proba_ids(model, validator.val_ids, pad), teacher_prior)
            shift_head(model, offsets)
            losses["bias_shift"] = float(np.abs(offsets).max())
        return losses

    def as_returned() -> dict:
        """The model now, measured as the epoch rule weighs it (with its prior shift, guard_prior_shift)."""
        measured, correct = validator(model, prior_shift=cfg.guard_prior_shift)
        if correct is not None and start_correct is not None:
            measured["val_change_se"] = validator.paired_se(correct, start_correct)
            measured["val_change_se_per_class"] = validator.paired_se_per_class(correct, start_correct)
        if probe is not None:        # the shift the model would leave with (shift_to_clean_prior's)
            offsets = validator.prior_offsets(predict_proba_ids(model, validator.val_ids, pad))["applied"] \
                if cfg.clean_prior_shift and validator.val_ids else None
            measured["test"] = probe(model, offsets)
        return measured

    def measure() -> dict:
        latest.append(as_returned())
        return latest[-1]

    before = cpu_state(model) if cfg.selection == "guarded" else None
    if cfg.selection == "guarded" and start["trigger_asr"] is not None:
        # measured whether or not it is a candidate, so that replay_choice can tell what
        # start_candidate would keep on any guarded run (the cycles train the same either way)
        start["as_returned"] = as_returned()
    choice = CycleChoice(cfg, start, before)
    run = run_epochs(model, cfg.epochs, cycle, choice, measure=measure, start=start,
                     desc="AKD: trust/punish", progress=progress,
                     postfix=lambda r: {"val_acc": _fmt(r["val_acc"]), "flag_agree": _fmt(r["flag_agreement"]),
                                        "trigger_asr": _fmt(r["trigger_asr"])})
    if run.chosen and choice.guard.averages():
        run.mean = mean_of_latest(model, choice.guard, start, as_returned)
    return run


def mean_of_latest(model, guard, start: dict, as_returned: Callable[[], dict]) -> dict:
    """``untriggered_mean``: load the mean of the weights of the epochs ``guard`` holds (the last ones within
    the guard, the latest chosen) and measure it; it stays when it is within the guard, else the latest
    epoch's weights go back. What was measured, with the epochs averaged and whether the mean was kept."""
    epochs = sorted(guard.states)
    latest = guard.states[guard.chosen]
    model.load_state_dict(mean_state([guard.states[e] for e in epochs]))
    measured = {"epochs": epochs, **as_returned()}
    measured["kept"] = guard.eligible(measured, start)
    if not measured["kept"]:
        model.load_state_dict(latest)
    model.eval()
    return measured


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def punish_next_cycle(record: dict, cfg: AKDConfig) -> bool:
    """``punish_when``: whether the next cycle punishes, given the last measured record."""
    if cfg.punish_when == "always" or record["trigger_asr"] is None:
        return True
    return backdoor_proxy(record) > cfg.proxy_tolerance + 1e-9
