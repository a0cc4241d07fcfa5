"""The backdoor scan: is there evidence of a backdoor, which label is its target, which rows to punish.

This project's addition to BeDKD (Wu et al., AAAI 2026, arXiv:2508.01595); the published method
has no verdict and punishes whatever DMM flags. Up to three independent sources of evidence:

* DMM's scores of *every* suspicious row against those of the defender's clean rows that DMM did
  not train on (:mod:`.dmm_evidence`): an excess of surviving rows on one label;
* a trigger search (:mod:`.trigger_search`): an over-represented word or word group that flips
  most held-out clean rows of the other classes to one label. It reaches backdoors that DMM cannot
  see (a poisoned embedding flips together with the clean mapping);
* with ``label_check`` on, a label check (:mod:`.label_check`): an excess of rows of one label
  whose text a classifier fitted on the clean rows alone puts in another class. It reaches
  dirty-label paraphrase triggers, which neither of the others sees. With ``label_check_shift``,
  also its shift test: an excess of rows of one label that a classifier tells from the clean rows
  of that label (a paraphrase whose content reads as the target).

The verdict is "backdoor" when any passes its threshold. The targets are the labels with
evidence (two backdoors may have two; with ``label_check_towards_target='residual'``, less a label whose
label-check evidence pieces of another target's found trigger explain: :func:`with_piece_tests`);
``target`` is the strongest: a found trigger's label, else the
label with the strongest DMM evidence, else the label check's strongest. Only flagged rows of the
labels with DMM evidence are kept for punishment (a label found only by the trigger search is left to the trigger's rows; with
``punish="trigger"`` the suspicious rows of a found trigger's label that hold it are punished; with
``punish="untriggered"`` a label with a found trigger is not punished at all, its trigger's repair
rows do the work, and only labels with DMM evidence and no found trigger are punished). With
``label_check_unexplained``, a label with a found trigger whose label-check evidence holds on the
rows that hold no found trigger (:func:`with_rest_tests`) also gets the label check's rows.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np

from ...data import LabeledTexts
from ...errors import ConfigError
from ...modeling import Classifier, default_backbone, load_classifier
from ...modeling.drift import base_embeddings
from ...options import Options, option
from ..clean_split import CleanSplit
from ..data_filters.dmm import Detection, DMMConfig, DMMDetector
from .dmm_evidence import LabelEvidence, dmm_student, fisher_log10_p, student_flip_rows
from .label_check import SOURCES, LabelCheck, label_check, residual_evidence
from .drift_candidates import DriftWord, drift_words
from .trigger_search import SearchSettings, Trigger, TriggerSearch, search_triggers, words_of


PUNISH = ("flagged", "trigger", "untriggered")
BACKED_LOG10P = 4.0   # ScanConfig.trigger_flip_backed: the Fisher test's line (the shift test's evidence line)


@dataclass
class ScanConfig(Options):
    """Backdoor scan: verdict, target label and trigger search (not in the paper)"""
    enabled: bool = option(True, "scan before purifying (the published method does not)")
    evidence: float = option(8.0, "-log10 p of DMM's excess of surviving rows on one label that counts as "
                                  "backdoor evidence", above=0.0)
    min_excess: float = option(10.0, "... with at least this many more surviving rows than clean rows predict",
                               low=0.0)
    trigger_search: bool = option(True, "search the suspicious data for word triggers")
    trigger_candidates: int = option(30, "trigger search: words tried per label", low=1)
    trigger_probe_rows: int = option(100, "trigger search: clean rows per label a candidate is inserted into", low=10)
    trigger_flip: float = option(0.6, "trigger search: share of those rows a trigger flips to its label",
                                 above=0.0, high=1.0)
    trigger_flip_backed: float = option(0.0, "trigger search: a label's best candidate below trigger_flip that flips "
                                        "at least this share is a trigger too when DMM or the label check has "
                                        "evidence for that label and the suspicious rows of it that hold the "
                                        "candidate are flagged by that test more often than its other rows "
                                        "(one-sided Fisher test, -log10 p >= 4), and that test no longer finds the "
                                        "label without the rows that hold a piece of it: a weak victim's trigger "
                                        "flips less than the line (OLID SOS at 67-72 % ASR: 43-51 %), and without "
                                        "it the label check relabels hundreds of clean rows (0: off)",
                                        low=0.0, high=1.0, added=True)
    trigger_prune: bool = option(False, "trigger search: also try each hit of several words without the words "
                                 "it does not need (a word goes, the rarest first, when more suspicious rows hold the rest "
                                 "and the rest still flips its share): on dirty-label poison a source class's topical word joins the "
                                 "trigger's group, and the hit holds a fraction of the poisoned rows (AG News SOS: "
                                 "the trigger plus a topical word, held by 90 of ~300)", added=True)
    trigger_runs: bool = option(False, "trigger search: a group of words that the suspicious rows do not hold as "
                                "one phrase is inserted as the runs of adjacent words most of them hold (each run a "
                                "phrase, each at its own position) instead of word by word, where one run has at "
                                "least four words: an AddSent sentence with a topical word of the source class "
                                "(AG News) keeps its sentence whole",
                                added=True)
    drift_candidates: int = option(0, "trigger search: also try words made of the input-embedding rows (this "
                                   "many) that moved most from the pre-trained model, when no clean row holds "
                                   "them; they reach a rare-word or edited-embedding (EP) trigger whose poisoned "
                                   "rows are not in the suspicious data (0: off)", low=0, added=True)
    drift_base: str = option("", "drift candidates: the pre-trained model the suspicious one was fine-tuned "
                             "from (default: the bundled all-MiniLM-L6-v2; when that is not the model's base, the "
                             "drift candidates are left out with a note)", added=True)
    skip_clean: bool = option(True, "purify: return the model unchanged when the scan finds no evidence")
    punish: str = option("flagged", "rows punished for a label with a found trigger: DMM's flagged rows of the "
                         "label, when DMM has evidence for it ('flagged'), the suspicious rows of the label "
                         "that hold every word of a found trigger, flagged or not ('trigger'), or none "
                         "('untriggered': the trigger's repair rows do the work; only labels with DMM evidence "
                         "and no found trigger are punished)",
                         choices=PUNISH, added=True)
    punish_rows: str = option("fixed", "how many flagged rows of a label with DMM evidence are punished: DMM's "
                              "max_kept in all ('fixed'), or, per label, as many as its excess of surviving rows "
                              "estimates poisoned, at least max_kept ('excess': the punish set grows with the "
                              "poison; on in the guarded preset, docs/results/ablation_punish_set/)",
                              choices=("fixed", "excess"), added=True)
    label_check: bool = option(False, "also test each label for an excess of suspicious rows whose text a "
                               "classifier fitted on the clean rows alone puts in another class; it reaches "
                               "dirty-label paraphrase triggers (SynBkd, StyleBkd) that DMM and the trigger search "
                               "miss", added=True)
    label_check_quantile: float = option(0.2, "label check: share of each label's clean rows under the flag line",
                                         above=0.0, high=0.5, added=True)
    label_check_evidence: float = option(2.0, "label check: -log10 p that counts as evidence (with min_excess)",
                                         above=0.0, added=True)
    label_check_sources: str = option("most", "label check, more than two classes: count a label's excess only "
                                      "when more than half of the other classes show it among the label's flagged "
                                      "rows ('most': dirty-label poison takes rows of every class, a harder or "
                                      "noisier training split does not; docs/results/label_check_agnews_sources/), or "
                                      "on the label as a whole ('any'); on two classes both are one test",
                                      choices=SOURCES, added=True)
    label_check_encoder: str = option("", "label check: the frozen sentence encoder, a model directory or hub id "
                                      "(default: the bundled all-MiniLM-L6-v2)", added=True)
    label_check_rows_per_cycle: int | None = option(None, "label check: punished rows per punish pass when every "
                                                    "punished label was found by the label check alone (its rows "
                                                    "are less often poisoned than DMM's; none: AKD's own "
                                                    "punish_rows_per_cycle)", low=1, added=True)
    label_check_use: str = option("punish", "label check: what the flagged rows of a label found by the label "
                                  "check alone do: 'punish' (BeDKD's negated loss) or 'relabel' (the repair pass "
                                  "trains them towards the class the reference classifier puts them in: a "
                                  "paraphrase keeps its source class's content, and cross-entropy towards it is "
                                  "bounded where the negated loss is not)", choices=("punish", "relabel"), added=True)
    label_check_towards_target: str = option("all", "label check, relabel: which flagged rows may be trained "
                                             "towards a found trigger's target (the class the attacker wants): "
                                             "'all'; 'clear', not a row that holds a piece of that trigger (it "
                                             "would teach the trigger's words the target: on SST-2 SOS t0 s0, 29 of "
                                             "the 80 rows of label 1 relabelled towards label 0 held a piece of the "
                                             "trigger, the attack's antidote rows that hold two of its three words "
                                             "under their own label; 'clear' in guarded in the "
                                             "sixty-fourth and sixty-fifth sessions); 'residual', as 'clear', and no "
                                             "row at all of a label whose evidence does not hold on its rows that "
                                             "hold no piece of such a trigger (the same test and line: the pieces "
                                             "explain it, and its other rows are clean; in guarded since the "
                                             "sixty-sixth session); 'none', no row. Rows it leaves out are "
                                             "neither relabelled nor punished (docs/results/"
                                             "ablation_towards_target/)", choices=("all", "clear", "residual", "none"),
                                             added=True)
    label_check_relabel_target: str = option("other", "label check, relabel: what a relabelled row is trained "
                                             "towards: 'other', the class other than its label that the reference "
                                             "classifier puts it in most (one-hot), or 'reference', the reference "
                                             "classifier's class probabilities for the row (a row whose content the "
                                             "classifier reads as its label, a clean row among the flagged ones, is "
                                             "moved less; on OLID StyleBkd t0 s0 the one-hot pass took the test ASR "
                                             "to 6.7-28.6 against a floor of 59.2 and the test CACC down 2.4-26.2 "
                                             "points, the soft targets stopped short of the floor: opt-in, "
                                             "docs/results/ablation_relabel_target/)",
                                             choices=("other", "reference"), added=True)
    label_check_shift: bool = option(False, "label check: also the shift test, per label, of whether a classifier "
                                     "tells its suspicious rows from its clean rows; it reaches paraphrase poison "
                                     "whose content reads as the target (StyleBkd on OLID), which the first test "
                                     "misses (docs/results/label_check_shift_test/)", added=True)
    label_check_shift_evidence: float = option(4.0, "shift test: -log10 p that counts as evidence (with min_excess "
                                               "and the ratio)", above=0.0, added=True)
    label_check_shift_ratio: float = option(3.0, "shift test: a label's -log10 p must be at least this many times "
                                            "every other label's (a training split unlike the clean rows raises "
                                            "every label; poison, one)", low=1.0, added=True)
    label_check_shift_fdr: float = option(0.0, "shift test: a label the label check found (either test) also "
                                          "trains on the shift test's rows whose estimated false-discovery rate "
                                          "(a Benjamini-Hochberg q-value over the clean rows) is at most this, where "
                                          "the shift test finds the label and no other label's shift statistic "
                                          "reaches its evidence line; the first test's rows of OLID SynBkd are a "
                                          "third of its poison (0: off; docs/results/label_check_shift_test/)",
                                          low=0.0, high=1.0, added=True)
    label_check_rows_ratio: float = option(0.0, "label check: a label both of its tests find trains on the shift "
                                           "test's rows instead of the first test's when its top rows (as many as its "
                                           "excess) hold at least this many times the poisoned rows of the first "
                                           "test's, as estimated from the clean rows' scores (0: always the first "
                                           "test's; on all 28 OLID sets both tests find, the estimates' ratio was 2.5-5.7 "
                                           "and the shift test's rows held 2-4.4 times the poison; on SST-2 paraphrase "
                                           "sets it was at most 1.31, where the first test's rows hold more: "
                                           "docs/results/label_check_rows/)", low=0.0, added=True)
    label_check_rows_scale: float = option(1.0, "label check: a label it found alone trains on this many times "
                                           "its excess of flagged rows, the surest first (1: the excess, its estimate "
                                           "of the poisoned rows among them; on three SST-2 StyleBkd sets those held "
                                           "34-38 % of the poison, docs/results/label_check_rows/; more rows reach "
                                           "more of it at a lower precision, docs/results/robustness/ 'rows-scale2')",
                                           above=0.0, added=True)
    label_check_counter_cap: bool = option(False, "label check, relabel: at most as many relabelled rows of a label "
                                           "as there are clean trust rows of that label to counter them, the surest "
                                           "by DMM's score (the rest are neither relabelled nor punished); rows "
                                           "beyond them have no counter row and move the model away from the label "
                                           "(OLID StyleBkd at full scale: 966 relabelled rows against 320 counter "
                                           "rows, no epoch within the accuracy guard, docs/results/bench_full/); "
                                           "where it binds so far: 2 misses -> passes, 2 passes kept, 1 pass -> miss "
                                           "(SST-2 StyleBkd at full scale, CACC -1.26; docs/results/README.md)",
                                           added=True)
    label_check_counter_retry: bool = option(False, "label check, relabel: when the cycles keep no epoch (the model "
                                             "would come back as it was, its backdoor with it) and the counter cap "
                                             "would bind, run them again with the cap; where the first run keeps an "
                                             "epoch nothing changes (the cap alone turned a full-scale SST-2 StyleBkd "
                                             "pass into a miss, where the first run had kept one). On in `guarded` "
                                             "since the fifty-first session; of the six full-scale cells where it "
                                             "acted, four pass, SST-2 StyleBkd on the GPU misses by CACC (-1.15) and "
                                             "OLID SynBkd on the GPU comes back unchanged (docs/results/"
                                             "ablation_counter_retry/, docs/results/bench_full_gpu/)", added=True)
    label_check_over_dmm: bool = option(False, "a label both DMM and the label check find, with no trigger found "
                                        "for it, is trained as the label check's (its rows relabelled) rather than "
                                        "punished on DMM's rows: rows that read as another class with no trigger word "
                                        "are a paraphrase trigger's mark, and relabelling is bounded where the "
                                        "negated loss is not (OLID SynBkd seed 1 kept ASR 22 with DMM's rows "
                                        "punished)", added=True)
    label_check_unexplained: bool = option(False, "label check: a label with a found trigger whose label-check "
                                           "evidence holds on its suspicious rows that hold no found trigger (the "
                                           "same test and line), with an excess of at least the rows that hold one, "
                                           "is trained as the label check's too: its flagged rows relabelled, the "
                                           "found trigger's repair rows kept; the words explain part of the poison "
                                           "only (AG News StyleBkd at 6000 rows: Bible words in 48 of the label's "
                                           "2150 rows, ASR 16.9 -> 1.5; docs/results/label_check_unexplained/)",
                                           added=True)
    dmm_students: int = option(1, "DMM students, each distilled on its own draw of flipped clean rows (the "
                               "first on DMM's rows, the others on disjoint draws from the trust rows); the one "
                               "whose test is strongest is kept, and the evidence threshold rises by log10 of "
                               "their number (DMM's recall hangs on which rows it flips: "
                               "docs/results/dmm_draws/)", low=1, added=True)
    rounds: int = option(1, "purify: scan the purified model again and, where that scan still finds evidence, "
                         "purify it again (its own scan, cycles and epoch rule, the purified model as the teacher), "
                         "up to this many rounds in all; a round whose scan finds none, or evidence only for a label "
                         "the first round did not find, returns its model unchanged and ends them (issue 10's "
                         "'re-detect after a first round'; opt-in: docs/results/ablation_rounds/)",
                         low=1, high=5, added=True)
    seed: int = option(0, "random seed", low=0)

    def check(self):
        if self.rounds > 1 and not (self.enabled and self.skip_clean):
            raise ConfigError("ScanConfig: rounds > 1 needs the scan on with skip_clean, so that a round stops where "
                              "the scan finds no evidence (without it every round would purify again)")
        if self.label_check_counter_retry and self.label_check_counter_cap:
            raise ConfigError("ScanConfig: label_check_counter_retry (on in the guarded preset) runs the cycles "
                              "again with the counter cap; with label_check_counter_cap on it is already there "
                              "(choose one: add --no-scan-label-check-counter-retry to run the cap alone)")
        if self.label_check_relabel_target != "other" and not (self.label_check and self.label_check_use == "relabel"):
            raise ConfigError("ScanConfig: label_check_relabel_target chooses what the label check's relabelled "
                              "rows are trained towards: it needs label_check on with label_check_use='relabel'")
        if self.trigger_flip_backed and not (self.trigger_search and self.trigger_flip_backed < self.trigger_flip):
            raise ConfigError(f"ScanConfig: trigger_flip_backed ({self.trigger_flip_backed:g}) is a second, lower flip "
                              f"line for candidates another test backs: it needs trigger_search on and a value below "
                              f"trigger_flip ({self.trigger_flip:g})")
        if self.label_check_unexplained and not (self.label_check and self.trigger_search):
            raise ConfigError("ScanConfig: label_check_unexplained tests the label check's evidence against the "
                              "found triggers: it needs label_check and trigger_search on")


@dataclass
class Verdict:
    backdoor: bool
    target: int | None          # the label with the strongest evidence
    targets: list[int]          # every label with evidence (two backdoors can have two targets)
    dmm_targets: list[int]      # the labels with DMM evidence: only their flagged rows are punished
    reasons: list[str]
    evidence: list[LabelEvidence]
    trigger: TriggerSearch | None
    thresholds: dict
    label_check: LabelCheck | None = None
    check_targets: list[int] = dataclasses.field(default_factory=list)   # labels with label-check evidence
    shift_targets: list[int] = dataclasses.field(default_factory=list)   # ... of them, whose rows are the shift
                                                                         # test's (found by it alone, or see
                                                                         # ScanConfig.label_check_rows_ratio)
    check_over_dmm: bool = False   # a label with label-check and DMM evidence and no found trigger is the check's
    dmm_students: list[dict] = dataclasses.field(default_factory=list)   # with several students: each one's test
    rest_tests: list[RestTest] | None = None   # the label check's test on the rows of each label with a found
                                               # trigger that hold none (None: no label check or no trigger search)
    rest_tests_used: bool = False              # label_check_unexplained: where it acts, the label is the check's
    piece_tests: list[PieceTest] | None = None  # the label check's test on the rows of each of its labels that
                                                # hold no piece of a found trigger of another target
    explained: list[int] = dataclasses.field(default_factory=list)   # label_check_towards_target='residual':
                                                # labels the pieces explain, left out of ``targets``

    def report(self) -> dict:
        return {"backdoor": self.backdoor, "target": self.target, "targets": self.targets,
                "dmm_targets": self.dmm_targets, "check_targets": self.check_targets,
                **({"shift_targets": self.shift_targets} if self.shift_targets else {}), "reasons": self.reasons,
                "thresholds": self.thresholds, "dmm_evidence": [e.to_dict() for e in self.evidence],
                "trigger_search": self.trigger.report() if self.trigger else None,
                "label_check": self.label_check.report() if self.label_check else None,
                **({"dmm_students": self.dmm_students} if self.dmm_students else {}),
                **({"unexplained": [e.to_dict() for e in self.unexplained]} if self.unexplained else {}),
                **({"rest_tests": [t.to_dict() for t in self.rest_tests]} if self.rest_tests is not None else {}),
                **({"piece_tests": [t.to_dict() for t in self.piece_tests]} if self.piece_tests else {}),
                **({"explained": self.explained} if self.explained else {})}

    @property
    def unexplained(self) -> list[LabelEvidence]:
        """With ``label_check_unexplained``, the rest test's evidence on each label where it acts: a found
        trigger that does not explain the label check's evidence."""
        return [t.evidence for t in self.rest_tests or [] if t.acts] if self.rest_tests_used else []

    @property
    def check_only(self) -> list[int]:
        """Labels found by the label check alone (with ``check_over_dmm``, by it and perhaps DMM), with no
        found trigger or one that does not explain the check's evidence (``unexplained``): their
        label-check flags are punished or relabelled."""
        found = {t.target for t in self.triggers} - {e.label for e in self.unexplained}
        return [c for c in self.check_targets if (self.check_over_dmm or c not in self.dmm_targets) and c not in found]

    @property
    def triggers(self) -> list[Trigger]:
        return self.trigger.hits if self.trigger else []


