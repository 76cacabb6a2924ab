// pybind11 bindings: argument checking and GIL release only. Policy lives in zoo/data/native.py.
//
// Memory safety rules for every binding below:
//  * Array arguments are taken as py::object and refused unless they already are exactly the dtype/layout the
//    C++ reads. pybind11's converting casts (py::array_t<T> from a list, another dtype or a strided view) make a
//    temporary copy: a pointer into it dangles once the cast returns, and an output written into it is lost.
//    zoo/data/native.py converts and validates first; these checks are the last line of defence.
//  * Small per-sample arrays are copied into C++-owned vectors before they are validated, so the values checked
//    are the values used even if another Python thread writes to the array while the GIL is released.
//  * Big buffers (the dataset, the output) are read/written through the caller's arrays, which the call's
//    arguments keep alive; only sizes derived from their shapes (checked for overflow) bound the accesses.
//  * Nothing thrown on a worker thread escapes it (see zoo::parallel_for): it becomes a Python exception.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "augment.hpp"
#include "decode.hpp"

#if defined(__SANITIZE_ADDRESS__)
#define ZOO_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ZOO_ASAN 1
#endif
#endif
#ifndef ZOO_ASAN
#define ZOO_ASAN 0
#endif

namespace py = pybind11;

namespace {

// "got int16 array of shape (3,), not C-contiguous": what the caller passed, for the error message.
std::string got(const py::handle& o) {
  if (!py::isinstance<py::array>(o)) return std::string("got ") + Py_TYPE(o.ptr())->tp_name;
  auto a = py::reinterpret_borrow<py::array>(o);
  std::string s = "got " + std::string(py::str(a.dtype())) + " array of shape (";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += std::to_string(a.shape(i)) + (i + 1 < a.ndim() ? ", " : "");
  s += a.ndim() == 1 ? ",)" : ")";
  if (!(a.flags() & py::array::c_style)) s += ", not C-contiguous";
  if (!(a.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_)) s += ", not aligned";
  if (!a.writeable()) s += ", read-only";
  return s;
}

std::string dtype_name(const py::dtype& d) { return std::string(py::str(d)); }

// The argument itself when it is a C-contiguous, aligned numpy array of exactly T (and writeable if asked);
// refused otherwise (see the rules at the top).
template <typename T>
py::array exact(const py::handle& o, const char* name, bool writeable, int ndim = -1) {
  const auto want = py::dtype::of<T>();
  bool ok = py::isinstance<py::array>(o);
  if (ok) {
    auto a = py::reinterpret_borrow<py::array>(o);
    ok = a.dtype().equal(want) && a.dtype().byteorder() != '>' && (a.flags() & py::array::c_style) &&
         (a.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_) && (!writeable || a.writeable()) &&
         (ndim < 0 || a.ndim() == ndim);
  }
  if (!ok) {
    std::string what = std::string(name) + " must be a C-contiguous " + (writeable ? "writeable " : "") +
                       dtype_name(want) + " numpy array";
    if (ndim >= 0) what += " with " + std::to_string(ndim) + " dimension(s)";
    throw std::invalid_argument(what + ", " + got(o));
  }
  return py::reinterpret_borrow<py::array>(o);
}

// A copy of a 1-D T array of length `batch` (any length when batch < 0); empty for None.
template <typename T>
std::vector<T> copy_of(const py::handle& o, int64_t batch, const char* name) {
  if (o.is_none()) return {};
  py::array a = exact<T>(o, name, false, 1);
  if (batch >= 0 && a.shape(0) != batch)
    throw std::invalid_argument(std::string(name) + " must have shape (" + std::to_string(batch) + ",), " + got(a));
  const T* p = static_cast<const T*>(a.data());
  return std::vector<T>(p, p + a.shape(0));
}

int as_int(py::ssize_t v, const char* what) {
  if (v > INT_MAX) throw std::invalid_argument(std::string(what) + " is too large");
  return static_cast<int>(v);
}

// A read buffer grown with realloc rather than std::vector: no zero-fill of bytes fread overwrites anyway, and a
// failed allocation comes back as nullptr (under ASan too, with allocator_may_return_null=1, where a failing
// operator new aborts instead) and is thrown here as bad_alloc.
struct Buffer {
  uint8_t* data = nullptr;
  size_t capacity = 0;
  Buffer() = default;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { std::free(data); }
  uint8_t* reserve(size_t n) {
    if (n > capacity) {
      void* p = std::realloc(data, n);
      if (!p) throw std::bad_alloc();
      data = static_cast<uint8_t*>(p), capacity = n;
    }
    return data;
  }
};

// Reads a whole regular file of at most max_bytes into buf (its size into *size). The size is checked before
// anything is allocated, so a huge file is refused, not read; fread stops at that size if the file grows.
int32_t read_file(const std::string& path, int64_t max_bytes, Buffer& buf, size_t* size) {
  if (path.find('\0') != std::string::npos) return zoo::kIoError;  // fopen would open a truncated name
  // O_NONBLOCK: opening a FIFO (or a tty) for reading would otherwise block until a writer appears, hanging the
  // decoder thread forever; such a file is refused as not regular below. Plain files ignore the flag.
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return zoo::kIoError;
  std::unique_ptr<FILE, int (*)(FILE*)> f(::fdopen(fd, "rb"), &std::fclose);
  if (!f) {
    ::close(fd);
    return zoo::kIoError;
  }
  struct stat st;
  if (fstat(fileno(f.get()), &st) != 0 || !S_ISREG(st.st_mode)) return zoo::kIoError;
  if (st.st_size > max_bytes) return zoo::kTooLarge;
  const size_t want = static_cast<size_t>(st.st_size);
  uint8_t* p = buf.reserve(want > 0 ? want : 1);
  *size = std::fread(p, 1, want, f.get());
  return std::ferror(f.get()) ? zoo::kIoError : zoo::kOk;
}

}  // namespace

