"""BeDKD purification: detection, then adversarial knowledge distillation (AKD, see :mod:`.akd`).

Wu et al., "BeDKD: Backdoor Defense based on Dynamic Knowledge Distillation and Directional
Mapping Modulator", AAAI 2026 (arXiv:2508.01595).

Three presets (``PRESETS``), every difference an option:

* ``reference`` — the authors' released code (CAU-ISS-Lab/Backdoor-Attack-Defense-LLMs,
  ``BeDKD/models/bedkd.py``): see the comment above ``PRESETS`` and docs/presets.md for what remains
  different and why.
* ``guarded`` — this project's method: a scan first (:mod:`..scanning`: a verdict, the target
  label, a trigger search, the label check and its shift test); no evidence, no change; the rows a
  label check flags, for a label with no found trigger (DMM's evidence or not), are trained towards
  their likeliest other class under its classifier, with the shift test's rows at an estimated
  false-discovery rate of 10 % added where it finds the label too (thirty-third session), and a label
  with a found trigger gets the label check's rows too where its evidence holds on the rows that hold
  no found trigger (the words explain part of the poison only: AG News StyleBkd; fifty-fifth
  session, ``docs/results/label_check_unexplained/``); only
  flagged rows of the target label are punished, as many as DMM's excess on that
  label estimates poisoned (at least 33), 33 of them drawn anew for each punish pass; clean rows
  of every class carrying a found trigger are trained towards their own label; a found trigger
  word that is rare in the clean rows gets the mean input embedding (a word of several pieces: all
  of them, when each is rare in the clean rows' tokens); trust and repair rows are weighted to the
  clean pool's class shares (balanced rows would move an imbalanced task's model towards a
  balanced prior); the epoch is chosen on class-weighted clean accuracy, on every clean row no
  stage uses, within 1 point plus a noise margin of at most 1 point, and a backdoor proxy, each
  epoch measured as it would be returned: with the head's bias shifted so that its mean prediction
  on those rows has the clean pool's class shares, where that does not lower their accuracy (the
  shift guard, added in the thirtieth session: ``docs/results/README.md``); the proxy keeps its
  sign, so an epoch whose found trigger keeps held-out rows off its target ranks below one where it
  adds nothing (``signed_proxy``; seventieth session, ``docs/results/ablation_signed_proxy/``); without a
  found trigger, the latest epoch within the accuracy guard is kept, not the one of least flag agreement,
  which on mostly clean flagged rows follows the model's class lean (``untriggered_latest``; eightieth
  session, ``docs/results/ablation_untriggered_latest/``); and after the
  cycles, a found trigger word of several pieces that the reset left (a common piece) gets a token
  of its own at the mean embedding, kept only when, on held-out rows carrying the found triggers,
  it takes at least two standard errors more rows off the target than it sends to it
  (``isolate_keep='paired'``; sixty-second session, ``docs/results/ablation_isolate_words/``);
  a row the label check would relabel towards a found trigger's target while it holds a piece of
  that trigger is left out (an SOS attack's antidote rows, which hold all but one trigger word under
  their own label; sixty-fourth session), and so is every row of a label whose label-check evidence
  no longer holds without the rows that hold such a piece (the piece test: there the antidote rows
  are the whole evidence, and the rest are clean rows; ``label_check_towards_target='residual'``,
  sixty-sixth session, ``docs/results/ablation_towards_target/``); a label's best trigger candidate
  that flips 30 % of the probe rows (under the search's 60 %) is a trigger where DMM or the label check
  found the label, flags the rows that hold it, and no longer finds it without the rows that hold a
  piece of it (``trigger_flip_backed``: a weak victim's trigger;
  seventy-eighth session, ``docs/results/ablation_trigger_backed/``).
* ``fast`` — this project's earlier default, kept as measured in ``docs/results/bench_cpu``.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

from ...data import LabeledTexts, check_labels, require_all_classes
from ...errors import ConfigError
from ...modeling import Classifier
from ...modeling.batching import encode
from ...modeling.calibration import clean_mix_offsets
from ...modeling.drift import base_embeddings
from ...modeling.inference import predict_proba_ids
from ...modeling.training import EpochRun
from ...seeding import rng
from ..base import Purified, Purifier
from ..clean_split import CleanBudget, CleanSplit
from ..data_filters.dmm import Detection, DMMConfig, DMMDetector
from ..distillation import class_weights, fixed_batches, teacher_targets
from ..scanning import ScanConfig, ScanResult, Trigger, Verdict, scan
from ..scanning.scan import punished_labels
from .akd import (AKDConfig, EpochProbe, RepairRows, Validator, adversarial_cycles, cap_target_rate, rate_cap_replay,
                  shift_to_clean_prior)
from .poison_repair import PoisonRepair, one_trust_row_each, poison_repair
from .trigger_reset import choose_reset_value, reset_trigger_embeddings
from .trigger_tokens import isolate_counts, isolate_keeps, isolate_trigger_words

# The authors' released code: disjoint file-order clean slices (80 + 320 per class, no held-out
# rows), the suspicious set scanned in file order, the first 33 eligible flagged rows punished,
# batches drawn once, their loss (no T^2, padded MSE), 512 tokens, 50 cycles with one punish
# pass, no guards, the last epoch kept. No scan.
_AUTHORS_LOSS = dict(batch_order="fixed", kl_t2=False, mse_padding=True, max_length=512)
_NO_SCAN = ScanConfig(enabled=False)
PRESETS: dict[str, tuple[DMMConfig, AKDConfig, ScanConfig]] = {
    "reference": (DMMConfig(keep_order="scan", scan_order="file", **_AUTHORS_LOSS),
                  AKDConfig(epochs=50, punish_passes=1, punish_cap=None, grad_clip=None, selection="last",
                            patience=None, abort_cacc_drop=100.0, val_per_class=0, clean_layout="disjoint",
                            clean_order="file", **_AUTHORS_LOSS),
                  _NO_SCAN),
    "guarded": (DMMConfig(scan_order="file", max_flagged=None, **_AUTHORS_LOSS),
                AKDConfig(kl_t2=False, punish_passes=1, synth_rows=64, synth_classes="all", class_weights="prior",
                          val_extra=500, max_cacc_drop=1.0, selection="guarded", reset_trigger_embeddings=True,
                          punish_rows_per_cycle=33, guard_margin_cap=1.0, clean_prior_shift=True,
                          guard_prior_shift=True, isolate_trigger_words=True, isolate_keep="paired",
                          signed_proxy=True, untriggered_latest=True),
                ScanConfig(punish_rows="excess", label_check=True, label_check_use="relabel", label_check_shift=True,
                           label_check_shift_fdr=0.1, label_check_over_dmm=True,
                           label_check_counter_retry=True, label_check_unexplained=True,
                           label_check_towards_target="residual", trigger_flip_backed=0.3)),
    # This project's earlier default, kept as it was measured (docs/results/bench_cpu).
    "fast": (DMMConfig(), AKDConfig(), _NO_SCAN),
}
DEFAULT_PRESET = "reference"


class BeDKD(Purifier):
    """Purifier: suspicious model in, purified model out (the input is never modified)."""
    name = "bedkd"

    def __init__(self, dmm: DMMConfig | None = None, akd: AKDConfig | None = None, scan: ScanConfig | None = None):
        self.dmm = dmm or DMMConfig()
        self.akd = akd or AKDConfig()
        self.scan_cfg = scan or _NO_SCAN
        if self.scan_cfg.enabled and self.scan_cfg.punish == "untriggered" and self.akd.synth_rows == 0:
            raise ConfigError("BeDKD: scan punish='untriggered' leaves a found trigger to its repair rows; set "
                              "synth_rows > 0")

    @property
    def budget(self) -> CleanBudget:
        """DMM's flipped rows per class, and AKD's trust and held-out rows and how they are taken."""
        return CleanBudget.of(self.akd, flip_per_class=self.dmm.flip_per_class)

    def split(self, clean: LabeledTexts) -> CleanSplit:
        """The clean pool's rows for DMM, trust and validation (the same for every command)."""
        return self.budget.split(clean)

    def detect(self, teacher: Classifier, clean: LabeledTexts, suspect: LabeledTexts,
               progress: bool = True) -> Detection:
        """DMM alone (with the scan when it is on), on the rows ``purify`` would give it."""
        self._check(teacher, clean, suspect)
        if self.scan_cfg.enabled:
            return self.scan(teacher, clean, suspect, progress).detection
        return DMMDetector(self.dmm).detect(teacher, clean, suspect, self.split(clean).flip, progress)

    def scan(self, teacher: Classifier, clean: LabeledTexts, suspect: LabeledTexts,
             progress: bool = True) -> ScanResult:
        """The verdict, target label and punish rows (:mod:`..scanning`); works with the scan off too."""
        self._check(teacher, clean, suspect)
        return scan(teacher, clean, suspect, self.split(clean), self.dmm, self.scan_cfg.replace(enabled=True),
                    progress)

    @staticmethod
    def _check(teacher, clean, suspect) -> None:
        check_labels(clean, teacher.num_labels)
        check_labels(suspect, teacher.num_labels)
        require_all_classes(clean, teacher.num_labels, "BeDKD")

    def purify(self, teacher: Classifier, clean: LabeledTexts, suspect: LabeledTexts | None = None,
               progress: bool = True, detection: Detection | None = None,
               epoch_probe: EpochProbe | None = None) -> Purified:
        """The purified copy; ``detection``: DMM's flags from an earlier ``detect`` (e.g. ``--flags``)
        instead of running it; ``epoch_probe``: a diagnostic measured on every AKD epoch
        (:func:`adversarial_cycles`' ``probe``; the bench's ``--trace-epochs``). The report's ``detection`` holds counts; score it against ground
        truth with ``result.detection.metrics(poisoned_rows)``. With ``ScanConfig.rounds`` above 1,
        the purified model is scanned and purified again while its scan finds evidence; the report
        is the first round's, with ``later_rounds`` (each later round's verdict, epochs and seconds)
        and its ``seconds`` summed over the rounds. A later round acts only on labels the first round
        found: evidence for another label (on SST-2 SOS t0 s0 the label check's reading of the
        purified model's non-target label, whose relabelled rows brought the backdoor back:
        docs/results/ablation_rounds/) ends the rounds with the model as it was."""
        result = self._round(teacher, clean, suspect, progress, detection, epoch_probe)
        known = set((result.report.get("verdict") or {}).get("targets") or [])
        later = []
        for _ in range(self.scan_cfg.rounds - 1):
            if (later[-1] if later else result.report).get("unchanged"):
                break                                      # the last round's scan found nothing to act on
            again = self._round(result.classifier, clean, suspect, progress, None, epoch_probe, known)
            later.append(_later_round(again.report))
            result = Purified(again.classifier, result.report, result.detection)   # unchanged: a copy of the last
        if later:
            seconds = result.report["seconds"]
            for one in later:
                for stage, value in one["seconds"].items():
                    seconds[stage] = seconds.get(stage, 0.0) + value
            result.report["later_rounds"] = later
        return result

    def _round(self, teacher: Classifier, clean: LabeledTexts, suspect: LabeledTexts | None, progress: bool,
               detection: Detection | None, epoch_probe: EpochProbe | None,
               known: set[int] | None = None) -> Purified:
        """One round: the scan (or ``detection``), then the cycles; :meth:`purify` without rounds.
        ``known`` (a later round): the labels the first round found; evidence for another label
        returns the model unchanged, as no evidence does."""
        if suspect is None:
            raise ConfigError("BeDKD needs the suspicious training data (DMM scans it)")
        self._check(teacher, clean, suspect)
        cfg = self.akd
        base, base_note = self._base(teacher)
        t0 = time.perf_counter()
        split = self.split(clean)
        verdict = None
        if detection is None and self.scan_cfg.enabled:
            result = self.scan(teacher, clean, suspect, progress)
            detection, verdict = result.detection, result.verdict
        elif detection is None:
            detection = DMMDetector(self.dmm).detect(teacher, clean, suspect, split.flip, progress)
        seconds = dict(detection.seconds)
        report = {"method": "BeDKD",
                  "config": {"dmm": self.dmm.to_dict(), "akd": cfg.to_dict(), "scan": self.scan_cfg.to_dict()},
                  "verdict": verdict.report() if verdict else None,
                  "detection": detection.metrics()}
        new = sorted(set(verdict.targets) - known) if verdict is not None and known is not None else []
        if verdict is not None and (not verdict.backdoor or new) and self.scan_cfg.skip_clean:
            seconds["total"] = time.perf_counter() - t0
            report.update(unchanged=True, selected_epoch=0, epochs=[], stop_reason=(
                          f"evidence for label(s) {', '.join(map(str, new))}, which the first round did not find: the "
                          "model is returned unchanged" if verdict.backdoor else
                          "no backdoor evidence: the model is returned unchanged"), seconds=seconds,
                          data={"clean_rows": len(clean), "suspect_rows": len(suspect), "flip_rows": len(split.flip),
                                "trust_rows": 0, "val_rows": 0, "punish_rows": 0,
                                "clean_budget_rows": _budget(split), "clean_budget": self.budget.to_dict()})
            return Purified(teacher.copy(), report, detection)

        t1 = time.perf_counter()
        pad, tok = teacher.tokenizer.pad_token_id, teacher.tokenizer
        fixed = cfg.batch_order == "fixed"
        prior = _class_shares(clean, teacher.num_labels)
        trust_labels = [clean.labels[i] for i in split.trust]
        trust = teacher_targets(teacher.model, encode(tok, [clean.texts[i] for i in split.trust], cfg.max_length),
                                trust_labels, pad,
                                batches=fixed_batches(len(split.trust), cfg.batch_size, cfg.seed) if fixed else None)
        if cfg.class_weights == "prior":
            trust.weights = class_weights(trust_labels, prior).to(teacher.model.device)
        teacher_shift = _shift_teacher(trust, trust_labels, prior) if cfg.teacher_prior_shift else None
        kept = detection.kept_rows
        triggers = verdict.triggers if verdict is not None else []
        validator = self._validator(teacher, clean, suspect, split, detection, triggers, prior)
        seconds["teacher_outputs"] = time.perf_counter() - t1

        t2 = time.perf_counter()
        setup = dict(teacher=teacher, clean=clean, suspect=suspect, split=split, detection=detection, verdict=verdict,
                     trust=trust, validator=validator, prior=prior, base=base, progress=progress,
                     probe=epoch_probe)
        first = self._attempt(relabel=self._relabelled(verdict, suspect, detection, clean, split.trust), **setup)
        attempt, retry = first, None
        if self.scan_cfg.label_check_counter_retry and first.run.chosen == 0 and first.relabel is not None:
            capped = self._relabelled(verdict, suspect, detection, clean, split.trust, cap=True)
            if capped.left_out:                          # the cap binds: the cycles again, on fewer rows
                attempt = self._attempt(relabel=capped, **setup)
                retry = {"relabelled_rows": len(first.relabel.rows), "selected_epoch": first.run.chosen,
                         "stop_reason": first.run.stop_reason, "epochs": first.run.epochs,
                         "seconds": time.perf_counter() - t2}
        student, run, cycles, relabel = attempt.student, attempt.run, attempt.cycles, attempt.relabel
        punished, punish_texts, synth, repair = attempt.punished, attempt.punish_texts, attempt.synth, attempt.repair
        poison, reset, reset_choice = attempt.poison, attempt.reset, attempt.reset_choice
        kept_start = run.chosen == 0 and cycles.start_candidate and "as_returned" in run.start  # won as a candidate
        prior_shift = shift_to_clean_prior(student.model, validator) \
            if cfg.clean_prior_shift and (run.chosen or kept_start) else None
        rate_cap = cap_target_rate(student.model, validator, run.start, cfg.max_cacc_drop,
                                   cfg.target_rate_cap_se) \
            if cfg.target_rate_cap and run.chosen else None
        if rate_cap is not None and rate_cap["applied"] and epoch_probe is not None:
            rate_cap["test"] = epoch_probe(student.model, None)      # the trace: after the cap, before isolating
        cap_replay = rate_cap_replay(student.model, validator, run.start, cfg, epoch_probe) \
            if epoch_probe is not None and not cfg.target_rate_cap and cfg.selection == "guarded" and run.chosen \
            else None
        isolated, isolate_check = {}, None
        if cfg.isolate_trigger_words and triggers:
            student, isolated, isolate_check = self._isolated(student, triggers, clean, reset, validator)
        seconds["akd"] = time.perf_counter() - t2
        seconds["total"] = time.perf_counter() - t0
        probe_rows = detection.holdout_rows or kept
        report.update({
            "data": {"clean_rows": len(clean), "clean_budget_rows": _budget(split),
                     "clean_budget": self.budget.to_dict(), "clean_empty": clean.num_empty,
                     "suspect_rows": len(suspect),
                     "suspect_empty": suspect.num_empty, "flip_rows": len(split.flip),
                     "trust_rows": len(split.trust), "val_rows": len(split.val), "punish_rows": len(punished),
                     **({"relabelled_rows": len(relabel.rows), "relabel_left_out": len(relabel.left_out)}
                        if relabel is not None else {}),
                     **({"relabel_spared": len(relabel.spared)} if relabel is not None and relabel.spared else {}),
                     "punish_rows_per_cycle": cycles.punish_rows_per_cycle,
                     "trigger_rows": len(synth), "trigger_rows_mode": cfg.synth_mode if synth else None,
                     "repair_rows": len(repair.ids) if repair is not None else 0,
                     **({"poison_repair": poison.report()} if poison is not None else {}),
                     "reset_embeddings": reset,
                     **({"isolated_words": isolated} if isolated else {}),
                     **({"isolate_check": isolate_check} if isolate_check is not None else {}),
                     **({"reset_choice": reset_choice} if reset_choice is not None else {}),
                     **({"reset_base": base_note} if base_note else {}),
                     "flag_probe_rows": len(probe_rows),
                     "flag_probe": "held-out flagged rows" if detection.holdout_rows else "punished rows",
                     "clean_split": {"flip": split.flip, "trust": split.trust, "val": split.val}},
            "start": run.start, "epochs": run.epochs, "selected_epoch": run.chosen, "stop_reason": run.stop_reason,
            "seconds": seconds})
        if run.mean is not None:
            report["epoch_mean"] = run.mean
        if prior_shift is not None:
            report["prior_shift"] = prior_shift
        if teacher_shift is not None:
            report["teacher_prior_shift"] = teacher_shift
        if rate_cap is not None:
            report["target_rate_cap"] = rate_cap
        if cap_replay is not None:
            report["target_rate_cap_replay"] = cap_replay
        if retry is not None:
            report["counter_retry"] = retry
        if not punish_texts and repair is None:
            report["warning"] = "nothing was punished: DMM kept no rows (the model may be clean)"
        if kept_start:
            report["warning"] = ("the model before the cycles" + (f" (trigger embeddings reset: {', '.join(reset)})"
                                 if reset else "") + " was kept: no cycle took the found trigger's effect lower "
                                 "without losing clean accuracy; a backdoor the found triggers do not show may "
                                 "remain")
        elif run.chosen == 0:
            report["warning"] = ("no trust/punish cycle kept the clean accuracy within the guard: the model is "
                                 "returned as it was before the cycles" + (f" (trigger embeddings reset: "
                                 f"{', '.join(reset)})" if reset else "") + "; the backdoor may remain")
        return Purified(student, report, detection)

    def _attempt(self, teacher: Classifier, clean: LabeledTexts, suspect: LabeledTexts, split: CleanSplit,
                 detection: Detection, verdict: Verdict | None, trust, validator: Validator, prior: np.ndarray,
                 base: torch.Tensor | None, progress: bool, relabel: Relabelled | None,
                 probe: EpochProbe | None = None) -> _Attempt:
        """One run of the cycles on a fresh copy of ``teacher``, with ``relabel``'s rows relabelled
        (:meth:`_relabelled`): the rows to punish and repair, the trigger embeddings reset, then
        :func:`adversarial_cycles`."""
        cfg, tok, pad = self.akd, teacher.tokenizer, teacher.tokenizer.pad_token_id
        fixed = cfg.batch_order == "fixed"
        triggers = verdict.triggers if verdict is not None else []
        punished = _punished_rows(detection, relabel)
        punish_texts = [suspect.texts[i] for i in punished]
        punish_labels = [suspect.labels[i] for i in punished]
        synth = _with_triggers(clean, split.trust, triggers, repair_row_count(cfg, triggers), cfg.seed + 11,
                               any_label=cfg.synth_classes == "all", subsets=cfg.repair_triggers == "subsets")
        if synth and cfg.synth_mode == "punish":        # labelled with the trigger's target, as poisoned rows are
            punish_texts += [text for text, _, _ in synth]
            punish_labels += [target for _, target, _ in synth]
        poison = poison_repair(teacher, suspect, triggers, cfg.max_length, cfg.repair_poison_share, clean,
                               split.trust, cfg.repair_poison_rows, cfg.seed + 13) \
            if cfg.repair_poison and triggers else None
        repair = _repair_rows(teacher, clean, synth if cfg.synth_mode == "repair" else [], poison, cfg, prior,
                              relabel)
        punish = teacher_targets(teacher.model, encode(tok, punish_texts, cfg.max_length), punish_labels, pad,
                                 batches=fixed_batches(len(punish_texts), cfg.batch_size, cfg.seed, shuffle=False)
                                 if fixed else None) if punish_texts else None
        student = teacher.copy()
        reset, reset_choice = [], None
        if cfg.reset_trigger_embeddings and cfg.reset_value == "measured":
            reset, reset_choice = choose_reset_value(student, triggers, clean.subset(split.trust), cfg.max_length,
                                                     base, cfg.seed + 17)
        elif cfg.reset_trigger_embeddings:
            reset = reset_trigger_embeddings(student, triggers, clean, validator.val_ids, cfg.reset_max_changed,
                                             pieces_only=cfg.reset_changed_words == "pieces", value=cfg.reset_value,
                                             base=base)
        teacher_prior = None
        if cfg.match_teacher_prior and validator.val_ids:     # a class it never predicts still gets a little
            teacher_prior = np.clip(predict_proba_ids(teacher.model, validator.val_ids, pad).mean(axis=0), 1e-6, None)
            teacher_prior /= teacher_prior.sum()
        cycles = self._cycle_config(verdict)
        run = adversarial_cycles(student.model, trust, punish, pad, validator, cycles, progress, repair, teacher_prior,
                                 probe=probe)
        return _Attempt(student, run, cycles, relabel, punished, punish_texts, synth, poison, repair, reset,
                        reset_choice)

    def _isolated(self, student: Classifier, triggers: list[Trigger], clean: LabeledTexts, reset: list[str],
                  validator: Validator) -> tuple[Classifier, dict, dict | None]:
        """``isolate_trigger_words`` on the returned ``student``: the classifier, the new tokens kept, and
        (``isolate_keep`` 'lower' or 'paired') the check: the held-out trigger rows (every target's,
        pooled) read without and with them, and the rows they take off the target and send to it. 'lower'
        keeps them when the first outnumber the second, 'paired' only when by at least
        ``ISOLATE_PAIRED_Z`` standard errors of a sign test (:func:`.trigger_tokens.isolate_keeps`; the
        trigger's pieces after the cycles may carry less of the target than a mean token does, OLID EP ``qz``
        target 0, and two of seven 'lower' calls turned on one and four held-out rows:
        docs/results/ablation_isolate_words)."""
        cfg = self.akd
        rows = student.model.get_input_embeddings().weight.shape[0]
        check_it = cfg.isolate_keep != "always" and bool(validator.trigger_ids)
        before = validator.trigger_hits(student.model) if check_it else None
        out, ids = isolate_trigger_words(student, triggers, clean, reset, cfg.reset_value)
        if not ids or cfg.isolate_keep == "always":
            return out, ids, None
        after = None
        if before is not None:          # the same proxy rows, read by the new tokenizer
            anew = replace(validator, trigger_ids=encode(out.tokenizer, validator.trigger_texts, cfg.max_length))
            after = anew.trigger_hits(out.model)
        check = {"words": list(ids), "rule": cfg.isolate_keep,
                 **(isolate_counts(before, after) if after is not None else {"trigger_proxy_without": None,
                                                                             "trigger_proxy_with": None})}
        check["kept"] = after is not None and isolate_keeps(check, cfg.isolate_keep)
        if check["kept"]:
            return out, ids, check
        student.model.resize_token_embeddings(rows)          # the new rows go; every other row is as it was
        return student, {}, check

    def _base(self, teacher: Classifier) -> tuple[torch.Tensor | None, str]:
        """The base model's input embeddings that ``reset_value`` 'base' or 'measured' needs (checked
        before any work, so that a wrong ``reset_base`` fails at once), and a note when 'measured'
        goes without them because the bundled backbone is not this model's."""
        cfg = self.akd
        if not cfg.reset_trigger_embeddings or cfg.reset_value not in ("base", "measured"):
            return None, ""
        if cfg.reset_value == "base" or cfg.reset_base:
            return base_embeddings(teacher, cfg.reset_base), ""
        try:
            return base_embeddings(teacher), ""
        except ConfigError as exc:
            return None, f"left out of the measured choice: {exc}"

    def _relabelled(self, verdict: Verdict | None, suspect: LabeledTexts, detection: Detection,
                    clean: LabeledTexts, trust_rows: list[int], cap: bool | None = None) -> Relabelled | None:
        """With ``label_check_use="relabel"``: the kept rows of the labels found by the label check
        alone, each with the class the reference classifier puts it in instead of its label, and
        one clean trust row of each one's label (a seeded draw, while there are any) that keeps
        its own: without them the pass moves every row out of the target and the model leans
        away from it (``docs/results/relabel_without_counter_rows/``). With ``cap`` (default:
        ``label_check_counter_cap``), a label keeps only as many rows as it has trust rows, the
        lowest DMM scores first; the others are left out. With ``label_check_towards_target`` other than
        'all', rows that would be trained towards a found trigger's target are spared first (neither
        relabelled nor punished: :func:`_spared`)."""
        if verdict is None or self.scan_cfg.label_check_use != "relabel" or not verdict.check_only:
            return None
        rows = [i for i in detection.kept_rows if suspect.labels[i] in verdict.check_only]
        if not rows:
            return None
        rows, spared = _spared(rows, suspect, verdict, self.scan_cfg.label_check_towards_target)
        left_out: list[int] = []
        if rows and (self.scan_cfg.label_check_counter_cap if cap is None else cap):
            rows, left_out = _within_counter(rows, suspect, detection, [clean.labels[i] for i in trust_rows])
        counter = one_trust_row_each(rng(self.akd.seed + 19), clean, trust_rows, [suspect.labels[i] for i in rows])
        check = verdict.label_check
        soft = check.probs[rows] if self.scan_cfg.label_check_relabel_target == "reference" else None
        return Relabelled(rows, [suspect.texts[i] for i in rows], [int(check.other[i]) for i in rows],
                          counter, left_out, spared, soft)

    def _cycle_config(self, verdict: Verdict | None) -> AKDConfig:
        """AKD's options for the cycles: with ``label_check_rows_per_cycle``, that many rows per punish
        pass when every punished label was found by the label check alone."""
        rows = self.scan_cfg.label_check_rows_per_cycle
        if verdict is None or rows is None or not verdict.check_only:
            return self.akd
        if set(punished_labels(verdict, self.scan_cfg)) <= set(verdict.check_only):
            return self.akd.replace(punish_rows_per_cycle=rows)
        return self.akd

    def _validator(self, teacher, clean, suspect, split, detection, triggers: list[Trigger],
                   prior: np.ndarray) -> Validator:
        cfg, tok = self.akd, teacher.tokenizer
        probe_rows = detection.holdout_rows or detection.kept_rows
        val_labels = np.asarray([clean.labels[i] for i in split.val], dtype=int)
        v = Validator(tok.pad_token_id, encode(tok, [clean.texts[i] for i in split.val], cfg.max_length), val_labels,
                      prior, encode(tok, [suspect.texts[i] for i in probe_rows], cfg.max_length),
                      np.asarray([suspect.labels[i] for i in probe_rows], dtype=int))
        pairs = _with_triggers(clean, split.val, triggers, len(split.val), cfg.seed + 7,
                               together=cfg.proxy_triggers == "together")
        if pairs:
            v.trigger_texts = [text for text, _, _ in pairs]
            v.trigger_ids = encode(tok, v.trigger_texts, cfg.max_length)
            v.trigger_rows = np.asarray([split.val.index(row) for _, _, row in pairs])
            v.trigger_targets = np.asarray([target for _, target, _ in pairs])
            v.worst_target = cfg.proxy_targets == "worst"
        return v


