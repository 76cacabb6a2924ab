#include "decode.hpp"

#include <csetjmp>
#include <cstdio>
#include <cstring>

#ifdef ZOO_HAVE_JPEG
#include <jpeglib.h>
#endif
#ifdef ZOO_HAVE_PNG
#include <png.h>
#endif

namespace zoo {

Format sniff(const uint8_t* d, size_t n) {
  if (n >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF) return kFormatJpeg;
  static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
  if (n >= 8 && std::memcmp(d, png_sig, 8) == 0) return kFormatPng;
  return kFormatUnknown;
}

#ifdef ZOO_HAVE_JPEG
bool have_jpeg() { return true; }
const char* jpeg_version() {
#ifdef LIBJPEG_TURBO_VERSION
#define ZOO_STR2(x) #x
#define ZOO_STR(x) ZOO_STR2(x)
  return "libjpeg-turbo " ZOO_STR(LIBJPEG_TURBO_VERSION);
#else
  return "libjpeg";
#endif
}

namespace {
struct JpegError {
  jpeg_error_mgr mgr;
  jmp_buf jump;
};
void jpeg_fail(j_common_ptr cinfo) { std::longjmp(reinterpret_cast<JpegError*>(cinfo->err)->jump, 1); }
void jpeg_quiet(j_common_ptr) {}
}  // namespace

static int32_t decode_jpeg(const uint8_t* data, size_t size, uint8_t* out, int h, int w, int c) {
  jpeg_decompress_struct cinfo;
  JpegError err;
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_fail;
  err.mgr.output_message = jpeg_quiet;  // warnings are counted in num_warnings, checked below
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    return kCorrupt;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, const_cast<unsigned char*>(data), static_cast<unsigned long>(size));
  jpeg_read_header(&cinfo, TRUE);
  int32_t status = kOk;
  if (static_cast<int>(cinfo.image_width) != w || static_cast<int>(cinfo.image_height) != h) {
    status = kSizeMismatch;
  } else if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK ||
             (c == 1 && cinfo.num_components != 1)) {
    status = kUnsupportedColor;  // PIL's conversion formulas are the reference for these
  }
  if (status != kOk) {
    jpeg_destroy_decompress(&cinfo);
    return status;
  }
  cinfo.out_color_space = c == 1 ? JCS_GRAYSCALE : JCS_RGB;
  cinfo.dct_method = JDCT_ISLOW;  // same as PIL, so both paths give the same pixels
  jpeg_start_decompress(&cinfo);
  const size_t stride = static_cast<size_t>(w) * c;
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = out + static_cast<size_t>(cinfo.output_scanline) * stride;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  // libjpeg pads a truncated stream with grey and only warns: a warning means a damaged file.
  status = err.mgr.num_warnings > 0 ? kCorrupt : kOk;
  jpeg_destroy_decompress(&cinfo);
  return status;
}
#else
bool have_jpeg() { return false; }
const char* jpeg_version() { return ""; }
#endif

#ifdef ZOO_HAVE_PNG
bool have_png() { return true; }
const char* png_version() { return PNG_LIBPNG_VER_STRING; }

namespace {
struct PngSource {
  const uint8_t* data;
  size_t size;
  size_t offset;
};
void png_read_mem(png_structp png, png_bytep dst, png_size_t n) {
  auto* src = static_cast<PngSource*>(png_get_io_ptr(png));
  if (n > src->size - src->offset) png_error(png, "truncated");
  std::memcpy(dst, src->data + src->offset, n);
  src->offset += n;
}
void png_fail(png_structp png, png_const_charp) { png_longjmp(png, 1); }
void png_quiet(png_structp, png_const_charp) {}
}  // namespace

static int32_t decode_png(const uint8_t* data, size_t size, uint8_t* out, int h, int w, int c) {
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, nullptr, png_fail, png_quiet);
  if (!png) return kCorrupt;
  png_infop info = png_create_info_struct(png);
  if (!info) {
    png_destroy_read_struct(&png, nullptr, nullptr);
    return kCorrupt;
  }
  PngSource src{data, size, 0};
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    return kCorrupt;
  }
  png_set_read_fn(png, &src, png_read_mem);
  png_read_info(png, info);
  const png_uint_32 pw = png_get_image_width(png, info), ph = png_get_image_height(png, info);
  const int depth = png_get_bit_depth(png, info), color = png_get_color_type(png, info);
  const bool is_gray = (color & PNG_COLOR_MASK_COLOR) == 0;
  int32_t status = kOk;
  if (static_cast<int>(pw) != w || static_cast<int>(ph) != h) status = kSizeMismatch;
  else if (c == 1 && !is_gray) status = kUnsupportedColor;
  if (status != kOk) {
    png_destroy_read_struct(&png, &info, nullptr);
    return status;
  }
  if (depth == 16) png_set_strip_16(png);
  if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (is_gray && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);
  png_set_strip_alpha(png);
  if (c == 3 && is_gray) png_set_gray_to_rgb(png);
  const int passes = png_set_interlace_handling(png);
  png_read_update_info(png, info);
  if (png_get_channels(png, info) != c || png_get_rowbytes(png, info) != static_cast<size_t>(w) * c) {
    png_destroy_read_struct(&png, &info, nullptr);
    return kUnsupportedColor;
  }
  const size_t stride = static_cast<size_t>(w) * c;
  for (int p = 0; p < passes; ++p)
    for (int y = 0; y < h; ++y) png_read_row(png, out + y * stride, nullptr);
  png_destroy_read_struct(&png, &info, nullptr);
  return kOk;
}
#else
bool have_png() { return false; }
const char* png_version() { return ""; }
#endif

int32_t decode(const uint8_t* data, size_t size, uint8_t* out, int h, int w, int c) {
  if (h <= 0 || w <= 0 || (c != 1 && c != 3)) return kSizeMismatch;
  switch (sniff(data, size)) {
    case kFormatJpeg:
#ifdef ZOO_HAVE_JPEG
      return decode_jpeg(data, size, out, h, w, c);
#else
      return kNoCodec;
#endif
    case kFormatPng:
#ifdef ZOO_HAVE_PNG
      return decode_png(data, size, out, h, w, c);
#else
      return kNoCodec;
#endif
    default:
      return kUnknownFormat;
  }
}

}  // namespace zoo