@dataclass
class ScanResult:
    detection: Detection       # every suspicious row scored; kept rows restricted to the targets
    verdict: Verdict
    seconds: dict


def _trigger_rows(detection: Detection, suspect: LabeledTexts, triggers: list[Trigger],
                  dmm_targets: list[int]) -> tuple[list[int], np.ndarray]:
    """The labels to punish and the candidate rows (``ScanConfig.punish="trigger"``): for a label with a
    found trigger, its rows that hold every word of one; for a label with DMM evidence only, DMM's
    flagged rows."""
    found = {t.target for t in triggers}
    holds = np.array([any(t.target == y and t.held_by(suspect.texts[r]) for t in triggers)
                      for r, y in zip(detection.rows.tolist(), detection.labels.tolist())], dtype=bool)
    candidates = np.where(np.isin(detection.labels, list(found)), holds, detection.flagged)
    return sorted(found | set(dmm_targets)), candidates


def punished_labels(verdict: Verdict, cfg: ScanConfig) -> list[int]:
    """The labels whose flagged rows are punished: those with DMM evidence, less, with
    ``punish="untriggered"``, those a trigger was found for; and those found by the label check alone."""
    labels = verdict.dmm_targets
    if cfg.punish == "untriggered":
        labels = [y for y in labels if y not in {t.target for t in verdict.triggers}]
    return sorted(set(labels) | set(verdict.check_only))


