"""Benchmark outputs: results.csv, results.json, results.md and results.png, all from the same rows."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import TypedDict

from ..outputs import atomic_write_bytes, atomic_write_text
from .config import CLEAN

class Row(TypedDict, total=False):
    """One row of a bench: a (dataset, attack, defense) cell. Every rate is in percent: CACC, ASR,
    floors, FRR and the detection precision / recall (as ``Detection.metrics`` gives them). A row
    that did not finish has only the keys up to ``status``. The CSV columns are these fields, in
    this order."""
    dataset: str
    attack: str
    defense: str
    status: str                      # "ok", "skipped: ...", "failed: ...", "not run ..."
    victim_cacc: float
    victim_asr: float | None         # None on the clean row
    floor_asr: float | None          # the clean model's ASR on the same triggered rows
    cacc: float
    asr: float | None
    second_victim_asr: float         # only with two backdoors (attack "multi")
    second_floor_asr: float
    second_asr: float
    untriggered_asr: float | None    # the same triggered rows' clean originals that go to the target anyway
    second_untriggered_asr: float | None
    floor_untriggered_asr: float | None          # the clean model's own untriggered ASR on those rows
    second_floor_untriggered_asr: float | None
    floor_models: int                # with --floor-seeds: the clean models the floor was measured on
    floor_asr_min: float             # ... their lowest and highest floor on the row's triggered rows
    floor_asr_max: float
    second_floor_asr_min: float
    second_floor_asr_max: float
    cacc_change: float
    asr_reduction: float | None
    frr: float | None                # input filters: clean inputs rejected
    detection_rate: float | None     # input filters: triggered inputs rejected
    flagged: int | None
    kept: int | None
    flagged_precision: float | None
    flagged_recall: float | None
    flagged_recall_all: float | None
    kept_precision: float | None
    clean_rows_used: int
    train_rows: int
    poisoned_rows: int
    test_rows: int
    poison_test_rows: int
    clean_pool_rows: int
    clean_model_cacc: float
    victim_train_seconds: float
    defense_seconds: float
    dmm_seconds: float | None
    scan_seconds: float | None
    akd_seconds: float | None
    selected_epoch: int | None
    backdoor_found: bool | None
    target_found: int | None
    trigger_found: str | None
    unexplained_acts: bool | None   # whether --scan-label-check-unexplained's rest test reaches its line on
                                    # this run (it changes the run only with that option); None: not tested
    victim_key: str
    code_version: str


COLUMNS = list(Row.__annotations__)

# Files record the unit of their detection metrics (``"units"`` in a cell file, in results.json's
# meta); files written before there was one hold those metrics as fractions.
UNITS = "percent"
DETECTION_FIELDS = ("flagged_precision", "flagged_recall", "flagged_recall_all", "kept_precision")


def in_percent(record: dict, units: str | None) -> dict:
    """``record`` (a row, or a defense's detection metrics) with its detection metrics in percent,
    given the ``units`` its file recorded (None: an earlier file, fractions)."""
    if units == UNITS:
        return record
    return {**record, **{k: 100.0 * record[k] for k in DETECTION_FIELDS if record.get(k) is not None}}


OVER_FLOOR = 10.0   # ASR points above the clean-model floor that count as "backdoor left"
# The bar a defended cell must meet (issue 10): ASR at most max(5, floor + 2) with CACC down at most
# 1 point on an attack cell; CACC within 0.5 points on a model without a backdoor.
BAR_ASR, BAR_OVER_FLOOR, BAR_CACC_DROP, BAR_CLEAN_CACC = 5.0, 2.0, 1.0, 0.5


def meets_bar(row: Row) -> bool | None:
    """Whether a finished defended row meets the bar above; None for the victim's own row or no result."""
    if row.get("status") != "ok" or row["defense"] == "none" or row.get("cacc_change") is None:
        return None
    if row["attack"] == CLEAN:
        return abs(row["cacc_change"]) <= BAR_CLEAN_CACC
    if row.get("asr") is None:
        return None
    if row.get("second_asr") is not None and \
            row["second_asr"] > max(BAR_ASR, (row.get("second_floor_asr") or 0.0) + BAR_OVER_FLOOR):
        return False            # two backdoors: both must go
    limit = max(BAR_ASR, (row.get("floor_asr") or 0.0) + BAR_OVER_FLOOR)
    return row["asr"] <= limit and row["cacc_change"] >= -BAR_CACC_DROP


def bar_over_floors(row: Row) -> str | None:
    """With several clean models' floors (``--floor-seeds``): "yes" when the row meets the bar with
    every one of them, "no" with none, "depends" when the verdict turns on which clean model gives
    the floor (the bar's limit grows with the floor); None without them."""
    if row.get("floor_asr_min") is None:
        return None
    low, high = ({**row, "floor_asr": row[f"floor_asr_{end}"],
                  "second_floor_asr": row.get(f"second_floor_asr_{end}")} for end in ("min", "max"))
    low_met, high_met = meets_bar(low), meets_bar(high)
    if low_met is None:
        return None
    return "yes" if low_met else ("depends" if high_met else "no")


def write_results(rows: list[Row], meta: dict, out_dir) -> list[Path]:
    """Each file written atomically (a full disk or an unwritable folder raises WriteError)."""
    out = Path(out_dir)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "results.csv", buf.getvalue())
    atomic_write_text(out / "results.json", json.dumps({"meta": {**meta, "units": UNITS}, "summary": summarize(rows),
                                                        "rows": rows}, indent=2))
    atomic_write_text(out / "results.md", markdown(rows, meta))
    chart(rows, out / "results.png")
    return [out / f"results.{ext}" for ext in ("csv", "json", "md", "png")]


