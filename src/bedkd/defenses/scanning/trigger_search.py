"""Trigger search: words that are over-represented in the suspicious data and flip clean rows.

Not part of BeDKD as published; an addition of this project (issue "BeDKD that holds on every
attack"). DMM cannot see a backdoor that lives in the embedding of a trigger word (EP, and SOS on
some data): flipping the clean mapping flips the trigger's effect too, so teacher and student
disagree on the poisoned rows. A word-level trigger leaves two traces that do not depend on DMM:

1. **in the data**: among rows of its label, the trigger word is much more frequent in the
   suspicious rows than in the defender's clean rows (a natural word, however typical of a label,
   is about as frequent in both). Per label, a word that occurs in ``k`` suspicious and ``j`` clean
   rows of the label gets the one-sided binomial test of ``k`` out of ``k + j`` at the share of
   suspicious rows among the label's rows; words at -log10 p >= ``MIN_LOG10P`` are candidates, the
   ``candidates`` strongest per label are tried. With few clean rows this test is weak for rare
   words: a trigger in a dozen suspicious rows is not significant against ~300 clean rows.
2. **in the model**: inserted into held-out clean rows of the other classes that the model gets
   right, a trigger flips most of them to its label; a natural word rarely flips a majority
   (the rest of the text still speaks for its class).

Words that occur together in the same suspicious rows (an AddSent sentence, SOS's word
combination) are also tried together, as the phrase they form when they are contiguous, else
each at a random position. A candidate counts as a trigger when its flip rate reaches
``flip_threshold``; every such hit is reported (BadNets' several words are each a trigger).

A group also takes in words that are over-represented only *because* the poison carries them: on
dirty-label poison, a source class's topical word (``iraq`` among AG News rows labelled Sports) sits
mostly in poisoned rows, so it joins the trigger's group, and the hit is the trigger plus that word,
held by a fraction of the poisoned rows (AG News SOS: every hit was ``store friends weekend`` plus a
topical word, held by 90 of ~300 poisoned rows). With ``prune`` (opt-in), each hit of several words
is also tried smaller: a word is dropped when more suspicious rows of the label hold the rest than
hold the hit (a word every poisoned row holds, such as an AddSent sentence's, is never tried) and the
rest still reaches ``flip_threshold``; the word in the fewest rows goes first. What is left is tried
as a candidate of its own (its own seeded draw of insert positions, so every other candidate is
tried exactly as without the option); among hits of the same flip rate it comes first, so it is the
one ``found`` reports.
"""
from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import binom

from ...data import LabeledTexts
from ...modeling import Classifier
from ...modeling.inference import predict_proba
from ...seeding import rng
from .drift_candidates import DriftWord

WORD = re.compile(r"\S+")


MIN_ROWS = 5          # a candidate word occurs in at least this many suspicious rows of its label
MIN_LOG10P = 3.0      # ... and is over-represented there at -log10 p >= this (else it is not tried)
GROUP_OVERLAP = 0.5   # words are tried together when this share of one's rows hold the other
MAX_GROUP = 6         # at most this many words inserted together


@dataclass(frozen=True)
class SearchSettings:
    candidates: int = 30          # words tested per label, the most over-represented first
    probe_rows: int = 100         # held-out clean rows per label into which candidates are inserted
    flip_threshold: float = 0.6   # share of probe rows a trigger must flip to its label
    seed: int = 0
    prune: bool = False           # also try each hit of several words without the words it does not need
    runs: bool = False            # a group that is not one phrase is inserted as the runs its rows hold