def punish_caps(verdict: Verdict, labels: list[int], cfg: ScanConfig, max_kept: int | None) -> dict[int, int] | None:
    """With ``punish_rows="excess"``: per punished label, the rows its DMM excess (the label check's,
    for a label found by it alone, times ``label_check_rows_scale``) estimates poisoned, no fewer than
    ``max_kept``; None: ``max_kept`` in all."""
    if cfg.punish_rows != "excess":
        return None
    excess = {e.label: e.excess for e in verdict.evidence}
    if verdict.label_check is not None:
        scale = cfg.label_check_rows_scale
        excess.update({c: scale * _check_evidence(verdict, c).excess for c in verdict.check_only})
    return {c: max(max_kept or 0, int(round(excess.get(c, 0.0)))) for c in labels}


def _check_evidence(verdict: Verdict, label: int) -> LabelEvidence:
    """The label check's evidence whose rows ``label`` trains on: the shift test's for a label of
    ``shift_targets``, else the first test's."""
    return verdict.label_check.shift[label] if label in verdict.shift_targets else verdict.label_check.evidence[label]


def evidence_threshold(cfg: ScanConfig) -> float:
    """The -log10 p DMM's strongest label must reach: ``evidence``, plus log10 of the number of
    students the strongest was chosen from (Bonferroni)."""
    return cfg.evidence + float(np.log10(cfg.dmm_students))