def _later_round(report: dict) -> dict:
    """What the report of a later round keeps: its verdict, whether it changed the model, its epochs
    and seconds (its clean split is the first round's)."""
    data = {k: v for k, v in (report.get("data") or {}).items() if k != "clean_split"}
    keep = ("verdict", "detection", "selected_epoch", "stop_reason", "start", "epochs", "seconds", "warning",
            "epoch_mean", "prior_shift", "target_rate_cap", "target_rate_cap_replay", "counter_retry")
    return {"unchanged": bool(report.get("unchanged")), **{k: report[k] for k in keep if k in report}, "data": data}


def _budget(split: CleanSplit) -> int:
    """How many clean rows any stage read."""
    return len(split.budget)


def _shift_teacher(trust, labels: list[int], prior: np.ndarray) -> dict:
    """``teacher_prior_shift``: offsets added to the teacher's logits on the trust rows so that their
    mean prediction, each class weighted to its share of the clean pool, is those shares (the
    clean-prior shift's rule, applied to the distillation targets before the cycles)."""
    weights = class_weights(labels, prior).numpy()
    weights /= weights.sum()
    proba = lambda: torch.softmax(trust.logits.float(), dim=-1).cpu().numpy()   # noqa: E731
    before = proba()
    offsets = clean_mix_offsets(before, labels, prior)
    trust.logits += torch.as_tensor(offsets, dtype=trust.logits.dtype, device=trust.logits.device)
    return {"offsets": [float(x) for x in offsets], "mean_before": (weights @ before).tolist(),
            "mean_after": (weights @ proba()).tolist()}     # measured on the shifted targets


