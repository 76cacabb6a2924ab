#!/usr/bin/env bash
# CUDA benchmark groups, each with its own JSON so a slow group cannot lose the others' results.
# The GPU machine gets a copy of the tree without .git: pass the commit, ZOO_COMMIT=$(git rev-parse HEAD) bash ...
export ZOO_HOME=${ZOO_HOME:-/tmp/zoo} PYTHONUNBUFFERED=1
OUT=${OUT:-bench/results}
run() {  # name seconds -k-expression files...
  local name=$1 secs=$2 expr=$3; shift 3
  timeout "$secs" python3 -m pytest "$@" -k "$expr" --benchmark-only -p no:cacheprovider -o addopts="" \
    --benchmark-json "$OUT/cuda_$name.json" -q --benchmark-columns=median,ops 2>&1 | tail -25
}
run infer1024 240 "cuda and 1024" bench/test_inference.py

run loader 60 "gpu" bench/test_loaders.py
run train 90 "cuda" bench/test_train_step.py
run infer_small 180 "cuda and not 1024 and not 16384" bench/test_inference.py
run infer_large 60 "cuda and 16384" bench/test_inference.py
