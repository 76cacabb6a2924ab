#include "augment.hpp"

#include <algorithm>

namespace zoo {
namespace {

// One output sample. Output (y, x) reads padded source (crop_y + y, crop_x + x'), x' = OW-1-x when
// flipped; padding and cutout read as pixel value 0. Per row, the span of x whose source column is
// inside the image is computed once, so the inner loops are branch-free copies through `store`.
// kC > 0 fixes the channel count at compile time (1 and 3 are the common cases); kNHWC the layout.
template <int kC, bool kNHWC, typename T, typename Store>
void gather_sample(const GatherArgs& a, int64_t b, T* out, Store store) {
  const int64_t H = a.h, W = a.w, C = kC > 0 ? kC : a.c, OH = a.out_h, OW = a.out_w;
  const uint8_t* img = a.src + a.index[b] * H * W * C;
  const int64_t oy = (a.crop_y ? a.crop_y[b] : 0) - a.pad;
  const int64_t ox = (a.crop_x ? a.crop_x[b] : 0) - a.pad;
  const bool flip = a.flip && a.flip[b];
  T* dst = out + b * OH * OW * C;
  const int64_t plane = OH * OW;
  auto at = [&](int64_t y, int64_t x, int64_t c) -> T& {
    return kNHWC ? dst[(y * OW + x) * C + c] : dst[c * plane + y * OW + x];
  };
  // Output columns [x0, x1) read source columns inside [0, W).
  // Unflipped: sx = ox + x.  Flipped: sx = ox + OW - 1 - x.
  const int64_t base = flip ? ox + OW - 1 : ox;
  const int64_t x0 = flip ? std::max<int64_t>(0, base - (W - 1)) : std::max<int64_t>(0, -ox);
  const int64_t x1 = flip ? std::min<int64_t>(OW, base + 1) : std::min<int64_t>(OW, W - ox);
  for (int64_t y = 0; y < OH; ++y) {
    const int64_t sy = oy + y;
    const bool row_in = sy >= 0 && sy < H && x0 < x1;
    for (int64_t c = 0; c < C; ++c) {
      const T zero = store(c, 0);
      const int64_t lo = row_in ? x0 : OW;
      for (int64_t x = 0; x < lo; ++x) at(y, x, c) = zero;
      if (row_in) {
        const uint8_t* row = img + sy * W * C + c;
        if (flip)
          for (int64_t x = x0; x < x1; ++x) at(y, x, c) = store(c, row[(base - x) * C]);
        else
          for (int64_t x = x0; x < x1; ++x) at(y, x, c) = store(c, row[(ox + x) * C]);
        for (int64_t x = x1; x < OW; ++x) at(y, x, c) = zero;
      }
    }
  }
  if (a.cut > 0) {
    const int64_t y0 = a.cut_y[b], xc = a.cut_x[b];
    for (int64_t y = std::max<int64_t>(0, y0); y < std::min(OH, y0 + a.cut); ++y)
      for (int64_t x = std::max<int64_t>(0, xc); x < std::min(OW, xc + a.cut); ++x)
        for (int64_t c = 0; c < C; ++c) at(y, x, c) = store(c, 0);
  }
}

template <bool kNHWC, typename T, typename Store>
void gather_layout(const GatherArgs& a, T* out, int threads, Store store) {
  parallel_for(a.batch, threads, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      if (a.c == 3) gather_sample<3, kNHWC>(a, b, out, store);
      else if (a.c == 1) gather_sample<1, kNHWC>(a, b, out, store);
      else gather_sample<0, kNHWC>(a, b, out, store);
    }
  });
}

template <typename T, typename Store>
void gather(const GatherArgs& a, T* out, int threads, Store store) {
  if (a.channels_last) gather_layout<true>(a, out, threads, store);
  else gather_layout<false>(a, out, threads, store);
}

}  // namespace

void gather_f32(const GatherArgs& a, float* out, int threads) {
  const float* lut = a.lut;
  gather(a, out, threads, [lut](int64_t c, uint8_t v) { return lut[c * 256 + v]; });
}

void gather_u8(const GatherArgs& a, uint8_t* out, int threads) {
  gather(a, out, threads, [](int64_t, uint8_t v) { return v; });
}

}  // namespace zoo