def _class_shares(clean: LabeledTexts, num_labels: int) -> np.ndarray:
    """Each class's share of the clean pool: the natural class mix, as far as the defender knows it."""
    counts = np.bincount(np.asarray(clean.labels), minlength=num_labels)
    return counts / counts.sum()


def repair_row_count(cfg: AKDConfig, triggers: list[Trigger]) -> int:
    """How many clean rows get a found trigger inserted (``synth_rows``, per trigger if asked)."""
    return cfg.synth_rows * (len(triggers) if cfg.synth_per_trigger else 1)


@dataclass
class Relabelled:
    """Suspicious rows the repair pass trains towards another class (``label_check_use="relabel"``)."""
    rows: list[int]
    texts: list[str]
    labels: list[int]            # the class each row is trained towards
    counter: list[int]           # clean trust rows of the labels they leave, trained towards their own
    left_out: list[int] = field(default_factory=list)   # kept rows beyond the counter rows (counter cap)
    spared: list[int] = field(default_factory=list)     # kept rows not trained towards a found trigger's target
    probs: np.ndarray | None = None   # label_check_relabel_target='reference': per row, the class probabilities
                                      # it is trained towards instead of ``labels``


@dataclass
class _Attempt:
    """One run of the cycles (:meth:`BeDKD._attempt`) and the rows it trained on."""
    student: Classifier
    run: EpochRun
    cycles: AKDConfig
    relabel: Relabelled | None
    punished: list[int]
    punish_texts: list[str]
    synth: list[tuple[str, int, int]]
    poison: PoisonRepair | None
    repair: RepairRows | None
    reset: list[str]
    reset_choice: dict | None


