"""End to end on the real MiniLM backbone and 1000 SST-2 rows (about 3 minutes on 2 cores)."""
import os
from pathlib import Path

import pytest

from bedkd.attacks import AttackConfig, make_attack
from bedkd.data import random_limit, read_labeled
from bedkd.defenses import AKDConfig, BeDKD, DMMConfig
from bedkd.evaluation import evaluate
from bedkd.modeling import TrainConfig, default_backbone, finetune, load_classifier
from bedkd.seeding import seed_everything

DATA = Path(os.environ.get("BEDKD_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (DATA / "sst2").is_dir(), reason=f"SST-2 not found under {DATA}")]


def test_bedkd_removes_a_badnets_backdoor():
    root = DATA / "sst2" / "clean"
    train = read_labeled(root / "train.tsv")
    train = train.subset(random_limit(train, 1000, seed=0))
    test = read_labeled(root / "test.tsv")
    test = test.subset(random_limit(test, 400, seed=0))
    clean_pool = read_labeled(root / "dev.tsv")
    attacked = make_attack("badnets", AttackConfig(rate=0.15, seed=0)).poison(train, test)

    seed_everything(0)
    victim = load_classifier(default_backbone(), num_labels=2)
    finetune(victim, attacked.train, TrainConfig(epochs=3, lr=1e-4, seed=0), progress=False)
    before = evaluate(victim, test, attacked.test_poison)
    assert before["asr"] >= 80, f"the backdoor was not learned: {before}"
    assert before["cacc"] >= 70, f"the clean task was not learned: {before}"

    dmm = DMMConfig(flip_per_class=40, epochs=10, max_flagged=48, max_kept=16)
    akd = AKDConfig(trust_per_class=100, val_per_class=40, epochs=10)
    result = BeDKD(dmm, akd).purify(victim, clean_pool, attacked.train, progress=False)
    after = evaluate(result.classifier, test, attacked.test_poison)
    detection = result.detection.metrics(attacked.poisoned_rows)
    assert detection["kept_precision"] >= 50, detection
    assert after["asr"] <= before["asr"] - 50, f"ASR {before['asr']:.1f} -> {after['asr']:.1f}"
    assert after["cacc"] >= before["cacc"] - 5, f"CACC {before['cacc']:.1f} -> {after['cacc']:.1f}"