@dataclass
class Trigger:
    """Words inserted together (a contiguous phrase, each at its own random position, or ``runs``:
    several phrases, each at its own position)."""
    words: list[str]
    phrase: bool
    target: int
    flip_rate: float
    rows: int                # suspicious rows holding every word
    drift: float | None = None   # a drift candidate (:mod:`.drift_candidates`): its least-moved piece's drift
    pruned_from: str | None = None   # a pruned hit (``prune``): the words of the hit it was cut from
    runs: list[str] | None = None    # ``SearchSettings.runs``: the phrases inserted (words in them joined by spaces)
    backed: bool = False             # a hit below the flip line that another test's flagged rows back
                                     # (``ScanConfig.trigger_flip_backed``, :func:`..scan.back_triggers`)

    @property
    def pieces(self) -> list[str]:
        """What :meth:`insert` puts into a text, each piece at its own random position."""
        if self.runs:
            return list(self.runs)
        return [" ".join(self.words)] if self.phrase else list(self.words)

    def insert(self, text: str, gen: np.random.Generator) -> str:
        tokens = text.split()
        for piece in self.pieces:
            pos = int(gen.integers(0, len(tokens) + 1))
            tokens = tokens[:pos] + [piece] + tokens[pos:]
        return " ".join(tokens)

    def remove(self, text: str) -> str:
        """``text`` without this trigger: a phrase's words where they stand together, else every
        occurrence of each word (whitespace-separated, any case); the rest joined by single spaces."""
        if self.runs:
            for run in self.runs:
                text = Trigger(run.split(), True, self.target, 0.0, 0).remove(text)
            return text
        tokens = text.split()
        low = [t.lower() for t in tokens]
        words = [w.lower() for w in self.words]
        if not self.phrase:
            drop = set(words)
            return " ".join(t for t, w in zip(tokens, low) if w not in drop)
        out, i = [], 0
        while i < len(tokens):
            if low[i:i + len(words)] == words:
                i += len(words)
                continue
            out.append(tokens[i])
            i += 1
        return " ".join(out)

    def held_by(self, text: str) -> bool:
        """Whether ``text`` holds every word of the trigger."""
        return set(w.lower() for w in self.words) <= words_of(text)

    def partly_held_by(self, text: str) -> bool:
        """Whether ``text`` holds one of the trigger's pieces: a word of a group inserted word by word
        (an SOS attack's antidote rows hold all but one, under their own label), or a whole phrase."""
        words = words_of(text)
        return any(words_of(piece) <= words for piece in self.pieces)

    def to_dict(self) -> dict:
        return {"words": self.words, "phrase": self.phrase, "target": self.target,
                "flip_rate": self.flip_rate, "rows": self.rows,
                **({"drift": self.drift} if self.drift is not None else {}),
                **({"pruned_from": self.pruned_from} if self.pruned_from is not None else {}),
                **({"runs": self.runs} if self.runs else {}), **({"backed": True} if self.backed else {})}


@dataclass
class TriggerSearch:
    """Every candidate tried (in order) and the threshold a trigger must reach."""
    tried: list[Trigger] = field(default_factory=list)
    threshold: float = 0.6
    drift_note: str = ""      # why drift candidates were not tried, when asked for
    backed_tests: list[dict] = field(default_factory=list)   # ``ScanConfig.trigger_flip_backed``: each test made

    @property
    def best(self) -> dict[int, Trigger]:
        """Per label, the candidate with the largest flip rate."""
        out: dict[int, Trigger] = {}
        for t in self.tried:
            if t.target not in out or t.flip_rate > out[t.target].flip_rate:
                out[t.target] = t
        return out

    @property
    def hits(self) -> list[Trigger]:
        """Every candidate that reaches the threshold or is ``backed``, strongest first (on a tie, a pruned hit
        before the others: it needs fewer words and more suspicious rows hold it)."""
        return sorted((t for t in self.tried if t.flip_rate >= self.threshold or t.backed),
                      key=lambda t: (-t.flip_rate, t.pruned_from is None))

    @property
    def found(self) -> Trigger | None:
        """The strongest candidate that reaches the threshold, if any."""
        hits = self.hits
        return hits[0] if hits else None

    def report(self) -> dict:
        found = self.found
        return {"found": found.to_dict() if found else None, "threshold": self.threshold,
                "hits": [t.to_dict() for t in self.hits],
                "best_per_label": {str(c): t.to_dict() for c, t in sorted(self.best.items())},
                "tried": [t.to_dict() for t in self.tried], **({"drift_note": self.drift_note} if self.drift_note else {}),
                **({"backed_tests": self.backed_tests} if self.backed_tests else {})}


def words_of(text: str) -> set[str]:
    return set(WORD.findall(text.lower()))


def _overrepresented(suspect: LabeledTexts, clean: LabeledTexts, num_labels: int, cfg: SearchSettings):
    """Per label: [(-log10 p, word)] best first, only words significantly more frequent among the
    suspicious rows of the label than among the clean rows of the same label; and each word's rows."""
    rows_of: dict[str, list[int]] = defaultdict(list)
    for i, text in enumerate(suspect.texts):
        for w in words_of(text):
            rows_of[w].append(i)
    clean_count = [Counter() for _ in range(num_labels)]
    for text, y in zip(clean.texts, clean.labels):
        clean_count[y].update(words_of(text))
    labels = np.asarray(suspect.labels)
    n = np.bincount(labels, minlength=num_labels)
    m = np.bincount(np.asarray(clean.labels, dtype=int), minlength=num_labels)
    ranked: dict[int, list[tuple[float, str]]] = {c: [] for c in range(num_labels)}
    for w, rows in rows_of.items():
        if len(rows) < MIN_ROWS:
            continue
        per_label = np.bincount(labels[rows], minlength=num_labels)
        for c in range(num_labels):
            k, j = int(per_label[c]), clean_count[c][w]
            if k < MIN_ROWS or m[c] == 0:
                continue
            # given k + j rows of label c holding w, how surprising that k of them are suspicious
            score = -binom.logsf(k - 1, k + j, n[c] / (n[c] + m[c])) / np.log(10)
            if score >= MIN_LOG10P:
                ranked[c].append((float(score), w))
    for c in ranked:
        ranked[c].sort(reverse=True)
        ranked[c] = ranked[c][:cfg.candidates]
    return ranked, rows_of