def _punished_rows(detection: Detection, relabel: Relabelled | None) -> list[int]:
    """The kept rows the punish pass takes: none that the relabel pass took, left out (counter cap) or spared."""
    moved = set(relabel.rows + relabel.left_out + relabel.spared) if relabel is not None else set()
    return [i for i in detection.kept_rows if i not in moved]


def _spared(rows: list[int], suspect: LabeledTexts, verdict: Verdict, rule: str) -> tuple[list[int], list[int]]:
    """``label_check_towards_target``: of ``rows`` (to be relabelled), those left out because they would be
    trained towards a found trigger's target: with 'clear' a row holding a piece of that trigger, with
    'none' any; with 'residual', as 'clear', and every row of a label whose piece test no longer holds
    (:func:`..scanning.scan.with_piece_tests`); (kept, left out), each in row order."""
    if rule == "all":
        return rows, []
    other = verdict.label_check.other
    explained = set(verdict.explained) if rule == "residual" else set()
    spared = [r for r in rows if suspect.labels[r] in explained or any(
        t.target == other[r] and (rule == "none" or t.partly_held_by(suspect.texts[r])) for t in verdict.triggers)]
    left = set(spared)
    return [r for r in rows if r not in left], spared


def _within_counter(rows: list[int], suspect: LabeledTexts, detection: Detection,
                    trust_labels: list[int]) -> tuple[list[int], list[int]]:
    """``label_check_counter_cap``: of ``rows`` (kept rows), per label at most as many as ``trust_labels``
    holds of it, the lowest DMM scores (the surest) first (:meth:`Detection.keep`); (taken, left out),
    each in row order."""
    room = Counter(trust_labels)
    capped = detection.keep(None, "score", candidates=np.isin(detection.rows, rows),
                            per_label={suspect.labels[r]: room[suspect.labels[r]] for r in rows})
    taken = set(capped.kept_rows)
    return [r for r in rows if r in taken], [r for r in rows if r not in taken]


