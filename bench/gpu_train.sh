#!/usr/bin/env bash
# Device call: train the entries too slow for a 2-core CPU; fp16 weights to $OUT in 15 MB parts (the device
# tool returns files of at most 16 MB), the whole log to $OUT/train.log.
#
#   bash bench/gpu_train.sh DATASET ARCHIVE "MODEL RECIPE EPOCHS [train args...]" ...
#   bash bench/gpu_train.sh --stash FILE     # keep FILE in /tmp/stash for a later call (machine kept warm)
#
# ARCHIVE is a .tar.gz of the dataset's ImageFolder tree, relative to the repo root, or a glob of its parts
# (`split -b 40M`), concatenated in name order. A dataset larger than one call's transfer limit (CIFAR-100 PNG,
# 132 MB) goes over in parts with --stash on consecutive calls; the last call names '/tmp/stash/*'.
# Examples (2026-11-23 weights): bash bench/gpu_train.sh mnist .gpu/mnist-png.tar.gz "resnet9 fast_resnet9 8"
#   bash bench/gpu_train.sh cifar10 .gpu/cifar10-jpeg.tar.gz "resnet18 fast_resnet18 60" "lenet5 fast_lenet 30 --batch-size 512"
set -uo pipefail
# The GPU machine gets a copy of the tree without .git: ZOO_COMMIT=<sha> records the commit in the weights' meta.
PY=${PY:-python3}
OUT=${OUT:-/tmp/out}
if [ "${1:-}" = "--stash" ]; then
  mkdir -p /tmp/stash && cp "$2" /tmp/stash/ && ls -l /tmp/stash
  exit
fi
[ $# -ge 3 ] || { echo "usage: bash bench/gpu_train.sh DATASET ARCHIVE 'MODEL RECIPE EPOCHS [args]'..." >&2; exit 2; }
DS=$1 ARCHIVE=$2
shift 2
export PYTHONUNBUFFERED=1 ZOO_HOME=${ZOO_HOME:-/tmp/zoo}
[ -n "${SKIP_INSTALL:-}" ] || "$PY" -m pip install --no-build-isolation --no-deps -q -e . 2>&1 | tail -2
REPO=$(pwd)
cd /tmp  # run the CLI outside the source tree
if [ ! -f "$ZOO_HOME/data/$DS/test/meta.json" ]; then
  mkdir -p /tmp/ds
  # shellcheck disable=SC2086  # ARCHIVE may be a glob of parts
  (cd "$REPO" && cat $ARCHIVE) | tar xz -C /tmp/ds || { echo "cannot extract $ARCHIVE" >&2; exit 1; }
  "$PY" -m zoo ingest "$DS" --root "/tmp/ds/$DS" 2>&1 | tail -2
fi
"$PY" -m zoo info | head -12
for spec in "$@"; do
  # shellcheck disable=SC2086
  set -- $spec
  m=$1 r=$2 e=$3
  shift 3
  run=/tmp/runs/$m.$DS
  "$PY" -m zoo train "$m" --dataset "$DS" --recipe "$r" --epochs "$e" --out "$run" --no-progress --fp16-weights "$@" \
    2>&1 | tee -a "$OUT/train.log" | grep -E "trained|top-1" \
    && split -b 15M "$run/model.safetensors" "$OUT/$m.$DS.safetensors.part-" \
    && cp "$run/log.jsonl" "$OUT/$m.$DS.log.jsonl"
done
