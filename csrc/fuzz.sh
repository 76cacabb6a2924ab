#!/usr/bin/env bash
# Build and run the decoder fuzzer: bash csrc/fuzz.sh [RUNS]   (default 1,000,000 executions)
# Needs clang with libFuzzer (Debian: apt-get install clang libclang-rt-14-dev) and libjpeg/libpng headers.
set -euo pipefail
cd "$(dirname "$0")"
RUNS=${1:-1000000}
OUT=${FUZZ_DIR:-../build/fuzz}
mkdir -p "$OUT/corpus"
CXX=${CXX_FUZZ:-clang++}
defs=""; libs=""
[ -f /usr/include/jpeglib.h ] && { defs="$defs -DZOO_HAVE_JPEG=1"; libs="$libs -ljpeg"; }
[ -f /usr/include/png.h ] && { defs="$defs -DZOO_HAVE_PNG=1"; libs="$libs -lpng"; }
$CXX -std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined $defs \
  fuzz_decode.cpp decode.cpp -o "$OUT/fuzz_decode" $libs
# Seed corpus: a tiny valid PNG and JPEG of each channel count (prefix byte = requested size/channels).
PY=${PYTHON:-$( [ -x ../.venv/bin/python ] && echo ../.venv/bin/python || echo python3 )}
"$PY" - "$OUT/corpus" <<'PY'
import io, sys
from pathlib import Path
from PIL import Image  # the seeds matter: without valid images the fuzzer never gets past the headers
out = Path(sys.argv[1])
for mode, c in (("L", 1), ("RGB", 3)):
    for fmt in ("PNG", "JPEG"):
        buf = io.BytesIO()
        Image.new(mode, (8, 8), 128).save(buf, fmt)
        prefix = bytes([((8 - 1) << 1) | (1 if c == 3 else 0)])
        (out / f"seed_{mode}_{fmt}").write_bytes(prefix + buf.getvalue())
PY
ASAN_OPTIONS=detect_leaks=1 "$OUT/fuzz_decode" -runs="$RUNS" -max_len=4096 -print_final_stats=1 "$OUT/corpus"