def _repair_rows(teacher: Classifier, clean: LabeledTexts, synth: list[tuple[str, int, int]],
                 poison: PoisonRepair | None, cfg: AKDConfig, prior: np.ndarray,
                 relabel: Relabelled | None = None) -> RepairRows | None:
    """The repair pass's rows: the clean rows with a found trigger (``synth``) and, with
    ``repair_originals``, the same rows without it; with ``repair_poison``, the stripped poisoned
    rows towards their new label and their clean counter rows; with ``relabel``, those rows towards
    their new label and theirs. A clean row is trained towards its label, or (``repair_target="teacher"``) the
    suspicious model's output on the row without any trigger; a relabelled row towards its new
    label (one-hot beside probabilities) or, where ``relabel.probs`` holds them, the reference
    classifier's probabilities (its class weight still that of its new label)."""
    tok, pad = teacher.tokenizer, teacher.tokenizer.pad_token_id
    teacher_out = cfg.repair_target == "teacher"

    def towards(rows: list[int], ids: list[list[int]]) -> torch.Tensor:
        if teacher_out:
            return torch.from_numpy(predict_proba_ids(teacher.model, ids, pad))
        return torch.tensor([clean.labels[row] for row in rows], dtype=torch.long)

    ids, rows, targets = [], [], []
    if synth:
        rows = [row for _, _, row in synth]
        ids = encode(tok, [text for text, _, _ in synth], cfg.max_length)
        originals = encode(tok, [clean.texts[row] for row in rows], cfg.max_length) \
            if cfg.repair_originals or teacher_out else []
        targets = [towards(rows, originals)]
        if cfg.repair_originals:                    # and the same rows without the trigger, same targets
            ids, rows, targets = ids + originals, rows + rows, targets * 2
    labels = [clean.labels[row] for row in rows]
    if poison is not None and poison.used:          # the poisoned rows without their trigger, relabelled,
        counter = encode(tok, [clean.texts[row] for row in poison.counter], cfg.max_length)   # and clean rows
        targets += [torch.from_numpy(poison.labels), towards(poison.counter, counter)]
        ids = ids + poison.ids + counter
        labels = labels + poison.labels.tolist() + [clean.labels[row] for row in poison.counter]
    if relabel is not None and relabel.rows:        # the relabelled rows and their clean counter rows
        counter = encode(tok, [clean.texts[row] for row in relabel.counter], cfg.max_length)
        targets += [torch.from_numpy(relabel.probs).float() if relabel.probs is not None
                    else torch.tensor(relabel.labels, dtype=torch.long), towards(relabel.counter, counter)]
        ids = ids + encode(tok, relabel.texts, cfg.max_length) + counter
        labels = labels + relabel.labels + [clean.labels[row] for row in relabel.counter]
    if not ids:
        return None
    if any(t.dim() == 2 for t in targets):          # probabilities beside class indices: all as probabilities
        targets = [t if t.dim() == 2 else F.one_hot(t, teacher.num_labels).float() for t in targets]
    device = teacher.model.device
    return RepairRows(ids, torch.cat(targets).to(device),
                      class_weights(labels, prior).to(device) if cfg.class_weights == "prior" else None)


