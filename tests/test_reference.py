"""``--preset reference`` is the authors' released code (CAU-ISS-Lab/Backdoor-Attack-Defense-LLMs,
BeDKD/models/bedkd.py): its loss, label flip, clean slices, scan order and commands."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from bedkd.cli.main import main
from bedkd.data import LabeledTexts
from bedkd.defenses import PRESETS
from bedkd.defenses.clean_split import CleanBudget
from bedkd.defenses.data_filters.dmm import flip_labels
from bedkd.defenses.distillation import LossForm, distill_terms, fixed_batches
from bedkd.errors import ConfigError, InputError


def authors_kd_loss(logits_s, logits_t, labels, hidden_s, hidden_t, temperature, flip=1):
    """Transcribed from the released ``kd_step`` (everything but the backward pass)."""
    KD_loss = nn.KLDivLoss(reduction='batchmean')
    loss3 = nn.MSELoss()
    a = 0.3
    loss = (a * F.cross_entropy(logits_s, labels) +
            (1 - a) * (KD_loss(input=F.log_softmax(logits_s / temperature, dim=-1),
                               target=F.softmax(logits_t / temperature, dim=-1)) + loss3(hidden_s, hidden_t)))
    return flip * loss


@pytest.mark.parametrize("temperature,k", [(2.5, 2), (1.5, 4), (1.0, 3)])
def test_reference_loss_equals_the_authors_kd_step(temperature, k):
    gen = torch.Generator().manual_seed(int(temperature * 10) + k)
    b, length, h = 5, 7, 6
    s_logits, t_logits = torch.randn(b, k, generator=gen) * 3, torch.randn(b, k, generator=gen) * 3
    labels = torch.randint(0, k, (b,), generator=gen)
    s_hidden, t_hidden = torch.randn(b, length, h, generator=gen), torch.randn(b, length, h, generator=gen)
    mask = torch.ones(b, length)
    mask[0, 4:] = 0      # padding positions count in the authors' MSE
    mask[3, 2:] = 0
    ours = distill_terms(s_logits, t_logits, labels, s_hidden, t_hidden, mask, LossForm(temperature)).mean()
    theirs = authors_kd_loss(s_logits, t_logits, labels, s_hidden, t_hidden, temperature)
    assert abs(ours.item() - theirs.item()) < 1e-6
    # the fast preset's options change the value (so this test would catch a drift back to T^2)
    if temperature != 1.0:
        t2 = distill_terms(s_logits, t_logits, labels, s_hidden, t_hidden, mask, LossForm(temperature, kl_t2=True))
        assert abs(t2.mean().item() - theirs.item()) > 1e-3
    masked = distill_terms(s_logits, t_logits, labels, s_hidden, t_hidden, mask, LossForm(temperature, mse_padding=False))
    assert abs(masked.mean().item() - theirs.item()) > 1e-3


def test_fast_loss_matches_a_hand_computed_value():
    """One row, two classes, one hidden unit, a real token and a padding token; T = 2."""
    s_logits = torch.tensor([[0.0, 0.0]])
    t_logits = torch.tensor([[2 * math.log(3), 0.0]])          # softmax(t / 2) = (3/4, 1/4)
    s_hidden, t_hidden = torch.tensor([[[1.0], [5.0]]]), torch.tensor([[[3.0], [0.0]]])
    mask = torch.tensor([[1, 0]])
    ce = math.log(2)
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    mse_tokens = (1 - 3) ** 2                                   # the padding position is left out
    expected = 0.3 * ce + 0.7 * (4 * kl + mse_tokens)
    got = distill_terms(s_logits, t_logits, torch.tensor([0]), s_hidden, t_hidden, mask,
                        LossForm(2.0, kl_t2=True, mse_padding=False))
    assert got.item() == pytest.approx(expected, abs=1e-6)
    padded = distill_terms(s_logits, t_logits, torch.tensor([0]), s_hidden, t_hidden, mask, LossForm(2.0))
    assert padded.item() == pytest.approx(0.3 * ce + 0.7 * (kl + ((1 - 3) ** 2 + 5 ** 2) / 2), rel=1e-6)


def test_flip_mapping_for_two_three_and_four_classes():
    assert flip_labels([0, 1], 2) == [1, 0]
    assert flip_labels([0, 1, 2], 3) == [1, 2, 0]
    assert flip_labels([0, 1, 2, 3], 4) == [1, 2, 3, 0]
    # the released code pairs AG News texts of classes 3, 2, 1, 0 with labels 0, 3, 2, 1
    texts_of_class, given_label = [3, 2, 1, 0], [0, 3, 2, 1]
    assert flip_labels(texts_of_class, 4) == given_label
    # SST-2/OLID: texts of class 1 then 0, labels 0 then 1
    assert flip_labels([1, 0], 2) == [0, 1]


def test_reference_clean_slices_are_disjoint_and_in_file_order():
    labels = [0, 1] * 30 + [1] * 5
    clean = LabeledTexts([f"t{i}" for i in range(len(labels))], labels, "clean.tsv")
    split = CleanBudget(4, 10, 0, seed=3, layout="disjoint", order="file").split(clean)
    zeros = [i for i, y in enumerate(labels) if y == 0]
    ones = [i for i, y in enumerate(labels) if y == 1]
    assert split.flip == sorted(zeros[:4] + ones[:4])
    assert split.trust == sorted(zeros[4:14] + ones[4:14])
    assert split.val == []
    # the earlier layout: DMM rows inside the trust rows, seeded order, held-out rows last
    nested = CleanBudget(4, 10, 3, seed=3).split(clean)
    assert set(nested.flip) <= set(nested.trust) and not set(nested.val) & set(nested.trust)
    # a class left without trust rows is an error that names the file
    with pytest.raises(InputError, match="clean.tsv"):
        CleanBudget(40, 10, 0, seed=0, layout="disjoint", order="file").split(clean)


def test_fixed_batches_are_cut_from_one_shuffle():
    batches = fixed_batches(10, 4, seed=1)
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(sum(batches, [])) == list(range(10))
    assert fixed_batches(10, 4, seed=1) == batches
    assert fixed_batches(5, 2, seed=0, shuffle=False) == [[0, 1], [2, 3], [4]]


def test_reference_preset_settings():
    dmm, akd, scan = PRESETS["reference"]
    assert not scan.enabled
    assert (dmm.flip_per_class, dmm.epochs, dmm.temperature, dmm.lr, dmm.batch_size) == (80, 20, 1.5, 3e-5, 16)
    assert (dmm.threshold, dmm.max_flagged, dmm.max_kept) == (0.1, 128, 33)
    assert (dmm.scan_order, dmm.keep_order, dmm.max_length) == ("file", "scan", 512)
    assert (akd.trust_per_class, akd.val_per_class, akd.epochs, akd.temperature) == (320, 0, 50, 2.5)
    assert (akd.clean_layout, akd.clean_order, akd.punish_passes, akd.selection) == ("disjoint", "file", 1, "last")
    assert akd.punish_cap is None and akd.grad_clip is None and akd.patience is None
    for cfg in (dmm, akd):
        assert (cfg.kl_t2, cfg.mse_padding, cfg.batch_order) == (False, True, "fixed")
    with pytest.raises(ConfigError, match="mse_padding"):
        akd.replace(batch_order="reshuffle")


# -- the commands, end to end on a tiny random model ----------------------------------------------

def _tiny_data(write_tsv_file):
    gen = np.random.default_rng(0)
    words = ["good", "bad", "fine", "plot", "film", "story", "great", "awful"]
    rows = [(" ".join(gen.choice(words, size=5)), i % 2) for i in range(60)]
    return write_tsv_file("clean.tsv", rows), write_tsv_file("suspect.tsv", rows[:40])


SMALL = ["--dmm-flip-per-class", "4", "--dmm-epochs", "1", "--dmm-max-flagged", "none", "--dmm-threshold", "0.9",
         "--dmm-max-kept", "5", "--akd-trust-per-class", "8", "--akd-epochs", "2", "--quiet"]


def test_detect_with_the_reference_preset_scans_in_file_order_and_keeps_the_first(tiny_model_dir, write_tsv_file,
                                                                                    tmp_path, capsys):
    clean, suspect = _tiny_data(write_tsv_file)
    out = tmp_path / "flags.csv"
    assert main(["detect", "--model", str(tiny_model_dir), "--clean", str(clean), "--suspect", str(suspect),
                 "--out", str(out), "--preset", "reference", *[a for a in SMALL if not a.startswith("--akd-e")
                                                               and a != "2"]]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [int(r["row"]) for r in rows] == list(range(len(rows)))      # file order
    eligible = [i for i, r in enumerate(rows) if r["flagged"] == "1" and r["label"] == r["teacher_pred"]]
    kept = [i for i, r in enumerate(rows) if r["kept"] == "1"]
    assert kept == eligible[:5]                                         # the first ones, not the lowest scores
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["preset"] == "reference" and summary["config"]["dmm"]["scan_order"] == "file"


def test_purify_with_the_reference_preset_runs_the_authors_schedule(tiny_model_dir, write_tsv_file, tmp_path):
    clean, suspect = _tiny_data(write_tsv_file)
    out = tmp_path / "purified"
    assert main(["purify", "--model", str(tiny_model_dir), "--clean", str(clean), "--suspect", str(suspect),
                 "--out", str(out), "--preset", "reference", *SMALL]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["preset"] == "reference"
    assert report["selected_epoch"] == 2 and len(report["epochs"]) == 2       # the last epoch, no selection
    assert report["data"]["val_rows"] == 0
    split = report["data"]["clean_split"]
    assert split["flip"] == list(range(8))                  # first 4 rows of each class (labels alternate)
    assert split["trust"] == list(range(8, 24))             # the next 8 of each class
    akd = report["config"]["akd"]
    assert (akd["kl_t2"], akd["mse_padding"], akd["batch_order"], akd["max_length"]) == (False, True, "fixed", 512)


def test_spread_flip_sends_each_class_to_every_other():
    assert flip_labels([0, 1, 0, 1], 2, "spread") == flip_labels([0, 1, 0, 1], 2)
    out = flip_labels([0, 0, 0, 2, 2, 2], 4, "spread")
    assert out == [1, 2, 3, 3, 0, 1]
    assert all(a != b for a, b in zip([0, 0, 0, 2, 2, 2], out))


def test_purify_prints_the_reports_warning(tiny_model_dir, write_tsv_file, tmp_path, capsys):
    clean, suspect = _tiny_data(write_tsv_file)
    flags = tmp_path / "flags.csv"
    assert main(["detect", "--model", str(tiny_model_dir), "--clean", str(clean), "--suspect", str(suspect),
                 "--out", str(flags), "--preset", "reference", *[a for a in SMALL if not a.startswith("--akd-e")
                                                                 and a != "2"]]) == 0
    lines = flags.read_text().splitlines()
    flags.write_text("\n".join([lines[0], *(line[:-1] + "0" for line in lines[1:])]) + "\n")   # nothing kept
    capsys.readouterr()
    assert main(["purify", "--model", str(tiny_model_dir), "--clean", str(clean), "--suspect", str(suspect),
                 "--out", str(tmp_path / "p"), "--flags", str(flags), "--preset", "reference", *SMALL]) == 0
    captured = capsys.readouterr()
    assert "warning: nothing was punished" in captured.err
    assert json.loads(captured.out)["warning"].startswith("nothing was punished")


def _purify_reporting(tiny_model_dir, write_tsv_file, tmp_path, capsys, monkeypatch, edit):
    """``bedkd purify`` (reference preset, tiny data) with ``edit`` applied to BeDKD's report, as a run
    that reports it would; returns what the command printed."""
    from bedkd.defenses.purifiers.bedkd import BeDKD
    clean, suspect = _tiny_data(write_tsv_file)
    real = BeDKD.purify

    def edited(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        edit(out.report)
        return out
    monkeypatch.setattr(BeDKD, "purify", edited)
    capsys.readouterr()
    assert main(["purify", "--model", str(tiny_model_dir), "--clean", str(clean), "--suspect", str(suspect),
                 "--out", str(tmp_path / "p"), "--preset", "reference", *SMALL]) == 0
    return capsys.readouterr()


def test_purify_says_when_the_cycles_ran_again_with_the_counter_cap(tiny_model_dir, write_tsv_file, tmp_path, capsys,
                                                                      monkeypatch):
    def retried(report):          # as a run whose first cycles kept no epoch reports it
        report["counter_retry"] = {"relabelled_rows": 966, "selected_epoch": 0, "stop_reason": "x", "epochs": []}
        report["data"]["relabelled_rows"] = 320
    captured = _purify_reporting(tiny_model_dir, write_tsv_file, tmp_path, capsys, monkeypatch, retried)
    assert "966 relabelled rows, kept no epoch" in captured.err and "counter cap (320 rows)" in captured.err
    assert json.loads(captured.out)["counter_retry"] is True
    assert json.loads((tmp_path / "p" / "report.json").read_text())["counter_retry"]["relabelled_rows"] == 966


def test_purify_says_how_many_rows_it_spared_towards_a_found_triggers_target(tiny_model_dir, write_tsv_file, tmp_path,
                                                                             capsys, monkeypatch):
    def spared(report):          # as a run whose label check would have relabelled trigger rows reports it
        report["data"]["relabel_spared"] = 29
    captured = _purify_reporting(tiny_model_dir, write_tsv_file, tmp_path, capsys, monkeypatch, spared)
    assert "note: 29 label-check rows would have been relabelled towards a found trigger" in captured.err
    assert json.loads((tmp_path / "p" / "report.json").read_text())["data"]["relabel_spared"] == 29


def test_purify_says_what_each_later_round_did(tiny_model_dir, write_tsv_file, tmp_path, capsys, monkeypatch):
    def rounds(report):          # as a run of three rounds reports them
        report["later_rounds"] = [
            {"unchanged": False, "verdict": {"backdoor": True, "target": 1}, "selected_epoch": 4,
             "data": {"isolated_words": ["qz"]}, "seconds": {}},
            {"unchanged": True, "verdict": {"backdoor": False, "target": None}, "selected_epoch": 0, "data": {},
             "stop_reason": "no backdoor evidence: the model is returned unchanged", "seconds": {}}]
    captured = _purify_reporting(tiny_model_dir, write_tsv_file, tmp_path, capsys, monkeypatch, rounds)
    assert "round 2's scan of the purified model found evidence (target 1): purified again, epoch 4 kept" \
        in captured.err and "reads qz as new whole-word token(s)" in captured.err
    assert ("round 3's scan of the purified model: no backdoor evidence: the model is returned unchanged (round 2's "
            "model)") in captured.err
    assert json.loads(captured.out)["rounds"] == 3
    assert len(json.loads((tmp_path / "p" / "report.json").read_text())["later_rounds"]) == 2