def _ok(rows, attack_rows: bool = True):
    return [r for r in rows if r.get("status") == "ok" and (r["attack"] != CLEAN) == attack_rows]


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def summarize(rows: list[Row]) -> dict:
    """Per defense: mean ASR reduction and CACC change over attack cells, cells left above the floor,
    and the no-attack rows."""
    out = {}
    for defense in dict.fromkeys(r["defense"] for r in rows):
        cells = [r for r in _ok(rows) if r["defense"] == defense]
        clean = [r for r in _ok(rows, attack_rows=False) if r["defense"] == defense]
        out[defense] = {
            "attack_cells": len(cells),
            "mean_victim_asr": _mean(r["victim_asr"] for r in cells),
            "mean_asr": _mean(r["asr"] for r in cells),
            "mean_asr_reduction": _mean(r["asr_reduction"] for r in cells),
            "mean_relative_asr_reduction": _mean(100 * r["asr_reduction"] / r["victim_asr"]
                                                 for r in cells if r["victim_asr"]),
            "mean_cacc_change": _mean(r["cacc_change"] for r in cells),
            "above_floor": [f"{r['dataset']}/{r['attack']}" for r in cells
                            if r["asr"] is not None and r["floor_asr"] is not None
                            and r["asr"] > r["floor_asr"] + OVER_FLOOR],
            "clean_rows": [{"dataset": r["dataset"], "flagged": r["flagged"], "cacc_change": r["cacc_change"]}
                           for r in clean],
            "bar_met": [f"{r['dataset']}/{r['attack']}" for r in cells + clean if meets_bar(r)],
            "bar_missed": [f"{r['dataset']}/{r['attack']}" for r in cells + clean if meets_bar(r) is False],
            "bar_depends_on_floor": [f"{r['dataset']}/{r['attack']}" for r in cells
                                     if bar_over_floors(r) == "depends"],
        }
    return out


def _f(v, digits=2, sign=False):
    if v is None:
        return "–"
    return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def _pct(v):
    return "–" if v is None else f"{v:.0f}"