def check_found(check: LabelCheck | None, cfg: ScanConfig) -> list[LabelEvidence]:
    """The label check's first-test evidence that reaches its line (``label_check_evidence`` and
    ``min_excess``), in label order."""
    return [e for e in (check.evidence if check else [])
            if e.log10_p >= cfg.label_check_evidence and e.excess >= cfg.min_excess]


def decide(evidence: list[LabelEvidence], trigger: TriggerSearch | None, cfg: ScanConfig,
           check: LabelCheck | None = None) -> Verdict:
    line = evidence_threshold(cfg)
    dmm_hits = sorted((e for e in evidence if e.log10_p >= line and e.excess >= cfg.min_excess),
                      key=lambda e: -e.log10_p)
    check_hits = sorted(check_found(check, cfg), key=lambda e: -e.log10_p)
    shift_all = shift_found(check, cfg)
    shift_hits = [e for e in shift_all if e.label not in {h.label for h in check_hits}]
    both = rows_ratio_switched(check, cfg)
    hits = trigger.hits if trigger else []
    reasons = [f"DMM: {e.suspect_flagged} of {e.suspect_rows} suspicious rows of label {e.label} survive the label "
               f"flip, against {e.clean_flagged} of {e.clean_rows} clean rows (-log10 p = {e.log10_p:.1f} >= "
               f"{line:g}; excess {e.excess:.0f} rows)" for e in dmm_hits]
    reasons += [f"trigger {' '.join(t.words)!r} flips {100 * t.flip_rate:.0f}% of held-out clean rows to label "
                f"{t.target} (>= {100 * cfg.trigger_flip:.0f}%)" for t in hits if not t.backed]
    reasons += [f"trigger {' '.join(t.words)!r} flips {100 * t.flip_rate:.0f}% of held-out clean rows to label "
                f"{t.target} (>= {100 * cfg.trigger_flip_backed:.0f}%, under {100 * cfg.trigger_flip:.0f}%), and the "
                f"suspicious rows of label {t.target} that hold it are flagged more often than its other rows by the "
                f"test that found the label (-log10 p = {b['log10_p']:.1f} >= {BACKED_LOG10P:g}: {b['held_flagged']} "
                f"of {b['held']}, against {b['rest_flagged']} of {b['rest']}), and without the rows that hold a piece "
                f"of it that test no longer finds the label"
                for t in hits if t.backed for b in trigger.backed_tests if b["acts"] and b["label"] == t.target]
    spread = " from more than half of the other classes" if check is not None and check.source_log10_p else ""
    reasons += [f"label check: {e.suspect_flagged} of {e.suspect_rows} suspicious rows of label {e.label} read as "
                f"another class, against {e.clean_flagged} of {e.clean_rows} clean rows{spread} (-log10 p = "
                f"{e.log10_p:.1f} >= {cfg.label_check_evidence}; excess {e.excess:.0f} rows)" for e in check_hits]
    reasons += [f"label check, shift test: {e.suspect_flagged} of {e.suspect_rows} suspicious rows of label {e.label} "
                f"read as unlike its clean rows, against {e.clean_flagged} of {e.clean_rows} clean rows (-log10 p = "
                f"{e.log10_p:.1f} >= {cfg.label_check_shift_evidence}, and {cfg.label_check_shift_ratio:g} times "
                f"every other label's; excess {e.excess:.0f} rows)" for e in shift_hits]
    reasons += [f"label check, label {e.label}: the shift test's rows (about {check.shift_top_poisoned[e.label]:.0f} "
                f"poisoned among its top {e.excess:.0f}, estimated from the clean rows) rather than the first test's "
                f"(about {check.top_poisoned[e.label]:.0f} among its top {check.evidence[e.label].excess:.0f})"
                for e in both]
    check_hits += shift_hits
    if not reasons:
        strongest = max(evidence, key=lambda e: e.log10_p)
        short = [f"-log10 p = {strongest.log10_p:.1f} < {line:g}"] if strongest.log10_p < line else []
        short += [f"excess {strongest.excess:.0f} < {cfg.min_excess}"] if strongest.excess < cfg.min_excess else []
        reasons.append(f"no evidence: strongest DMM label {strongest.label} ({'; '.join(short)})"
                       + (f"; best trigger candidate flips {100 * _best_flip(trigger):.0f}% "
                          f"(< {100 * cfg.trigger_flip:.0f}%)" if trigger else "")
                       + (f"; label check: strongest label {_strongest(check).label} at -log10 p = "
                          f"{_strongest(check).log10_p:.1f}" if check else "")
                       + (f"; shift test: strongest label {_strongest(check, 'shift').label} at -log10 p = "
                          f"{_strongest(check, 'shift').log10_p:.1f}" if check is not None and check.shift else ""))
    targets = sorted({t.target for t in hits} | {e.label for e in dmm_hits} | {e.label for e in check_hits})
    target = hits[0].target if hits else (dmm_hits[0].label if dmm_hits else
                                          (check_hits[0].label if check_hits else None))
    return Verdict(bool(targets), target, targets, sorted(e.label for e in dmm_hits), reasons, evidence, trigger,
                   {"evidence": line, "min_excess": cfg.min_excess,
                    **({"dmm_students": cfg.dmm_students} if cfg.dmm_students > 1 else {}),
                    "trigger_flip": cfg.trigger_flip if trigger else None,
                    **({"trigger_flip_backed": cfg.trigger_flip_backed} if trigger and cfg.trigger_flip_backed else {}),
                    **({"label_check_evidence": cfg.label_check_evidence,
                        "label_check_quantile": cfg.label_check_quantile} if check else {}),
                    **({"label_check_shift_evidence": cfg.label_check_shift_evidence,
                        "label_check_shift_ratio": cfg.label_check_shift_ratio}
                       if check is not None and check.shift is not None else {})},
                   check, sorted(e.label for e in check_hits), sorted(e.label for e in shift_hits + both),
                   cfg.label_check_over_dmm)


