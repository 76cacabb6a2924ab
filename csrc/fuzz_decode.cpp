// libFuzzer harness for the decoders (built by csrc/fuzz.sh with AddressSanitizer + UBSan).
// The first byte picks the requested channel count and size, so both the header checks and the
// full decode paths (mismatched sizes, gray/RGB conversions, truncation) get exercised.
// libjpeg/libpng are not instrumented, so guard bytes after the output catch a codec writing past it.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "decode.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const int c = (data[0] & 1) ? 3 : 1;
  const int side = 1 + (data[0] >> 1) % 64;  // 1..64: covers 28 and 32, and mismatches
  const size_t n = static_cast<size_t>(side) * side * c, guard = 64;
  std::vector<uint8_t> out(n + guard, 0xA5);
  zoo::decode(data + 1, size - 1, out.data(), side, side, c);
  for (size_t i = n; i < n + guard; ++i)
    if (out[i] != 0xA5) __builtin_trap();  // the decoder wrote past the image
  return 0;
}