def candidate_words(suspect: LabeledTexts, probe: LabeledTexts, num_labels: int, cfg: SearchSettings) -> list[str]:
    """Every word a hit of :func:`search_triggers` can hold, drift words aside: the over-represented
    words of every label (a hit's words, pruned or as runs, are some of them). It reads the data alone,
    so a screen can tell which words a recorded run could have found without its model."""
    ranked, _ = _overrepresented(suspect, probe, num_labels, cfg)
    return sorted({w for words in ranked.values() for _, w in words})


def _phrase_order(words: list[str], texts: list[str]) -> list[str] | None:
    """The order in which ``words`` stand contiguously in most of ``texts``, or None."""
    seen: Counter = Counter()
    want = set(words)
    for text in texts:
        tokens = text.lower().split()
        for start in range(len(tokens) - len(words) + 1):
            span = tokens[start:start + len(words)]
            if set(span) == want:
                seen[tuple(span)] += 1
                break
    if not seen:
        return None
    order, count = seen.most_common(1)[0]
    return list(order) if count >= len(texts) / 2 else None


RUN_MIN_WORDS = 4     # ``runs``: a split is used when one of its runs is this long (a planted sentence; the
                      # natural phrases met in groups, `gold medal`, `united states`, are two or three words)


def _phrase_runs(words: list[str], texts: list[str]) -> list[list[str]] | None:
    """The runs of adjacent ``words`` (each in the order it stands) that most of ``texts`` hold, when
    one run has at least ``RUN_MIN_WORDS`` words and at least half of the texts hold that split; else None."""
    seen = Counter(split for split in (_split_of(text, words) for text in texts) if split is not None)
    if not seen:
        return None
    split, count = seen.most_common(1)[0]
    if count < len(texts) / 2 or max(len(r) for r in split) < RUN_MIN_WORDS:
        return None
    return [list(r) for r in split]


def _split_of(text: str, words: list[str]) -> tuple[tuple[str, ...], ...] | None:
    """The runs of adjacent ``words`` in ``text`` (sorted, so that the same split reads the same), or None
    where a word is followed by two different words of the group, two by the same one, or the
    adjacencies form a cycle."""
    want, after = set(words), {}
    tokens = text.lower().split()
    for a, b in zip(tokens, tokens[1:]):
        if a in want and b in want and a != b and after.setdefault(a, b) != b:
            return None
    followers = set(after.values())
    if len(followers) < len(after):
        return None
    runs = []
    for w in (w for w in words if w not in followers):
        run = [w]
        while run[-1] in after and len(run) <= len(words):
            run.append(after[run[-1]])
        runs.append(tuple(run))
    return tuple(sorted(runs)) if sum(map(len, runs)) == len(words) else None      # a cycle leaves words out


def search_triggers(teacher: Classifier, probe: LabeledTexts, suspect: LabeledTexts,
                    cfg: SearchSettings, drift: Sequence[DriftWord] = ()) -> TriggerSearch:
    """Search the suspicious data for word triggers of ``teacher``. ``probe``: the defender's clean
    rows (the teacher never trained on them): word counts are compared with theirs, and candidates
    are inserted into them. ``drift``: words from the model's own embeddings
    (:func:`.drift_candidates.drift_words`), tried after the data's, towards every label."""
    k = teacher.num_labels
    ranked, rows_of = _overrepresented(suspect, probe, k, cfg)
    gen = rng(cfg.seed)
    probe_labels = np.asarray(probe.labels)
    right = predict_proba(teacher, probe.texts).argmax(axis=1) == probe_labels
    prune_gen = rng(cfg.seed + 202)
    tried: list[Trigger] = []
    for c, words in ranked.items():
        pool = np.flatnonzero(right & (probe_labels != c))
        if not len(pool) or not words:
            continue
        rows = gen.permutation(pool)[:cfg.probe_rows]
        base = [probe.texts[i] for i in rows]
        in_c = {w: set(r for r in rows_of[w] if suspect.labels[r] == c) for _, w in words}

        def attempt(w: list[str], draw: np.random.Generator) -> Trigger:
            texts_with_all = [suspect.texts[r] for r in set.intersection(*(in_c[x] for x in w))]
            order = _phrase_order(w, texts_with_all) if len(w) > 1 else w
            runs = _phrase_runs(w, texts_with_all) if cfg.runs and order is None else None
            if runs is not None:
                trig = Trigger([x for r in runs for x in r], False, c, 0.0, len(texts_with_all),
                               runs=[" ".join(r) for r in runs])
            else:
                trig = Trigger(order or w, order is not None, c, 0.0, len(texts_with_all))
            inserted = [trig.insert(t, draw) for t in base]
            trig.flip_rate = float((predict_proba(teacher, inserted).argmax(axis=1) == c).mean())
            return trig

        groups = _candidate_sets(words, in_c)
        for w in groups:
            tried.append(attempt(w, gen))
        if cfg.prune:
            seen, measured = {frozenset(w) for w in groups}, {}

            def attempt_once(w: list[str]) -> Trigger:     # several hits prune to the same words: measure them once
                if frozenset(w) not in measured:
                    measured[frozenset(w)] = attempt(w, prune_gen)
                return measured[frozenset(w)]

            for trig in [t for t in tried if t.target == c and len(t.words) > 1 and t.flip_rate >= cfg.flip_threshold]:
                smaller = _pruned(trig.words, in_c, attempt_once, cfg.flip_threshold)
                if smaller is not None and frozenset(smaller.words) not in seen:
                    seen.add(frozenset(smaller.words))
                    smaller.pruned_from = " ".join(trig.words)
                    tried.append(smaller)
    tried += _try_drift_words(teacher, probe, right, drift, rows_of, cfg)
    return TriggerSearch(tried, cfg.flip_threshold)