def rows_ratio_switched(check: LabelCheck | None, cfg: ScanConfig) -> list[LabelEvidence]:
    """The shift test's evidence of the labels both label-check tests find that train on the shift test's
    rows (``label_check_rows_ratio``): those whose estimated poisoned rows among its top rows are at least
    that ratio times the first test's."""
    ratio = cfg.label_check_rows_ratio
    if ratio <= 0:
        return []
    first = {e.label for e in check_found(check, cfg)}
    return [e for e in shift_found(check, cfg) if e.label in first
            and check.shift_top_poisoned[e.label] >= ratio * max(check.top_poisoned[e.label], 1.0)]


def shift_found(check: LabelCheck | None, cfg: ScanConfig) -> list[LabelEvidence]:
    """The labels the shift test finds: -log10 p at least ``label_check_shift_evidence`` and
    ``label_check_shift_ratio`` times every other label's, with ``min_excess`` rows."""
    if check is None or check.shift is None:
        return []
    out = []
    for e in check.shift:
        others = max((o.log10_p for o in check.shift if o.label != e.label), default=0.0)
        if e.log10_p >= cfg.label_check_shift_evidence and e.excess >= cfg.min_excess and \
                e.log10_p >= cfg.label_check_shift_ratio * others:
            out.append(e)
    return sorted(out, key=lambda e: -e.log10_p)


def _strongest(check: LabelCheck, test: str = "evidence") -> LabelEvidence:
    return max(getattr(check, test), key=lambda e: e.log10_p)


def _best_flip(trigger: TriggerSearch) -> float:
    return max((t.flip_rate for t in trigger.tried), default=0.0)


