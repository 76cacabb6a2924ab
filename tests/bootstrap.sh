#!/usr/bin/env bash
# All set-up in one command, then the job:
#   bash tests/bootstrap.sh demo   # venv + install (builds the C++ extension) + MNIST demo (train/eval/export/report)
#   bash tests/bootstrap.sh test   # venv + install + lint + the test suite + a quick benchmark run
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-test}
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
VPY=.venv/bin/python
"$VPY" -m pip install -q --upgrade pip
# Build requirements first: the editable install builds the extension without build isolation (faster, offline-friendly);
# setuptools builds the zoo-weights distribution in the release check (tests/test_release.py), offline too.
"$VPY" -m pip install -q "scikit-build-core>=0.9" "pybind11>=2.12" ninja "setuptools>=77"
"$VPY" -m pip install -q --no-build-isolation -e ".[dev]"
SHARED=${ZOO_SHARED_DATASETS:-../shared/datasets}
case $MODE in
  demo)
    ROOT=${MNIST_ROOT:-}
    if [ -z "$ROOT" ]; then
      if [ ! -d .cache/datasets/mnist ] && [ -f "$SHARED/mnist-png.tar.gz" ]; then
        mkdir -p .cache/datasets && tar xzf "$SHARED/mnist-png.tar.gz" -C .cache/datasets
      fi
      ROOT=.cache/datasets/mnist
    fi
    if [ -d "$ROOT" ]; then
      "$VPY" -m zoo demo --root "$ROOT" --out reports/demo
    elif [ -n "${MNIST_ROOT:-}" ]; then
      echo "MNIST_ROOT=$MNIST_ROOT is not a folder (the IDX files or train/ test/ PNG folders)" >&2; exit 2
    else  # no local copy: fetch the official files (MD5-checked) into $ZOO_HOME/downloads/mnist
      "$VPY" -m zoo demo --download --out reports/demo
    fi
    ;;
  test)
    # Headless Chromium renders the HTML report and runs ONNX Runtime Web in tests; clang + libFuzzer fuzz the
    # decoders; pkg-config + OpenCV + libturbojpeg headers let `pip install ffcv` build; Node runs onnxruntime-node.
    # Installed where we can (root with apt); the tests that need a missing one skip and say so.
    if { ! command -v chromium || ! command -v clang++ || ! command -v npm || ! pkg-config --exists opencv4 libturbojpeg; } \
        >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      NODE_PKGS=$(command -v npm >/dev/null 2>&1 || echo "nodejs npm")
      # shellcheck disable=SC2086
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium clang \
        libclang-rt-14-dev pkg-config libopencv-dev libturbojpeg0-dev $NODE_PKGS) >/dev/null 2>&1 || true
    fi
    # The deployment runtimes of tests/test_deploy.py and the optional FFCV backend (tests/test_loaders.py, bench):
    # from the package registries only (ONNXRUNTIME_NODE_INSTALL=skip: the npm package's own CPU binary, no download).
    "$VPY" -m pip install -q opencv-python-headless ffcv >/dev/null 2>&1 || "$VPY" -m pip install -q opencv-python-headless \
      >/dev/null 2>&1 || true
    if command -v npm >/dev/null 2>&1; then
      (mkdir -p .cache/node && cd .cache/node && { [ -f package.json ] || echo '{"private": true}' > package.json; } \
        && ONNXRUNTIME_NODE_INSTALL=skip npm install -s --no-audit --no-fund onnxruntime-node@1.30.0 \
        onnxruntime-web@1.30.0) >/dev/null 2>&1 || true
    fi
    if command -v clang++ >/dev/null 2>&1; then
      PYTHON="$PWD/$VPY" bash csrc/fuzz.sh 200000 2>&1 | grep -E "^Done|ERROR|SUMMARY" || { echo "fuzzing failed" >&2; exit 1; }
    fi
    # The native tests again against an ASan + UBSan build of the extension (build/asan; the venv's stays as is).
    PYTHON="$PWD/$VPY" bash csrc/sanitize.sh
    "$VPY" -m ruff check zoo export tests bench hubconf.py
    "$VPY" -m pytest -q -p no:cacheprovider
    ZOO_BENCH_QUICK=1 "$VPY" -m pytest bench --benchmark-only -q -p no:cacheprovider --benchmark-columns=median,ops
    ;;
  *) echo "usage: bash tests/bootstrap.sh demo|test" >&2; exit 2 ;;
esac