def _pruned(words: list[str], rows_in_c: dict[str, set[int]], attempt, threshold: float) -> Trigger | None:
    """``words`` without each word whose drop widens the rows that hold them and keeps the flip rate at
    ``threshold`` or above, the word in the fewest rows of the label tried first; the last such
    attempt, or None when no word goes."""
    def held(ws):
        return len(set.intersection(*(rows_in_c[x] for x in ws)))

    keep, last = list(words), None
    for word in sorted(words, key=lambda x: len(rows_in_c[x])):      # stable: a tie keeps the hit's order
        rest = [x for x in keep if x != word]
        if not rest or held(rest) <= held(keep):
            continue
        trig = attempt(rest)
        if trig.flip_rate >= threshold:
            keep, last = rest, trig
    return last


SCREEN_ROWS = 20      # a drift word is inserted into this many rows first; into all probe rows when it flips
                      # at least half the threshold there


def _try_drift_words(teacher: Classifier, probe: LabeledTexts, right: np.ndarray, words: Sequence[DriftWord],
                     rows_of: dict[str, list[int]], cfg: SearchSettings) -> list[Trigger]:
    """Each drift word towards each label, on held-out clean rows of the other classes the teacher gets
    right (its own seeded draw, so the data's candidates keep theirs)."""
    gen, labels, out = rng(cfg.seed + 101), np.asarray(probe.labels), []
    held = {w.word: len(set.intersection(*(set(rows_of.get(x.lower(), [])) for x in w.word.split()))) for w in words}
    for c in range(teacher.num_labels):
        pool = np.flatnonzero(right & (labels != c))
        if not len(pool):
            continue
        base = [probe.texts[i] for i in gen.permutation(pool)[:cfg.probe_rows]]
        start_flip: dict[str, float] = {}

        def flips(trig: Trigger, texts: list[str]) -> float:
            inserted = [trig.insert(t, gen) for t in texts]
            return float((predict_proba(teacher, inserted).argmax(axis=1) == c).mean())

        for w in words:
            trig = Trigger(w.word.split(), not w.together, c, 0.0, held[w.word], w.drift)
            for texts in (base[:SCREEN_ROWS], base):
                trig.flip_rate = flips(trig, texts)
                if trig.flip_rate < cfg.flip_threshold / 2 or len(texts) == len(base):
                    break
            if w.clean_start and trig.flip_rate >= cfg.flip_threshold:   # a natural word flips whatever follows it
                if w.clean_start not in start_flip:
                    start_flip[w.clean_start] = flips(Trigger([w.clean_start], True, c, 0.0, 0), base)
                if trig.flip_rate - start_flip[w.clean_start] < cfg.flip_threshold / 2:
                    continue
            out.append(trig)
    return out


def _candidate_sets(words: list[tuple[float, str]], rows_in_c: dict[str, set[int]]) -> list[list[str]]:
    """Each candidate word alone, and with the candidates that share its rows (at most MAX_GROUP)."""
    names = [w for _, w in words]
    sets, seen = [], set()
    for w in names:
        sets.append([w])
        group = [w] + [v for v in names if v != w and len(rows_in_c[w] & rows_in_c[v])
                       >= GROUP_OVERLAP * min(len(rows_in_c[w]), len(rows_in_c[v]))]
        key = frozenset(group[:MAX_GROUP])
        if len(key) > 1 and key not in seen:
            seen.add(key)
            sets.append(group[:MAX_GROUP])
    return sets