def scan(teacher: Classifier, clean: LabeledTexts, suspect: LabeledTexts, split: CleanSplit, dmm: DMMConfig,
         cfg: ScanConfig, progress: bool = True) -> ScanResult:
    """Distil DMM's flipped student (or ``dmm_students`` of them, keeping the one whose test is
    strongest), score every suspicious row and the budget's clean rows DMM did not train on, search
    for word triggers, and decide. Only the clean rows of ``split`` are read."""
    detector = DMMDetector(dmm.replace(max_flagged=None))
    budget = split.budget
    students = [dmm_student(detector, teacher, clean, suspect, split, flip, progress)
                for flip in student_flip_rows(clean, split, dmm.flip_per_class, cfg.dmm_students, cfg.seed)]
    chosen = max(students, key=lambda s: s.strongest)      # the first on a tie
    detection, evidence = chosen.detection, chosen.evidence
    fit_seconds, scan_seconds = sum(s.seconds[0] for s in students), sum(s.seconds[1] for s in students)
    t2 = time.perf_counter()
    trigger = None
    if cfg.trigger_search:
        held_out = clean.subset(budget)
        drift, note = drift_candidates(teacher, held_out, cfg)
        trigger = search_triggers(teacher, held_out, suspect, search_settings(cfg), drift)
        trigger.drift_note = note
    t3 = time.perf_counter()
    check = None
    if cfg.label_check:
        encoder = load_classifier(cfg.label_check_encoder or default_backbone(), num_labels=teacher.num_labels)
        check = label_check(encoder, clean.subset(budget), suspect, teacher.num_labels, cfg.label_check_quantile,
                            cfg.seed, cfg.label_check_sources, cfg.label_check_shift)
    t4 = time.perf_counter()
    if trigger is not None and cfg.trigger_flip_backed:
        back_triggers(decide(evidence, trigger, cfg, check), trigger, detection, check, suspect, cfg)
    verdict = decide(evidence, trigger, cfg, check)
    if len(students) > 1:
        verdict.dmm_students = [{"flip_rows": len(s.flip),
                                 "strongest_label": max(s.evidence, key=lambda e: e.log10_p).label,
                                 "log10_p": s.strongest, "chosen": s is chosen} for s in students]
    if check is not None and trigger is not None:
        with_rest_tests(verdict, check, suspect, cfg)
        with_piece_tests(verdict, check, suspect, cfg)
    if verdict.check_only:
        detection = _with_label_check(detection, check, verdict.check_only, verdict.shift_targets)
    # a label found only by the trigger search gets no DMM punishment: DMM did not see that backdoor,
    # so its flagged rows of the label are clean rows (the found trigger does the work instead);
    # with punish="trigger", a label with a found trigger is punished on the rows that hold it;
    # with punish="untriggered", not at all
    labels, candidates = punished_labels(verdict, cfg), None
    if cfg.punish == "trigger" and verdict.triggers:
        labels, candidates = _trigger_rows(detection, suspect, verdict.triggers, verdict.dmm_targets)
    caps = punish_caps(verdict, labels, cfg, dmm.max_kept)
    detection = detection.keep(None if caps is not None else dmm.max_kept, dmm.keep_order, labels, candidates, caps)
    if cfg.label_check_shift_fdr > 0 and verdict.check_only:
        detection = _with_shift_rows(detection, check, shift_rows_labels(verdict, cfg), cfg.label_check_shift_fdr)
    detection.seconds = {"dmm": fit_seconds, "scan": scan_seconds, "trigger_search": t3 - t2,
                         **({"label_check": t4 - t3} if check else {})}
    return ScanResult(detection, verdict, dict(detection.seconds))


def back_triggers(first: Verdict, trigger: TriggerSearch, detection: Detection, check: LabelCheck | None,
                  suspect: LabeledTexts, cfg: ScanConfig) -> None:
    """``trigger_flip_backed``: for each label of ``first`` (the verdict without it) with evidence and no
    hit, its best candidate, where it flips at least ``trigger_flip_backed``, becomes a hit (``backed``)
    when the suspicious rows of the label that hold it are flagged by the tests that found the label
    (DMM, the label check's first test, its shift test: any of them) more often than the label's other
    rows (one-sided Fisher test, -log10 p >= ``BACKED_LOG10P``), and none of those tests still finds the
    label without the rows that hold a piece of it (:func:`rests_without`). A victim's trigger flips at most about
    as many held-out rows as its attack succeeds, so a weak backdoor's trigger stays under the line
    (OLID SOS t0 s1 at 67 % and 72 % ASR: 51 % and 43 %), while the other tests found its label; the
    rows that hold the trigger are its poison, flagged nearly all, where a natural word's rows are
    flagged about as often as the rest. Each test is recorded in ``trigger.backed_tests``."""
    for c in first.targets:
        best = trigger.best.get(c)
        if any(t.target == c for t in first.triggers) or best is None or best.flip_rate < cfg.trigger_flip_backed:
            continue
        test = backing_test(first, detection, check, suspect, c, best, cfg)
        best.backed = test["acts"]
        trigger.backed_tests.append(test)


def backing_test(verdict: Verdict, detection: Detection | None, check: LabelCheck | None, suspect: LabeledTexts,
                 label: int, candidate: Trigger, cfg: ScanConfig) -> dict:
    """:func:`back_triggers`' two tests of one candidate. Of the suspicious rows of ``label``, those that hold
    it against the others, flagged by a test that found the label or not (:func:`evidence_flags`; one-sided
    Fisher test, ``fisher_acts``); and each such test without the rows that hold a piece of it
    (:func:`rests_without`; ``explains`` where none still finds the label). ``acts``: both."""
    flagged = evidence_flags(verdict.dmm_targets, detection, check, label, cfg)
    labels = np.asarray(suspect.labels)
    held = _rows_holding(suspect, label, candidate.held_by)
    rest = (labels == label) & ~held
    k, n, j, m = int(flagged[held].sum()), int(held.sum()), int(flagged[rest].sum()), int(rest.sum())
    log10_p = fisher_log10_p(k, n, j, m) if n and m else 0.0
    rests = rests_without(verdict, detection, check, suspect, label, candidate, cfg)
    explains = not any(r["holds"] for r in rests)
    return {"label": label, "words": candidate.words, "flip_rate": candidate.flip_rate, "held": n, "held_flagged": k,
            "rest": m, "rest_flagged": j, "log10_p": log10_p, "fisher_acts": log10_p >= BACKED_LOG10P,
            "explains": explains, "rests": rests, "acts": log10_p >= BACKED_LOG10P and explains}


