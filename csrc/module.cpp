// pybind11 bindings: argument checking and GIL release only. Policy lives in zoo/data/native.py.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdio>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "augment.hpp"
#include "decode.hpp"

namespace py = pybind11;
using u8array = py::array_t<uint8_t, py::array::c_style>;

namespace {

template <typename T>
T* mutable_ptr(py::array& a, const char* name) {
  if (!a.writeable()) throw std::invalid_argument(std::string(name) + " is read-only");
  if (!(a.flags() & py::array::c_style)) throw std::invalid_argument(std::string(name) + " must be C-contiguous");
  if (!py::isinstance<py::array_t<T>>(a)) throw std::invalid_argument(std::string(name) + " has the wrong dtype");
  return static_cast<T*>(a.mutable_data());
}

template <typename T>
const T* opt_ptr(const py::object& o, int64_t batch, const char* name) {
  if (o.is_none()) return nullptr;
  auto arr = o.cast<py::array_t<T, py::array::c_style>>();
  if (arr.ndim() != 1 || arr.shape(0) != batch)
    throw std::invalid_argument(std::string(name) + " must have shape (batch,)");
  return arr.data();
}

bool read_file(const std::string& path, std::vector<uint8_t>& buf) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return false;
  buf.clear();
  uint8_t chunk[1 << 16];
  size_t n;
  while ((n = std::fread(chunk, 1, sizeof chunk, f)) > 0) buf.insert(buf.end(), chunk, chunk + n);
  const bool ok = !std::ferror(f);
  std::fclose(f);
  return ok;
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
    return d;
  });

  m.def(
      "decode",
      [](py::bytes data, u8array out) {
        std::string_view view = data;
        if (out.ndim() != 3) throw std::invalid_argument("out must be H x W x C");
        auto* dst = out.mutable_data();
        const int h = out.shape(0), w = out.shape(1), c = out.shape(2);
        py::gil_scoped_release release;
        return zoo::decode(reinterpret_cast<const uint8_t*>(view.data()), view.size(), dst, h, w, c);
      },
      py::arg("data"), py::arg("out"), "Decode one JPEG/PNG into out (H x W x C uint8); returns a status code.");

  m.def(
      "decode_files",
      [](const std::vector<std::string>& paths, py::array out, int threads) {
        auto* dst = mutable_ptr<uint8_t>(out, "out");
        if (out.ndim() != 4 || out.shape(0) != static_cast<py::ssize_t>(paths.size()))
          throw std::invalid_argument("out must be N x H x W x C with N = len(paths)");
        const int h = out.shape(1), w = out.shape(2), c = out.shape(3);
        const size_t item = static_cast<size_t>(h) * w * c;
        py::array_t<int32_t> status(paths.size());
        int32_t* st = status.mutable_data();
        {
          py::gil_scoped_release release;
          zoo::parallel_for(static_cast<int64_t>(paths.size()), threads, [&](int64_t b, int64_t e) {
            std::vector<uint8_t> buf;
            for (int64_t i = b; i < e; ++i) {
              if (!read_file(paths[i], buf)) {
                st[i] = zoo::kIoError;
                continue;
              }
              st[i] = zoo::decode(buf.data(), buf.size(), dst + i * item, h, w, c);
            }
          });
        }
        return status;
      },
      py::arg("paths"), py::arg("out"), py::arg("threads"),
      "Read and decode files into out (N x H x W x C uint8) on `threads` threads; returns status codes.");

  m.def(
      "channel_histogram",
      [](u8array images, int threads) {
        if (images.ndim() < 1) throw std::invalid_argument("images must have a channel axis");
        const int64_t c = images.shape(images.ndim() - 1);
        const int64_t pixels = c ? images.size() / c : 0;
        const uint8_t* src = images.data();
        std::vector<std::vector<int64_t>> partial(std::max(1, threads), std::vector<int64_t>(c * 256, 0));
        {
          py::gil_scoped_release release;
          // Each thread fills its own histogram over a contiguous range of pixels; summed below.
          const int64_t chunk = (pixels + partial.size() - 1) / partial.size();
          zoo::parallel_for(static_cast<int64_t>(partial.size()), threads, [&](int64_t b, int64_t e) {
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
      [](u8array src, py::array_t<int64_t, py::array::c_style> index, py::object crop_y, py::object crop_x,
         py::object flip, int pad, int out_h, int out_w, py::object cut_y, py::object cut_x, int cut,
         py::object lut, bool channels_last, py::array out, int threads) {
        if (src.ndim() != 4) throw std::invalid_argument("src must be N x H x W x C");
        if (index.ndim() != 1) throw std::invalid_argument("index must be 1-D");
        zoo::GatherArgs a;
        a.src = src.data();
        a.n = src.shape(0), a.h = src.shape(1), a.w = src.shape(2), a.c = src.shape(3);
        a.batch = index.shape(0);
        a.index = index.data();
        for (int64_t i = 0; i < a.batch; ++i)
          if (a.index[i] < 0 || a.index[i] >= a.n) throw py::index_error("sample index out of range");
        a.crop_y = opt_ptr<int32_t>(crop_y, a.batch, "crop_y");
        a.crop_x = opt_ptr<int32_t>(crop_x, a.batch, "crop_x");
        a.flip = opt_ptr<uint8_t>(flip, a.batch, "flip");
        a.pad = pad, a.out_h = out_h, a.out_w = out_w, a.cut = cut;
        if ((a.crop_y == nullptr) != (a.crop_x == nullptr)) throw std::invalid_argument("give both crop_y and crop_x");
        if (pad < 0 || out_h <= 0 || out_w <= 0) throw std::invalid_argument("bad pad or output size");
        if (a.crop_y)
          for (int64_t i = 0; i < a.batch; ++i)
            if (a.crop_y[i] < 0 || a.crop_x[i] < 0 || a.crop_y[i] + out_h > a.h + 2 * pad ||
                a.crop_x[i] + out_w > a.w + 2 * pad)
              throw py::index_error("crop window outside the padded image");
        if (cut > 0) {
          a.cut_y = opt_ptr<int32_t>(cut_y, a.batch, "cut_y");
          a.cut_x = opt_ptr<int32_t>(cut_x, a.batch, "cut_x");
          if (!a.cut_y || !a.cut_x) throw std::invalid_argument("cutout needs cut_y and cut_x");
        }
        a.channels_last = channels_last;
        const int64_t need = a.batch * out_h * out_w * a.c;
        if (out.size() != need) throw std::invalid_argument("out has the wrong number of elements");
        if (lut.is_none()) {
          auto* dst = mutable_ptr<uint8_t>(out, "out");
          py::gil_scoped_release release;
          zoo::gather_u8(a, dst, threads);
        } else {
          auto table = lut.cast<py::array_t<float, py::array::c_style>>();
          if (table.size() != a.c * 256) throw std::invalid_argument("lut must be C x 256 float32");
          a.lut = table.data();
          auto* dst = mutable_ptr<float>(out, "out");
          py::gil_scoped_release release;
          zoo::gather_f32(a, dst, threads);
        }
      },
      py::arg("src"), py::arg("index"), py::arg("crop_y"), py::arg("crop_x"), py::arg("flip"), py::arg("pad"),
      py::arg("out_h"), py::arg("out_w"), py::arg("cut_y"), py::arg("cut_x"), py::arg("cut"), py::arg("lut"),
      py::arg("channels_last"), py::arg("out"), py::arg("threads"),
      "Gather src[index] with crop/flip/cutout into out (float32 through lut, or uint8 when lut is None).");
}