PYBIND11_MODULE(_native, m) {
  m.doc() = "zoo native core: image decoding and batch gather/augment over raw buffers";

  m.def("features", [] {
    py::dict d;
    d["jpeg"] = zoo::have_jpeg();
    d["png"] = zoo::have_png();
    d["jpeg_version"] = zoo::jpeg_version();
    d["png_version"] = zoo::png_version();
    d["hardware_threads"] = std::thread::hardware_concurrency();
    d["max_threads"] = zoo::kMaxThreads;
    d["asan"] = bool(ZOO_ASAN);  // csrc/sanitize.sh's build: the tests check they run against it
    return d;
  });

  m.def(
      "decode",
      [](py::bytes data, py::object out_obj) {
        py::array out = exact<uint8_t>(out_obj, "out", true, 3);
        std::string_view view = data;  // into the bytes object, which the argument keeps alive
        auto* dst = static_cast<uint8_t*>(out.mutable_data());
        const int h = as_int(out.shape(0), "out height"), w = as_int(out.shape(1), "out width"),
                  c = as_int(out.shape(2), "out channels");
        py::gil_scoped_release release;
        return zoo::decode(reinterpret_cast<const uint8_t*>(view.data()), view.size(), dst, h, w, c);
      },
      py::arg("data"), py::arg("out"),
      "Decode one JPEG/PNG into out (C-contiguous H x W x C uint8); returns a status code (0: out written).");

  m.def(
      "decode_files",
      [](const std::vector<std::string>& paths, py::object out_obj, int threads, int64_t max_bytes) {
        py::array out = exact<uint8_t>(out_obj, "out", true, 4);
        if (out.shape(0) != static_cast<py::ssize_t>(paths.size()))
          throw std::invalid_argument("out must be N x H x W x C with N = len(paths), " + got(out));
        auto* dst = static_cast<uint8_t*>(out.mutable_data());
        const int h = as_int(out.shape(1), "out height"), w = as_int(out.shape(2), "out width"),
                  c = as_int(out.shape(3), "out channels");
        const size_t item = static_cast<size_t>(h) * w * c;
        py::array_t<int32_t> status(paths.size());
        int32_t* st = status.mutable_data();
        // The first file (lowest index) whose decoding threw, and why: raised below, naming the file.
        std::mutex mu;
        int64_t failed = -1;
        std::string why;
        auto fail = [&](int64_t i, const char* what) {
          std::lock_guard<std::mutex> lock(mu);
          if (failed < 0 || i < failed) failed = i, why = what;
        };
        {
          py::gil_scoped_release release;
          zoo::parallel_for(static_cast<int64_t>(paths.size()), threads, [&](int64_t b, int64_t e) {
            Buffer buf;
            for (int64_t i = b; i < e; ++i) {
              st[i] = zoo::kIoError;
              try {
                size_t size = 0;
                const int32_t r = read_file(paths[i], max_bytes, buf, &size);
                st[i] = r != zoo::kOk ? r : zoo::decode(buf.data, size, dst + i * item, h, w, c);
              } catch (const std::bad_alloc&) {
                fail(i, "out of memory while reading it");
              } catch (const std::exception& ex) {
                fail(i, ex.what());
              } catch (...) {
                fail(i, "unknown C++ exception");
              }
            }
          });
        }
        if (failed >= 0) throw std::runtime_error(paths[failed] + ": " + why);
        return status;
      },
      py::arg("paths"), py::arg("out"), py::arg("threads"), py::arg("max_bytes"),
      "Read and decode files (each at most max_bytes) into out (N x H x W x C uint8) on `threads` threads; "
      "returns status codes. An exception while decoding a file raises RuntimeError naming it.");

  m.def(
      "channel_histogram",
      [](py::object images_obj, int threads) {
        py::array images = exact<uint8_t>(images_obj, "images", false);
        if (images.ndim() < 1) throw std::invalid_argument("images must have a channel axis, " + got(images));
        const int64_t c = images.shape(images.ndim() - 1);
        const int64_t pixels = c ? images.size() / c : 0;
        const uint8_t* src = static_cast<const uint8_t*>(images.data());
        // One histogram per thread (clamped: the count sizes an allocation here, not only the thread pool).
        const int parts = zoo::clamp_threads(threads, std::max<int64_t>(1, pixels));
        std::vector<std::vector<int64_t>> partial(parts, std::vector<int64_t>(c * 256, 0));
        {
          py::gil_scoped_release release;
          // Each thread fills its own histogram over a contiguous range of pixels; summed below.
          const int64_t chunk = (pixels + parts - 1) / parts;
          zoo::parallel_for(parts, parts, [&](int64_t b, int64_t e) {
            for (int64_t t = b; t < e; ++t) {
              int64_t* h = partial[t].data();
              const int64_t lo = t * chunk, hi = std::min(pixels, lo + chunk);
              for (int64_t i = lo; i < hi; ++i)
                for (int64_t ch = 0; ch < c; ++ch) ++h[ch * 256 + src[i * c + ch]];
            }
          });
        }
        py::array_t<int64_t> out({c, int64_t{256}});
        int64_t* o = out.mutable_data();
        std::fill(o, o + c * 256, 0);
        for (auto& h : partial)
          for (int64_t i = 0; i < c * 256; ++i) o[i] += h[i];
        return out;
      },
      py::arg("images"), py::arg("threads"), "Per-channel 256-bin histograms of a uint8 (..., C) array.");

  m.def(
      "gather",
      [](py::object src_obj, py::object index_obj, py::object crop_y_obj, py::object crop_x_obj,
         py::object flip_obj, int pad, int out_h, int out_w, py::object cut_y_obj, py::object cut_x_obj, int cut,
         py::object lut_obj, bool channels_last, py::object out_obj, int threads) {
        py::array src = exact<uint8_t>(src_obj, "src", false, 4);
        if (index_obj.is_none()) throw std::invalid_argument("index is required");
        const std::vector<int64_t> index = copy_of<int64_t>(index_obj, -1, "index");
        zoo::GatherArgs a;
        a.src = static_cast<const uint8_t*>(src.data());
        a.n = src.shape(0), a.h = src.shape(1), a.w = src.shape(2), a.c = src.shape(3);
        a.batch = static_cast<int64_t>(index.size());
        a.index = index.data();
        for (int64_t i = 0; i < a.batch; ++i)
          if (a.index[i] < 0 || a.index[i] >= a.n)
            throw py::index_error("index[" + std::to_string(i) + "] = " + std::to_string(a.index[i]) +
                                  " is outside src's " + std::to_string(a.n) + " samples");
        const auto crop_y = copy_of<int32_t>(crop_y_obj, a.batch, "crop_y");
        const auto crop_x = copy_of<int32_t>(crop_x_obj, a.batch, "crop_x");
        const auto flip = copy_of<uint8_t>(flip_obj, a.batch, "flip");
        if (crop_y_obj.is_none() != crop_x_obj.is_none())
          throw std::invalid_argument("give both crop_y and crop_x");
        if (pad < 0 || out_h <= 0 || out_w <= 0) throw std::invalid_argument("bad pad or output size");
        a.crop_y = crop_y_obj.is_none() ? nullptr : crop_y.data();
        a.crop_x = crop_x_obj.is_none() ? nullptr : crop_x.data();
        a.flip = flip_obj.is_none() ? nullptr : flip.data();
        a.pad = pad, a.out_h = out_h, a.out_w = out_w, a.cut = cut;
        if (a.crop_y)  // 64-bit sums: int32 origins plus the output size must not overflow
          for (int64_t i = 0; i < a.batch; ++i)
            if (crop_y[i] < 0 || crop_x[i] < 0 || int64_t{crop_y[i]} + out_h > a.h + 2 * int64_t{pad} ||
                int64_t{crop_x[i]} + out_w > a.w + 2 * int64_t{pad})
              throw py::index_error("crop window " + std::to_string(i) + " is outside the padded image");
        std::vector<int32_t> cut_y, cut_x;
        if (cut > 0) {
          if (cut_y_obj.is_none() || cut_x_obj.is_none()) throw std::invalid_argument("cutout needs cut_y and cut_x");
          cut_y = copy_of<int32_t>(cut_y_obj, a.batch, "cut_y");
          cut_x = copy_of<int32_t>(cut_x_obj, a.batch, "cut_x");
          a.cut_y = cut_y.data(), a.cut_x = cut_x.data();
        }
        a.channels_last = channels_last;
        int64_t need = 0;  // overflow-checked: a wrapped product could match a small out
        if (__builtin_mul_overflow(a.batch, int64_t{out_h}, &need) || __builtin_mul_overflow(need, out_w, &need) ||
            __builtin_mul_overflow(need, a.c, &need))
          throw std::invalid_argument("output size overflows");
        std::vector<float> table;
        if (!lut_obj.is_none()) {
          py::array l = exact<float>(lut_obj, "lut", false, 2);
          if (l.shape(0) != a.c || l.shape(1) != 256)
            throw std::invalid_argument("lut must be C x 256 = (" + std::to_string(a.c) + ", 256), " + got(l));
          const float* p = static_cast<const float*>(l.data());
          table.assign(p, p + a.c * 256);
          a.lut = table.data();
        }
        py::array out = a.lut ? exact<float>(out_obj, "out", true) : exact<uint8_t>(out_obj, "out", true);
        if (out.size() != need)
          throw std::invalid_argument("out must have batch x out_h x out_w x C = " + std::to_string(need) +
                                      " elements, " + got(out));
        if (a.lut) {
          auto* dst = static_cast<float*>(out.mutable_data());
          py::gil_scoped_release release;
          zoo::gather_f32(a, dst, threads);
        } else {
          auto* dst = static_cast<uint8_t*>(out.mutable_data());
          py::gil_scoped_release release;
          zoo::gather_u8(a, dst, threads);
        }
      },
      py::arg("src"), py::arg("index"), py::arg("crop_y"), py::arg("crop_x"), py::arg("flip"), py::arg("pad"),
      py::arg("out_h"), py::arg("out_w"), py::arg("cut_y"), py::arg("cut_x"), py::arg("cut"), py::arg("lut"),
      py::arg("channels_last"), py::arg("out"), py::arg("threads"),
      "Gather src[index] with crop/flip/cutout into out (float32 through lut, or uint8 when lut is None). "
      "Arrays must already have the exact dtype and be C-contiguous: zoo.data.native.gather_native converts.");
}