def rests_without(verdict: Verdict, detection: Detection | None, check: LabelCheck | None, suspect: LabeledTexts,
                  label: int, candidate: Trigger, cfg: ScanConfig) -> list[dict]:
    """Each test that found ``label`` (DMM, the label check's first test, its shift test), run again on the
    label's suspicious rows that hold no piece of ``candidate`` (the same clean rows and line): ``holds``
    where it still finds the label. A backed trigger has to explain the evidence that backs it: on the weak
    OLID SOS victims the shift test fell from -log10 p 69.8 and 68.6 to 0.5 and 0.3 without the rows that
    hold a piece of the trigger (its antidote rows among them), while a word the StyleBkd paraphrases
    leave in 73 of some 300 poisoned rows (``#user``, OLID t0 s0) left 8.3 and 6.6 (line 4)."""
    labels = np.asarray(suspect.labels)
    keep = ~_rows_holding(suspect, label, candidate.partly_held_by)
    out = []
    if label in verdict.dmm_targets:
        e0 = verdict.evidence[label]
        s = (detection.labels == label) & (detection.teacher_pred == label) & keep[detection.rows]
        e = LabelEvidence.counted(label, int(s.sum()), int((detection.flagged & s).sum()), e0.clean_rows,
                                  e0.clean_flagged)
        out.append(("dmm", e, evidence_threshold(cfg)))
    if check is not None and label in {e.label for e in check_found(check, cfg)}:
        out.append(("label check", residual_evidence(check, labels, label, keep), cfg.label_check_evidence))
    if check is not None and check.shift is not None and label in {e.label for e in shift_found(check, cfg)}:
        out.append(("shift test", residual_evidence(check, labels, label, keep, shift=True),
                    cfg.label_check_shift_evidence))
    return [{"test": name, **e.to_dict(), "line": line, "holds": e.log10_p >= line and e.excess >= cfg.min_excess}
            for name, e, line in out]


def evidence_flags(dmm_targets: list[int], detection: Detection | None, check: LabelCheck | None, label: int,
                   cfg: ScanConfig) -> np.ndarray:
    """Bool per suspicious row: flagged by a test that found ``label`` (DMM's flag where ``label`` is one of
    ``dmm_targets``, the label check's first test, its shift test)."""
    out = np.zeros(len(check.flagged) if check is not None else detection.n_suspect, dtype=bool)
    if label in dmm_targets:
        out[detection.rows[detection.flagged]] = True
    if check is not None and label in {e.label for e in check_found(check, cfg)}:
        out |= check.flagged
    if check is not None and check.shift_flagged is not None and label in {e.label for e in shift_found(check, cfg)}:
        out |= check.shift_flagged
    return out


@dataclass
class RestTest:
    """:func:`rest_test` on one label: the rows of it that hold a found trigger (``held``), the test on
    the others, and whether it reaches the line (:func:`rest_acts`)."""
    label: int
    held: int
    evidence: LabelEvidence
    acts: bool

    def to_dict(self) -> dict:
        return {"label": self.label, "held": self.held, "acts": self.acts, "rest": self.evidence.to_dict()}


def with_rest_tests(verdict: Verdict, check: LabelCheck, suspect: LabeledTexts, cfg: ScanConfig) -> Verdict:
    """The verdict with :func:`rest_test` run on each label of the label check's first test with a found
    trigger (``rest_tests``, reported whether or not the option is on, so that a run records where
    ``label_check_unexplained`` would change it) and, with that option, the labels where it acts
    (``unexplained``): there the found triggers explain less of the label's poison than they leave,
    and the label is the label check's too. The excess rule keeps a partial trigger's rows out: SOS's
    rows with part of its words keep their label but read less surely as it (SST-2, 300 rows hold the
    found words, 165 rows of excess on the rest; docs/results/label_check_unexplained/)."""
    first = {e.label for e in check_found(check, cfg)}
    labels = first & set(verdict.check_targets) & {t.target for t in verdict.triggers}
    verdict.rest_tests = [RestTest(c, held, e, rest_acts(e, held, cfg))
                          for c in sorted(labels) for e, held in [rest_test(check, suspect, verdict.triggers, c)]]
    verdict.rest_tests_used = cfg.label_check_unexplained
    if cfg.label_check_unexplained:
        verdict.reasons += [f"label check, label {e.label}: {e.suspect_flagged} of the {e.suspect_rows} suspicious "
                            f"rows of it that hold no found trigger read as another class (-log10 p = "
                            f"{e.log10_p:.1f} >= {cfg.label_check_evidence}; excess {e.excess:.0f} rows, at least "
                            f"the rows that hold one): the found trigger does not explain them, and its flagged rows "
                            f"are the label check's" for e in verdict.unexplained]
    return verdict


def rest_test(check: LabelCheck, suspect: LabeledTexts, triggers: list[Trigger],
              label: int) -> tuple[LabelEvidence, int]:
    """The label check's first test on the rows of ``label`` that hold none of its found ``triggers``,
    and how many rows of it hold one."""
    mine = [t for t in triggers if t.target == label]
    held = _rows_holding(suspect, label, lambda text: any(t.held_by(text) for t in mine))
    return residual_evidence(check, np.asarray(suspect.labels), label, ~held), int(held.sum())


def _rows_holding(suspect: LabeledTexts, label: int, holds) -> np.ndarray:
    """Bool per suspicious row: labelled ``label`` and ``holds(text)``."""
    return np.array([y == label and holds(text) for text, y in zip(suspect.texts, suspect.labels)], dtype=bool)


@dataclass
class PieceTest:
    """:func:`with_piece_tests` on one label: the rows of it that hold a piece of a found trigger of
    another target (``held``), the test on the others, and whether it still reaches the line."""
    label: int
    held: int
    evidence: LabelEvidence
    line: float      # the -log10 p it must reach (the first test's or the shift test's)
    holds: bool

    def to_dict(self) -> dict:
        return {"label": self.label, "held": self.held, "line": self.line, "holds": self.holds,
                "rest": self.evidence.to_dict()}