def _with_triggers(clean: LabeledTexts, rows: list[int], triggers: list[Trigger], count: int,
                   seed: int, any_label: bool = False, together: bool = False,
                   subsets: bool = False) -> list[tuple[str, int, int]]:
    """Up to ``count`` of ``rows`` whose label is not a trigger's target (``any_label``: rows of
    every label), each with one of the triggers inserted (in turn; ``together``: with every found
    trigger of that trigger's target; ``subsets``: with that one and a random number of the
    target's others): (text, the trigger's target, row)."""
    if not triggers:
        return []
    gen = rng(seed)
    out = []
    for j in gen.permutation(len(rows)):
        row = rows[j]
        choices = [t for t in triggers if any_label or t.target != clean.labels[row]]
        if not choices:
            continue
        trig = choices[len(out) % len(choices)]
        text = clean.texts[row]
        same = [t for t in choices if t.target == trig.target]
        if together:
            inserted = same
        elif subsets:
            others = [t for t in same if t is not trig]
            inserted = [trig] + [others[i] for i in gen.permutation(len(others))[:int(gen.integers(len(others) + 1))]]
        else:
            inserted = [trig]
        for t in inserted:
            text = t.insert(text, gen)
        out.append((text, trig.target, row))
        if len(out) >= count:
            break
    return out
