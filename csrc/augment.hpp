// Batch gather + crop/flip/cutout + normalise over raw buffers.
// Every random choice (which samples, where to crop, whether to flip) is made in Python and
// passed in as arrays: this code only computes, so the pure-torch path can reproduce it exactly.
#pragma once
#include <cstdint>

namespace zoo {

struct GatherArgs {
  const uint8_t* src = nullptr;  // N x H x W x C, uint8, contiguous
  int64_t n = 0, h = 0, w = 0, c = 0;
  const int64_t* index = nullptr;  // B sample indices into src
  int64_t batch = 0;
  const int32_t* crop_y = nullptr;  // B crop origins in padded coordinates (nullptr: centre, no pad)
  const int32_t* crop_x = nullptr;
  const uint8_t* flip = nullptr;    // B horizontal-flip flags (nullptr: none)
  int pad = 0;                      // zero padding on every side before cropping
  int out_h = 0, out_w = 0;
  const int32_t* cut_y = nullptr;   // B cutout top-left in output coordinates (may lie partly outside)
  const int32_t* cut_x = nullptr;
  int cut = 0;                      // cutout side; 0 disables
  const float* lut = nullptr;       // C x 256 table: value of pixel v in channel c (float output only)
  bool channels_last = false;       // output NHWC instead of NCHW
};

// Output is float32 through the lookup table, or the raw uint8 pixels (normalised later, on the GPU).
void gather_f32(const GatherArgs& a, float* out, int threads);
void gather_u8(const GatherArgs& a, uint8_t* out, int threads);

// Runs fn(begin, end) over [0, n) split into `threads` contiguous chunks.
template <typename Fn>
void parallel_for(int64_t n, int threads, Fn fn);

}  // namespace zoo

#include <algorithm>
#include <thread>
#include <vector>

template <typename Fn>
void zoo::parallel_for(int64_t n, int threads, Fn fn) {
  threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, n)));
  if (threads == 1) {
    fn(int64_t{0}, n);
    return;
  }
  std::vector<std::thread> pool;
  pool.reserve(threads - 1);
  const int64_t chunk = (n + threads - 1) / threads;
  for (int t = 1; t < threads; ++t) {
    const int64_t b = t * chunk, e = std::min(n, b + chunk);
    if (b < e) pool.emplace_back(fn, b, e);
  }
  fn(int64_t{0}, std::min(n, chunk));
  for (auto& th : pool) th.join();
}