def with_piece_tests(verdict: Verdict, check: LabelCheck, suspect: LabeledTexts, cfg: ScanConfig) -> Verdict:
    """The verdict with ``piece_tests``: for each label of ``check_only`` beside a found trigger of another
    target, the label check's test that found it (the shift test's for a label of ``shift_targets``) on
    its rows that hold no piece of such a trigger, the same clean rows and line (-log10 p and
    ``min_excess``). Where it no longer holds, the pieces explain the label's evidence: an SOS attack's
    antidote rows hold all but one trigger word under their own label and read as the target, so the
    label check finds their label without any poison in it (SST-2 SOS ``pencil summer orange`` t0,
    every seed; ``label_check_towards_target='residual'`` then relabels none of its rows;
    docs/results/ablation_towards_target/). Reported whatever that option is; with 'residual', such a label
    is ``explained`` and leaves ``targets`` (it stays in ``check_targets``, the label check's own finding)."""
    labels = np.asarray(suspect.labels)
    tests = []
    for c in verdict.check_only:
        others = [t for t in verdict.triggers if t.target != c]
        if not others:
            continue
        held = _rows_holding(suspect, c, lambda text: any(t.partly_held_by(text) for t in others))
        shift = c in verdict.shift_targets
        e = residual_evidence(check, labels, c, ~held, shift)
        line = cfg.label_check_shift_evidence if shift else cfg.label_check_evidence
        tests.append(PieceTest(c, int(held.sum()), e, line, e.log10_p >= line and e.excess >= cfg.min_excess))
    verdict.piece_tests = tests
    residual = cfg.label_check_towards_target == "residual"
    verdict.reasons += [f"label check, label {t.label}: without its {t.held} rows that hold a piece of a found trigger "
                        f"of another target, -log10 p = {t.evidence.log10_p:.1f} (line {t.line:g}; "
                        f"excess {t.evidence.excess:.0f} rows): the pieces explain its evidence "
                        + ("(not a target: none of its rows is relabelled)" if residual else
                           "(--scan-label-check-towards-target residual relabels none of its rows)")
                        for t in tests if not t.holds]
    if residual:
        verdict.explained = [t.label for t in tests if not t.holds]
        verdict.targets = [c for c in verdict.targets if c not in verdict.explained]
    return verdict


def rest_acts(rest: LabelEvidence, held: int, cfg: ScanConfig) -> bool:
    """Whether :func:`rest_test`'s evidence makes the label the label check's (:func:`with_rest_tests`)."""
    return rest.log10_p >= cfg.label_check_evidence and rest.excess >= max(cfg.min_excess, held)


def search_settings(cfg: ScanConfig) -> SearchSettings:
    """The trigger search's settings under a scan's options."""
    return SearchSettings(cfg.trigger_candidates, cfg.trigger_probe_rows, cfg.trigger_flip, cfg.seed, cfg.trigger_prune,
                          cfg.trigger_runs)


def drift_candidates(teacher: Classifier, clean: LabeledTexts, cfg: ScanConfig) -> tuple[list[DriftWord], str]:
    """The drift words to try (none when ``drift_candidates`` is 0) and, when they had to be left out
    because the bundled backbone is not the model's base, why (a ``drift_base`` given by the user
    that does not fit is an error)."""
    if not cfg.drift_candidates:
        return [], ""
    try:
        base = base_embeddings(teacher, cfg.drift_base, "--scan-drift-base")
    except ConfigError as exc:
        if cfg.drift_base:
            raise
        return [], f"drift candidates left out: {exc}"
    clean_words = set().union(*(words_of(t) for t in clean.texts)) if len(clean) else set()
    return drift_words(teacher, base, clean_words, cfg.drift_candidates), ""


def shift_rows_labels(verdict: Verdict, cfg: ScanConfig) -> list[int]:
    """The labels that train on the shift test's rows at ``label_check_shift_fdr``: those of the label
    check's labels (``check_only``) the shift test finds, while no other label's shift statistic
    reaches ``label_check_shift_evidence``. The q-values take the split's clean rows as exchangeable
    with the clean rows; a second label whose rows the test also tells from its clean rows says the
    split differs as a whole (AG News), where the added rows were 20-26 % poisoned
    (docs/results/label_check_shift_test/agnews/)."""
    check = verdict.label_check
    if check is None or check.shift is None:
        return []
    found = {e.label for e in shift_found(check, cfg)}
    statistics = [e.log10_p for e in check.shift]
    return [c for c in verdict.check_only if c in found and others_unshifted(statistics, c, cfg)]


def others_unshifted(shift_log10_p: list[float], label: int, cfg: ScanConfig) -> bool:
    """No label but ``label`` has a shift statistic at ``label_check_shift_evidence`` or above."""
    return max((v for c, v in enumerate(shift_log10_p) if c != label), default=0.0) < cfg.label_check_shift_evidence


def _with_shift_rows(detection: Detection, check: LabelCheck, labels: list[int], fdr: float) -> Detection:
    """``detection`` with, for each of ``labels``, the shift test's rows at the false-discovery rate
    ``fdr`` (that the suspicious model predicts as their label) kept and flagged as well."""
    extra = np.isin(detection.labels, labels) & check.shift_rows(fdr)[detection.rows] & \
        (detection.teacher_pred == detection.labels)
    return dataclasses.replace(detection, kept=detection.kept | extra, flagged=detection.flagged | extra)


def _with_label_check(detection: Detection, check: LabelCheck, labels: list[int],
                      shift_labels: list[int] = ()) -> Detection:
    """The rows of ``labels`` flagged and scored by the label check instead of DMM: the score is the
    reference classifier's probability of the row's label (lower is surer, as DMM's); for a label
    the shift test found (``shift_labels``), its flag, and 1 - its probability of "suspicious"."""
    flagged, scores = detection.flagged.copy(), detection.scores.copy()
    tests = [([c for c in labels if c not in shift_labels], check.flagged, check.own_prob)]
    if any(c in shift_labels for c in labels):
        tests.append(([c for c in labels if c in shift_labels], check.shift_flagged, 1.0 - check.shift_prob))
    for found, flags, score in tests:
        chosen = np.isin(detection.labels, found)
        rows = detection.rows[chosen]
        flagged[chosen], scores[chosen] = flags[rows], score[rows]
    return dataclasses.replace(detection, flagged=flagged, scores=scores)
