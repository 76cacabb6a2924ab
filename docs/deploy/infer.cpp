// Classify images with an exported zoo TorchScript model (.pt) from C++, using the libtorch inside the torch wheel.
// Images are binary PPM (P6, RGB) or PGM (P5, gray) files already at the model's input size (convert with any tool:
// `python -c "from PIL import Image; Image.open('x.jpg').convert('RGB').save('x.ppm')"`). Follows the contract stored
// in the file (zoo_meta.json, docs/deploy.md): RGB, scaled by pixel_scale, (x - mean) / std, NCHW float32; logits out.
//
//   T=$(python -c "import torch, os; print(os.path.dirname(torch.__file__))")
//   ABI=$(python -c "import torch; print(int(torch.compiled_with_cxx11_abi()))")
//   g++ -std=c++20 -O1 -D_GLIBCXX_USE_CXX11_ABI=$ABI infer.cpp -o infer -I$T/include \
//       -I$T/include/torch/csrc/api/include -L$T/lib -Wl,-rpath,$T/lib -ltorch -ltorch_cpu -lc10
//   ./infer model.pt a.ppm b.ppm      # prints: file <TAB> class index <TAB> class name <TAB> probability
#include <torch/script.h>

#include <cctype>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

// A minimal JSON reader: enough for the contract (objects, arrays, strings, numbers, true/false/null).
struct Json {
  enum Kind { Null, Bool, Number, String, Array, Object } kind = Null;
  double number = 0;
  std::string text;
  std::vector<Json> items;
  std::map<std::string, Json> fields;
  const Json& operator[](const std::string& key) const {
    auto it = fields.find(key);
    if (it == fields.end()) throw std::runtime_error("contract has no key '" + key + "'");
    return it->second;
  }
};

struct Parser {
  const std::string& s;
  size_t i = 0;
  void ws() { while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) i++; }
  char peek() { ws(); if (i >= s.size()) throw std::runtime_error("truncated JSON"); return s[i]; }
  void expect(char c) { if (peek() != c) throw std::runtime_error(std::string("JSON: expected ") + c); i++; }
  std::string str() {
    expect('"');
    std::string out;
    while (i < s.size() && s[i] != '"') {
      if (s[i] == '\\' && i + 1 < s.size()) {
        char e = s[++i];
        if (e == 'u') { out += '?'; i += 4; }  // class names are ASCII; other code points are not needed here
        else out += (e == 'n' ? '\n' : e == 't' ? '\t' : e);
      } else {
        out += s[i];
      }
      i++;
    }
    expect('"');
    return out;
  }
  Json value() {
    Json v;
    char c = peek();
    if (c == '{') {
      v.kind = Json::Object; i++;
      if (peek() == '}') { i++; return v; }
      do { std::string k = str(); expect(':'); v.fields[k] = value(); } while (peek() == ',' && ++i);
      expect('}');
    } else if (c == '[') {
      v.kind = Json::Array; i++;
      if (peek() == ']') { i++; return v; }
      do { v.items.push_back(value()); } while (peek() == ',' && ++i);
      expect(']');
    } else if (c == '"') {
      v.kind = Json::String; v.text = str();
    } else if (s.compare(i, 4, "true") == 0 || s.compare(i, 5, "false") == 0) {
      v.kind = Json::Bool; v.number = s[i] == 't'; i += s[i] == 't' ? 4 : 5;
    } else if (s.compare(i, 4, "null") == 0) {
      i += 4;
    } else {
      size_t used = 0;
      v.kind = Json::Number; v.number = std::stod(s.substr(i, 32), &used); i += used;
    }
    return v;
  }
};

// A binary PPM (P6) or PGM (P5) file, 8 bits per sample: width, height, channels and the HWC pixels.
struct Image { int w = 0, h = 0, c = 0; std::vector<unsigned char> px; };

Image read_pnm(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::string magic;
  int maxval = 0;
  Image im;
  if (!(f >> magic >> im.w >> im.h >> maxval) || (magic != "P6" && magic != "P5") || maxval != 255)
    throw std::runtime_error(path + ": not a binary 8-bit PPM (P6) or PGM (P5) file");
  f.get();  // the one whitespace byte after maxval
  im.c = magic == "P6" ? 3 : 1;
  im.px.resize(static_cast<size_t>(im.w) * im.h * im.c);
  if (!f.read(reinterpret_cast<char*>(im.px.data()), static_cast<std::streamsize>(im.px.size())))
    throw std::runtime_error(path + ": truncated pixel data");
  return im;
}

int main(int argc, char** argv) try {
  if (argc < 3) { std::cerr << "usage: infer MODEL.pt IMAGE.ppm...\n"; return 2; }
  std::unordered_map<std::string, std::string> extra{{"zoo_meta.json", ""}};
  torch::jit::Module model = torch::jit::load(argv[1], torch::kCPU, extra);
  model.eval();
  std::string text = extra["zoo_meta.json"];
  Parser parser{text};
  Json contract = parser.value();
  const int c = contract["input_size"].items[0].number, h = contract["input_size"].items[1].number,
            w = contract["input_size"].items[2].number;
  const float scale = contract["pixel_scale"].number;
  if (contract["layout"].text != "NCHW" || contract["output"].text != "logits")
    throw std::runtime_error("this program follows the NCHW-in, logits-out contract");

  const int n = argc - 2;
  torch::Tensor x = torch::empty({n, c, h, w}, torch::kFloat32);
  auto acc = x.accessor<float, 4>();
  for (int b = 0; b < n; b++) {
    Image im = read_pnm(argv[b + 2]);
    if (im.w != w || im.h != h || im.c != c)
      throw std::runtime_error(std::string(argv[b + 2]) + ": expected " + std::to_string(w) + "x" + std::to_string(h) +
                               (c == 3 ? " RGB (P6)" : " gray (P5)") + "; resize it first (bilinear, antialiased)");
    for (int k = 0; k < c; k++) {
      const float mean = contract["mean"].items[k].number, std = contract["std"].items[k].number;
      for (int y = 0; y < h; y++)
        for (int xx = 0; xx < w; xx++)  // HWC bytes in the file's RGB order -> CHW floats, normalised
          acc[b][k][y][xx] = (im.px[(static_cast<size_t>(y) * w + xx) * c + k] * scale - mean) / std;
    }
  }
  torch::NoGradGuard no_grad;
  torch::Tensor probs = model.forward({x}).toTensor().softmax(1);
  for (int b = 0; b < n; b++) {
    int64_t k = probs[b].argmax().item<int64_t>();
    std::printf("%s\t%lld\t%s\t%.4f\n", argv[b + 2], static_cast<long long>(k),
                contract["classes"].items[k].text.c_str(), probs[b][k].item<float>());
  }
  return 0;
} catch (const std::exception& e) {
  std::cerr << "error: " << e.what() << "\n";
  return 1;
}
