#include "augment.hpp"

namespace zoo {
namespace {

// One output sample. Output (y, x) reads padded source (crop_y + y, crop_x + x'), x' = OW-1-x when
// flipped; padding and cutout read as pixel value 0. kC > 0 fixes the channel count at compile time
// (1 and 3 are the common cases, and a constant lets the compiler unroll the channel loop).
template <int kC, typename T, typename Store>
void gather_sample(const GatherArgs& a, int64_t b, T* out, Store store) {
  const int64_t H = a.h, W = a.w, C = kC > 0 ? kC : a.c, OH = a.out_h, OW = a.out_w;
  const uint8_t* img = a.src + a.index[b] * H * W * C;
  const int64_t oy = (a.crop_y ? a.crop_y[b] : 0) - a.pad;
  const int64_t ox = (a.crop_x ? a.crop_x[b] : 0) - a.pad;
  const bool flip = a.flip && a.flip[b];
  T* dst = out + b * OH * OW * C;
  const int64_t plane = OH * OW;
  auto put = [&](int64_t y, int64_t x, const uint8_t* px) {
    if (a.channels_last) {
      T* d = dst + (y * OW + x) * C;
      for (int64_t c = 0; c < C; ++c) d[c] = store(c, px ? px[c] : 0);
    } else {
      T* d = dst + y * OW + x;
      for (int64_t c = 0; c < C; ++c) d[c * plane] = store(c, px ? px[c] : 0);
    }
  };
  for (int64_t y = 0; y < OH; ++y) {
    const int64_t sy = oy + y;
    if (sy < 0 || sy >= H) {
      for (int64_t x = 0; x < OW; ++x) put(y, x, nullptr);
      continue;
    }
    const uint8_t* row = img + sy * W * C;
    for (int64_t x = 0; x < OW; ++x) {
      const int64_t sx = ox + (flip ? OW - 1 - x : x);
      put(y, x, (sx >= 0 && sx < W) ? row + sx * C : nullptr);
    }
  }
  if (a.cut > 0) {
    const int64_t y0 = a.cut_y[b], x0 = a.cut_x[b];
    for (int64_t y = y0 < 0 ? 0 : y0; y < y0 + a.cut && y < OH; ++y)
      for (int64_t x = x0 < 0 ? 0 : x0; x < x0 + a.cut && x < OW; ++x) put(y, x, nullptr);
  }
}

template <typename T, typename Store>
void gather(const GatherArgs& a, T* out, int threads, Store store) {
  parallel_for(a.batch, threads, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      if (a.c == 3) gather_sample<3>(a, b, out, store);
      else if (a.c == 1) gather_sample<1>(a, b, out, store);
      else gather_sample<0>(a, b, out, store);
    }
  });
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
