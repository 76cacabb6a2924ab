#!/usr/bin/env bash
# One device call: install, ingest CIFAR-10, train the GPU-trained entries, run the CUDA benchmarks.
# Usage on the GPU machine (repo root): bash bench/gpu_session.sh STAGE   (logs and weights go to $OUT)
set -uo pipefail
STAGE=${1:-a}
OUT=${OUT:-/tmp/out}
export PYTHONUNBUFFERED=1 ZOO_HOME=/tmp/zoo
python3 -m pip install --no-build-isolation --no-deps -q -e . 2>&1 | tail -3
REPO=$(pwd)
cd /tmp  # run the CLI outside the source tree
if [ ! -d /tmp/zoo/data/cifar10/train ]; then
  mkdir -p /tmp/ds && tar xzf "$REPO/.gpu/cifar10-jpeg.tar.gz" -C /tmp/ds
  python3 -m zoo ingest cifar10 --root /tmp/ds/cifar10
fi
python3 -m zoo info
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
train() {  # model recipe [extra args]
  local m=$1 r=$2; shift 2
  python3 -m zoo train "$m" --dataset cifar10 --recipe "$r" --out "/tmp/runs/$m.cifar10" --no-progress "$@" \
    && cp "/tmp/runs/$m.cifar10/model.safetensors" "$OUT/$m.cifar10.safetensors" \
    && cp "/tmp/runs/$m.cifar10/log.jsonl" "$OUT/$m.cifar10.log.jsonl"
}
case $STAGE in
  a)  # CIFAR-10 entries trained on the GPU; fp16 weights in 15 MB parts (the transfer limit is 16 MB a file)
    train resnet9 fast_resnet9 --fp16-weights
    train resnet18 fast_resnet18 --fp16-weights
    train lenet5 fast_lenet --epochs 30 --batch-size 512
    train convnet_bn fast_convnet --fp16-weights
    cd /tmp/runs && tar cf "$OUT/logs.tar" */log.jsonl */result.json lenet5.cifar10/model.safetensors
    rm -f "$OUT/lenet5.cifar10.safetensors" "$OUT/lenet5.cifar10.log.jsonl"
    for m in resnet9 resnet18 convnet_bn; do
      rm -f "$OUT/$m.cifar10.safetensors" "$OUT/$m.cifar10.log.jsonl"
      split -b 15M "/tmp/runs/$m.cifar10/model.safetensors" "$OUT/$m.cifar10.safetensors.part-"
    done
    ;;
  c)
    cd "$REPO" && python3 -m pytest bench/test_inference.py bench/test_train_step.py -k "cuda" --benchmark-only \
      -p no:cacheprovider -o addopts="" --benchmark-json "$OUT/bench_cuda.json" -q 2>&1 | tail -30
    ;;
esac
