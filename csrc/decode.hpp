// Image decoding over raw memory buffers. No Python here: the fuzz harness links this file alone.
#pragma once
#include <cstddef>
#include <cstdint>

namespace zoo {

// Status codes shared with zoo/data/native.py (keep in sync with STATUS_TEXT there).
enum Status : int32_t {
  kOk = 0,
  kUnknownFormat = 1,    // neither JPEG nor PNG signature
  kCorrupt = 2,          // decoder error or truncated data
  kSizeMismatch = 3,     // decoded size differs from the requested h x w
  kUnsupportedColor = 4, // colour conversion the native path does not do (CMYK, RGB->gray); PIL handles it
  kNoCodec = 5,          // codec not compiled in
  kIoError = 6,          // file could not be read
  kTooLarge = 7,         // file larger than the caller's cap (decode_files); refused before it is read
};

enum Format : int32_t { kFormatUnknown = 0, kFormatJpeg = 1, kFormatPng = 2 };

Format sniff(const uint8_t* data, size_t size);
bool have_jpeg();
bool have_png();
const char* jpeg_version();
const char* png_version();

// Decodes one image into out (h*w*c bytes, HWC). c is 1 (gray) or 3 (RGB).
// Gray->RGB is replicated, alpha is dropped, 16-bit is reduced to 8-bit, palettes are expanded.
int32_t decode(const uint8_t* data, size_t size, uint8_t* out, int h, int w, int c);

}  // namespace zoo
