#!/usr/bin/env bash
# Build the extension with AddressSanitizer + UBSan into build/asan and run tests/test_native.py against it:
#   bash csrc/sanitize.sh [PYTEST ARGS...]
# The venv's normal extension is left alone: zoo/data/native.py loads the file named by $ZOO_NATIVE_LIB instead
# (and fails loudly if it can't, so the tests can't silently skip), and a test checks the build is the sanitized one.
# Python itself is not instrumented, so the ASan runtime is preloaded and leak checking is off (the interpreter
# "leaks" by design). Any ASan or UBSan report aborts pytest, which fails this script; --capture=sys leaves the
# real stderr to the sanitizer, whose report would otherwise vanish with pytest's fd capture.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo "$PWD/.venv/bin/python" || echo python3 )}
export PATH="$(dirname "$PY"):$PATH"  # cmake and ninja may come from the venv (pip), as for the normal build
CXX=${CXX_SANITIZE:-${CXX:-c++}}
OUT=${SANITIZE_DIR:-build/asan}
# The shared ASan runtime must be preloadable; without it (e.g. a compiler without libasan) the step is skipped.
RT=$("$CXX" -print-file-name=libasan.so 2>/dev/null || true)
if [ -z "$RT" ] || [ ! -f "$RT" ]; then
  echo "sanitize: skipped ($CXX has no shared libasan)"; exit 0
fi
GEN=(); command -v ninja >/dev/null 2>&1 && GEN=(-G Ninja)
# -O1 keeps the build and the test run quick; -fno-sanitize-recover makes every UBSan finding fatal.
cmake -S . -B "$OUT" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_COMPILER="$CXX" \
  -DCMAKE_CXX_FLAGS="-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all" \
  -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined" \
  -DPython_EXECUTABLE="$(command -v "$PY" || echo "$PY")" \
  -Dpybind11_DIR="$("$PY" -m pybind11 --cmakedir)" >/dev/null
cmake --build "$OUT" --target _native
LIB=$(ls "$(cd "$OUT" && pwd)"/_native*.so | head -1)
# allocator_may_return_null: a failed huge allocation returns NULL (the code turns it into an error) instead of
# ASan's own abort, so the out-of-memory test runs here too.
export ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:allocator_may_return_null=1:detect_stack_use_after_return=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
# Python objects from malloc, not pymalloc's arenas, so a read of a freed bytes/array object is seen too.
export PYTHONMALLOC=malloc
export ZOO_NATIVE_LIB="$LIB"
# libstdc++ is preloaded too: python doesn't link it, so without it ASan can't intercept __cxa_throw and its
# CHECK aborts at the first C++ exception (ours, or one thrown while importing torch/triton).
STDCXX=$(readlink -f "$("$CXX" -print-file-name=libstdc++.so)")
LD_PRELOAD="$RT $STDCXX" "$PY" -m pytest -q -p no:cacheprovider --capture=sys \
  tests/test_native.py -k "not triton" "$@"
