#!/usr/bin/env bash
# CUDA benchmark groups, each with its own JSON so a slow group cannot lose the others' results.
#   ZOO_COMMIT=$(git rev-parse HEAD) bash bench/gpu_bench.sh [GROUP ...]    # default: every group, in this order
# The GPU machine gets a copy of the tree without .git, hence ZOO_COMMIT. A lease is short (15 min of device time
# in all), so the issue-#7 goal cases come first: ResNet-18 at batch 1024 and LeNet-5 at batch 16384, every CUDA
# backend. Each group's seconds are a ceiling (timeout), sized from the 2026-11-23 H100 run.
export ZOO_HOME=${ZOO_HOME:-/tmp/zoo} PYTHONUNBUFFERED=1
OUT=${OUT:-bench/results}
declare -A SECS=([goals]=300 [infer1024]=180 [loader]=60 [train]=90 [infer_small]=180)
declare -A EXPR=([goals]="cuda and ((resnet18 and 1024) or (lenet5 and 16384))"
                 [infer1024]="cuda and 1024 and not resnet18" [loader]="gpu" [train]="cuda"
                 [infer_small]="cuda and not 1024 and not 16384")
declare -A FILE=([goals]=test_inference [infer1024]=test_inference [loader]=test_loaders [train]=test_train_step
                 [infer_small]=test_inference)
ORDER=(goals infer1024 loader train infer_small)
groups=("$@")
[ ${#groups[@]} -gt 0 ] || groups=("${ORDER[@]}")
for g in "${groups[@]}"; do
  [ -n "${SECS[$g]:-}" ] || { echo "unknown group '$g' (${ORDER[*]})" >&2; exit 2; }
  echo "== $g (at most ${SECS[$g]} s)"
  timeout "${SECS[$g]}" python3 -m pytest "bench/${FILE[$g]}.py" -k "${EXPR[$g]}" --benchmark-only -p no:cacheprovider \
    -o addopts="" --benchmark-json "$OUT/cuda_$g.json" -q --benchmark-columns=median,ops 2>&1 | tail -25
done
