// Batch gather + crop/flip/cutout + normalise over raw buffers.
// Every random choice (which samples, where to crop, whether to flip) is made in Python and
// passed in as arrays: this code only computes, so the pure-torch path can reproduce it exactly.
#pragma once
#include <algorithm>
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

// Thread counts are decided in Python (zoo/data/native.py refuses more than MAX_THREADS); this clamp is the
// defensive copy of that rule, so no argument can make the C++ start thousands of threads.
constexpr int kMaxThreads = 256;

inline int clamp_threads(int64_t threads, int64_t n) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>({threads, n, int64_t{kMaxThreads}})));
}

// Runs fn(begin, end) over [0, n) split into `threads` contiguous chunks (clamped to [1, min(n, kMaxThreads)]).
// An exception in any chunk is rethrown here after every thread has joined: one escaping a std::thread would
// call std::terminate and abort the Python process. A thread that cannot be started runs its chunk here instead.
template <typename Fn>
void parallel_for(int64_t n, int threads, Fn fn);

}  // namespace zoo

#include <exception>
#include <thread>
#include <vector>

template <typename Fn>
void zoo::parallel_for(int64_t n, int threads, Fn fn) {
  threads = clamp_threads(threads, n);
  if (threads == 1) {
    fn(int64_t{0}, n);
    return;
  }
  std::vector<std::exception_ptr> errors(threads);
  auto run = [&](int t, int64_t b, int64_t e) noexcept {
    try {
      fn(b, e);
    } catch (...) {
      errors[t] = std::current_exception();
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(threads - 1);
  const int64_t chunk = (n + threads - 1) / threads;
  for (int t = 1; t < threads; ++t) {
    const int64_t b = t * chunk, e = std::min(n, b + chunk);
    if (b >= e) break;
    try {
      pool.emplace_back(run, t, b, e);
    } catch (...) {  // std::system_error (thread limit) or bad_alloc: slower, but the same result
      run(t, b, e);
    }
  }
  run(0, int64_t{0}, std::min(n, chunk));
  for (auto& th : pool) th.join();
  for (auto& err : errors)
    if (err) std::rethrow_exception(err);
}
