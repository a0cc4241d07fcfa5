#!/bin/bash
# The commands that computed the scores of this folder (run from the repository root; the victims
# are the security table's, cached by `python benchmarks/security.py run --workdir ~/.cache/bedkd/sec ...`).
COMMON="--workdir $HOME/.cache/bedkd/sec --attack-trigger qv xk wz --attack-target 1 --seed 2 --train-limit 3000 --no-clean-row --data-dir ../shared/data"
python benchmarks/dmm_draws.py --draws 6 --out sst2_rate5.md --save-scores sst2_rate5.npz -- --datasets sst2 --attacks badnets --attack-rate 0.05 $COMMON
python benchmarks/dmm_draws.py --draws 4 --out sst2_clean.md --save-scores sst2_clean.npz -- --datasets sst2 --attacks clean $COMMON
python benchmarks/dmm_draws.py --draws 4 --out olid_rate3.md --save-scores olid_rate3.npz -- --datasets olid --attacks badnets --attack-rate 0.03 $COMMON
python benchmarks/dmm_draws.py --draws 4 --out olid_clean.md --save-scores olid_clean.npz -- --datasets olid --attacks clean $COMMON
