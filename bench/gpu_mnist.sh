#!/usr/bin/env bash
# Device call: MNIST entries too slow for a 2-core CPU (ResNets), fp16 weights to $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1 ZOO_HOME=/tmp/zoo
OUT=${OUT:-/tmp/out}
python3 -m pip install --no-build-isolation --no-deps -q -e . 2>&1 | tail -2
REPO=$(pwd); cd /tmp
mkdir -p /tmp/ds && tar xzf "$REPO/.gpu/m/mnist-png.tar.gz" -C /tmp/ds
python3 -m zoo ingest mnist --root /tmp/ds/mnist 2>&1 | tail -2
for spec in "resnet9 fast_resnet9 8" "resnet18 fast_resnet18 8" "lenet5_wide fast_lenet 15"; do
  set -- $spec
  python3 -m zoo train $1 --dataset mnist --recipe $2 --epochs $3 --out /tmp/runs/$1.mnist --no-progress \
    --fp16-weights 2>&1 | grep -E "trained|top-1" && split -b 15M /tmp/runs/$1.mnist/model.safetensors "$OUT/$1.mnist.safetensors.part-"
done