def markdown(rows: list[Row], meta: dict) -> str:
    lines = ["# bedkd bench", "",
             f"Generated by `{meta.get('command', '?')}` on {meta.get('date', '?')}.", "",
             f"Machine: {meta.get('machine', {})}.", "",
             f"Code version: {meta.get('code_version', '?')}; the data files read and their SHA-256 are in "
             "results.json (`meta.provenance`). Each row names the victim it was computed on (`victim_key`) "
             "and its code version.", "",
             *[f"Rows finished by an earlier run of the same setup were reused: `{e.get('command')}` on "
               f"{e.get('date')}, code version {e.get('code_version') or 'unknown'}, machine {e.get('machine')}."
               for e in meta.get("earlier_runs", [])],
             "",
             f"Scale and setup: {json.dumps(meta.get('setup', {}), sort_keys=True)}.", "",
             "CACC and ASR in %. *floor* is the ASR of a model trained on the same rows without poison, on "
             "the same triggered test set: what a perfect defense can reach; *untriggered* (where measured) the "
             "share of the same rows without the trigger that the model sends to the target anyway (an ASR "
             "above the floor with an untriggered ASR as high is a lean to the target, not a backdoor), and *clean "
             "untriggered* the clean model's own (above its floor, inserting the trigger moves even the clean model "
             "away from the target: a model that ignores the trigger scores about this, not the floor). *det P/R* "
             "is the precision / "
             "recall in % (over the scanned rows) of the rows the defense flagged as poisoned. *verdict* (BeDKD "
             "with a scan): whether it found backdoor evidence, and the inferred target label. *bar*: "
             f"ASR ≤ max({BAR_ASR:g}, floor + {BAR_OVER_FLOOR:g}) and ΔCACC ≥ −{BAR_CACC_DROP:g} on an attack "
             f"row, |ΔCACC| ≤ {BAR_CLEAN_CACC:g} on a `clean` row. *FRR / det* (input "
             "filters): % of clean inputs rejected / % of triggered inputs rejected; a rejected clean input "
             "counts as a CACC error. The `clean` rows show what a defense does to a model that has no "
             "backdoor. With two backdoors (`multi`), ASR and floor read first / second, and the bar needs "
             "both.", *_floors_legend(rows), ""]
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        these = [r for r in rows if r["dataset"] == dataset]
        screens = any(r.get("frr") is not None for r in these)     # input filters ran: show FRR / detection
        extra = (["FRR / det"] if screens else [])
        leans = any(r.get("untriggered_asr") is not None for r in these)   # measured: show it beside the floor
        spread = any(r.get("floor_asr_min") is not None for r in these)    # --floor-seeds: the floors' range
        header = ["attack", "defense", "CACC", "ASR", "floor", *(["floors of the clean models"] if spread else []),
                  *(["untriggered", "clean untriggered"] if leans else []), "ΔCACC",
                  "ASR drop", "bar", *(["bar, every floor"] if spread else []), "flagged", "det P/R", *extra,
                  "verdict", "clean rows", "seconds"]
        lines += [f"## {dataset}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for r in these:
            if r.get("status") != "ok":
                lines.append(f"| {r['attack']} | {r['defense']} | {r['status']} |" + "|" * (len(header) - 3))
                continue
            det = "–" if r["flagged"] is None else f"{_pct(r['flagged_precision'])} / {_pct(r['flagged_recall'])}"
            screen = ("–" if r.get("frr") is None else f"{_f(r['frr'], 1)} / {_f(r.get('detection_rate'), 1)}")
            cells = [r["attack"], r["defense"], _f(r["cacc"]), _pair(r["asr"], r.get("second_asr")),
                     _pair(r["floor_asr"], r.get("second_floor_asr")), *([floor_range(r) or "–"] if spread else []),
                     *([_pair(r.get("untriggered_asr"), r.get("second_untriggered_asr")),
                        _pair(r.get("floor_untriggered_asr"), r.get("second_floor_untriggered_asr"))] if leans else []),
                     _f(r["cacc_change"], sign=True), _f(r["asr_reduction"]), _bar(meets_bar(r)),
                     *([bar_over_floors(r) or "–"] if spread else []), _f(r["flagged"], 0),
                     det, *([screen] if screens else []), _verdict(r), r["clean_rows_used"] or "–",
                     _f(r["defense_seconds"], 0)]
            lines.append("| " + " | ".join(map(str, cells)) + " |")
        lines.append("")
    lines += ["## Summary over attack cells", "",
              "| defense | cells | mean victim ASR | mean ASR | mean ASR drop (points) | mean relative drop | "
              "mean ΔCACC | cells > floor + 10 | bar met (attack + clean rows) | bar missed |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for defense, s in summarize(rows).items():
        lines.append(f"| {defense} | {s['attack_cells']} | {_f(s['mean_victim_asr'])} | {_f(s['mean_asr'])} | "
                     f"{_f(s['mean_asr_reduction'])} | {_f(s['mean_relative_asr_reduction'], 1)}% | "
                     f"{_f(s['mean_cacc_change'], sign=True)} | {', '.join(s['above_floor']) or 'none'} | "
                     f"{_count(s['bar_met'], s['bar_missed'])} | {', '.join(s['bar_missed']) or 'none'} |")
    if any(r.get("floor_asr_min") is not None for r in rows):
        depends = {d: s["bar_depends_on_floor"] for d, s in summarize(rows).items() if s["bar_depends_on_floor"]}
        lines += ["", "Attack cells whose bar verdict turns on which clean model gives the floor: " +
                  ("; ".join(f"{d}: {', '.join(cells)}" for d, cells in depends.items()) or "none") + "."]
    return "\n".join(lines) + "\n"


def _floors_legend(rows: list[Row]) -> list[str]:
    models = max((r.get("floor_models") or 0 for r in rows), default=0)
    if not models:
        return []
    return ["", f"*floors of the clean models*: the lowest – highest floor of {models} clean models that differ "
            "only in their seed (`--floor-seeds` and the run's own), on the row's own triggered rows; *bar, every "
            "floor*: the bar met with each of them (yes), with none (no), or with some only (depends: the "
            "verdict turns on the clean model's seed, not on the defense)."]


def floor_range(row: Row, dash: str = "–") -> str | None:
    """The lowest-highest floor of several clean models (``--floor-seeds``), each backdoor's; None
    where the run did not measure them."""
    if row.get("floor_asr_min") is None:
        return None
    return " / ".join(f"{_f(row[f'{p}floor_asr_min'], 1)}{dash}{_f(row[f'{p}floor_asr_max'], 1)}"
                      for p in ("", "second_") if row.get(f"{p}floor_asr_min") is not None)


def _pair(first, second) -> str:
    return _f(first) if second is None else f"{_f(first)} / {_f(second)}"


def _bar(met: bool | None) -> str:
    return "–" if met is None else ("yes" if met else "**no**")


def _verdict(row: Row) -> str:
    found = row.get("backdoor_found")
    if found is None:
        return "–"
    return f"backdoor, target {row.get('target_found')}" if found else "no evidence"


def _count(met: list, missed: list) -> str:
    return f"{len(met)} of {len(met) + len(missed)}" if met or missed else "–"


def chart(rows: list[Row], path: Path) -> None:
    """ASR (top) and CACC (bottom) per dataset and attack, one bar per defense; floor as a black tick."""
    from matplotlib.figure import Figure     # no pyplot: no global state, safe in threads

    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    defenses = list(dict.fromkeys(r["defense"] for r in rows))
    fig = Figure(figsize=(5 * len(datasets), 7))
    axes = fig.subplots(2, len(datasets), squeeze=False)
    width = 0.8 / len(defenses)
    for col, dataset in enumerate(datasets):
        ok = [r for r in rows if r["dataset"] == dataset and r.get("status") == "ok"]
        attacks = list(dict.fromkeys(r["attack"] for r in ok))
        for metric, ax in (("asr", axes[0][col]), ("cacc", axes[1][col])):
            names = [a for a in attacks if metric == "cacc" or a != CLEAN]
            for k, defense in enumerate(defenses):
                vals = [next((r[metric] for r in ok if r["attack"] == a and r["defense"] == defense), None) or 0.0
                        for a in names]
                ax.bar([i + k * width for i in range(len(names))], vals, width, label=defense)
            if metric == "asr":
                floors = [next((r["floor_asr"] for r in ok if r["attack"] == a), None) for a in names]
                xs = [i + 0.4 - width / 2 for i in range(len(names))]
                ax.scatter([x for x, f in zip(xs, floors) if f is not None], [f for f in floors if f is not None],
                           marker="_", s=400, color="black", label="clean-model floor", zorder=3)
            ax.set_xticks([i + 0.4 - width / 2 for i in range(len(names))], names, rotation=30, fontsize=8)
            ax.set_ylim(0, 100)
            ax.set_title(f"{dataset}: {metric.upper()} (%)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    atomic_write_bytes(path, buf.getvalue())
