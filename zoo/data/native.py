"""The one Python wrapper around the C++ extension `zoo._native`, with pure-Python/torch fallbacks.

Policy (which samples, which crop, whether to flip, how to report errors) is decided here or by the
caller; the extension only computes. `gather_torch` is the reference implementation: the tests check
that the extension produces the same pixels, and the `gpu` loader runs it on the device.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import io
import os
import stat
import sys
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ZooError, suggest


def _load_extension():
    """The C++ extension, or None when it isn't built.

    $ZOO_NATIVE_LIB names another build of it to load instead (csrc/sanitize.sh's ASan/UBSan build, in
    build/asan): the venv's normal build stays in place. A file named there that doesn't load is an error, not a
    fallback: a sanitizer run that silently loaded nothing would skip every native test and pass.
    """
    path = os.environ.get("ZOO_NATIVE_LIB")
    if path:
        loader = importlib.machinery.ExtensionFileLoader("zoo._native", path)
        spec = importlib.util.spec_from_file_location("zoo._native", path, loader=loader)
        mod = importlib.util.module_from_spec(spec)
        loader.exec_module(mod)
        sys.modules["zoo._native"] = mod
        return mod
    try:
        from .. import _native as mod  # compiled: optional, so imported where its absence is handled
    except ImportError:  # built without the extension (e.g. a source checkout without compiling)
        return None
    return mod


_native = _load_extension()

# Mirrors the Status enum in csrc/decode.hpp.
OK, UNKNOWN_FORMAT, CORRUPT, SIZE_MISMATCH, UNSUPPORTED_COLOR, NO_CODEC, IO_ERROR, TOO_LARGE = range(8)

# Image files are read whole into memory; dataset images are kilobytes, so a file over this is a mistake (a video,
# an archive, a disk image in a class folder) and is refused before it is read. Tests lower it.
MAX_FILE_BYTES = 64 << 20
# More threads than this is a mistake (a typo'd --threads), never a speed-up: refused. The C++ clamps to the same.
MAX_THREADS = 256
# Crop padding and cutout side, in pixels: far above any image zoo trains on (STL-10 is 96 px), and small enough that
# the crop offsets drawn from it fit the int32 the C++ reads.
MAX_AUGMENT_PIXELS = 1 << 16

STATUS_TEXT = {
    UNKNOWN_FORMAT: "not a JPEG or PNG file",
    CORRUPT: "corrupt or truncated image data",
    SIZE_MISMATCH: "image size differs from the dataset's",
    UNSUPPORTED_COLOR: "colour format needs conversion",
    NO_CODEC: "codec not compiled in",
    IO_ERROR: "file could not be read",
    TOO_LARGE: "file larger than zoo.data.native.MAX_FILE_BYTES: not read",
}


def available() -> bool:
    return _native is not None


def features() -> dict:
    if _native is None:
        return {"native": False, "jpeg": False, "png": False}
    return {"native": True, **_native.features()}


def default_threads() -> int:
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(n, MAX_THREADS))


def check_threads(threads, name: str = "threads") -> int:
    """threads as an int in [1, MAX_THREADS]; anything else is a ZooError naming the argument."""
    if isinstance(threads, bool) or not isinstance(threads, int | np.integer) or not 1 <= threads <= MAX_THREADS:
        raise ZooError(f"{name} must be an integer from 1 to {MAX_THREADS}, got {threads!r}")
    return int(threads)


def _describe(a) -> str:
    if not isinstance(a, np.ndarray):
        return type(a).__name__
    layout = "" if a.flags.c_contiguous else ", not C-contiguous"
    return f"{a.dtype} array of shape {a.shape}{layout}{'' if a.flags.writeable else ', read-only'}"


def _check_image_array(a, name: str, ndim: int, writeable: bool = True) -> np.ndarray:
    """An output (or dataset) image array must already be exactly right: a converted copy would be written instead
    of it (or, for a dataset, copied on every call)."""
    ok = (isinstance(a, np.ndarray) and a.dtype == np.uint8 and a.ndim == ndim and a.flags.c_contiguous
          and a.flags.aligned and (a.flags.writeable or not writeable))
    if not ok:
        dims = " x ".join(["N", "H", "W", "C"][4 - ndim :])
        raise ZooError(f"{name} must be a C-contiguous{' writeable' if writeable else ''} uint8 numpy array "
                       f"({dims}), got {_describe(a)}")
    if a.shape[-1] not in (1, 3):
        raise ZooError(f"{name} must have 1 or 3 channels (last axis), got shape {a.shape}")
    return a


def _int_array(v, dtype, name: str, length: int | None = None, allow_bool: bool = False) -> np.ndarray | None:
    """v (a list, any integer dtype, a strided view) as a contiguous 1-D array of dtype, or a ZooError naming it.

    The result is a new array when v isn't already right: the caller keeps it in a local for the whole native
    call, so the C++ never reads a temporary."""
    if v is None:
        return None
    a = np.asarray(v)
    if a.size == 0 and a.ndim == 1:
        a = a.astype(dtype)
    if a.dtype.kind not in ("iub" if allow_bool else "iu") or a.ndim != 1:
        raise ZooError(f"{name} must be a 1-D array of integers, got {_describe(a)}")
    if length is not None and len(a) != length:
        raise ZooError(f"{name} must have {length} entries (one per sample), got {len(a)}")
    if not np.can_cast(a.dtype, dtype, "safe") and a.size:  # narrowing: values that don't fit would wrap
        info = np.iinfo(dtype)
        if a.min() < info.min or a.max() > info.max:
            raise ZooError(f"{name} has values outside {np.dtype(dtype).name}: {a.min()}..{a.max()}")
    return np.ascontiguousarray(a, dtype)


def decode_pil(data: bytes, h: int, w: int, c: int) -> tuple[int, np.ndarray | None]:
    """PIL decode with the same conventions as the C++ path (alpha dropped, 16-bit reduced, CMYK converted)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.size != (w, h):
                return SIZE_MISMATCH, None
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.uint32) >> 8  # 16-bit grayscale: keep the high byte
                im = Image.fromarray(arr.astype(np.uint8), "L")
            im = im.convert("L" if c == 1 else "RGB")
            out = np.asarray(im, dtype=np.uint8).reshape(h, w, c)
            return OK, out
    except UnidentifiedImageError:
        return UNKNOWN_FORMAT, None
    except (OSError, SyntaxError, ValueError):
        return CORRUPT, None


def decode(data: bytes, out: np.ndarray) -> int:
    """Decode one JPEG/PNG into out (C-contiguous H x W x C uint8, C 1 or 3); returns a status code, OK only
    when out was written. Native first, PIL for what it can't handle (as in decode_files)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ZooError(f"data must be bytes, got {type(data).__name__}")
    _check_image_array(out, "out", 3)
    data = bytes(data)
    if _native is not None:
        status = _native.decode(data, out)
        if status not in (NO_CODEC, UNSUPPORTED_COLOR):
            return status
    status, img = decode_pil(data, *out.shape)
    if img is not None:
        out[...] = img
    return status


def _read_capped(path: str, max_bytes: int) -> tuple[int, bytes | None]:
    try:
        # O_NONBLOCK: a FIFO would block open() until a writer came; it (like any non-regular file) is refused below.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
        with open(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                return IO_ERROR, None
            if st.st_size > max_bytes:
                return TOO_LARGE, None
            data = f.read(max_bytes + 1)  # bounded even if the file grew since the size check
    except (OSError, ValueError):
        return IO_ERROR, None
    return (TOO_LARGE, None) if len(data) > max_bytes else (OK, data)


def decode_files(paths: list[str], out: np.ndarray, threads: int | None = None,
                 max_bytes: int | None = None) -> np.ndarray:
    """Decode image files into out (N x H x W x C uint8); returns per-file status codes.

    Native decoding first; files it cannot handle (no codec compiled in, CMYK, RGB->gray, ...) go
    through PIL so that every image the dataset accepts decodes the same way on every install.
    A file over max_bytes (default MAX_FILE_BYTES) gets TOO_LARGE without being read. An exception inside the
    native decoder (e.g. out of memory) is a ZooError naming the file. threads: None or 0 for every core (at most
    MAX_THREADS); more than MAX_THREADS is a ZooError.
    """
    paths = [os.fspath(p) for p in paths]
    _check_image_array(out, "out", 4)
    n, h, w, c = out.shape
    if n != len(paths):
        raise ZooError(f"out holds {n} images for {len(paths)} paths")
    threads = check_threads(threads or default_threads())
    if max_bytes is None:
        max_bytes = MAX_FILE_BYTES
    elif isinstance(max_bytes, bool) or not isinstance(max_bytes, int | np.integer) or not 0 <= max_bytes < 2**63:
        raise ZooError(f"max_bytes must be an integer from 0 to 2**63-1 (bytes), got {max_bytes!r}")
    max_bytes = int(max_bytes)
    if _native is not None:
        try:
            status = _native.decode_files(paths, out, threads, max_bytes)
        except (RuntimeError, MemoryError) as e:  # the C++ message starts with the file's path
            raise ZooError(f"cannot decode {e}") from None
    else:
        status = np.full(n, NO_CODEC, np.int32)
    for i in np.flatnonzero((status == NO_CODEC) | (status == UNSUPPORTED_COLOR)):
        status[i], data = _read_capped(paths[i], max_bytes)
        if data is None:
            continue
        status[i], img = decode_pil(data, h, w, c)
        if img is not None:
            out[i] = img
    return status


def channel_histogram(images: np.ndarray) -> np.ndarray:
    """C x 256 pixel-value counts per channel of a uint8 (..., C) array (C++ threads, numpy fallback)."""
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim < 1:
        raise ZooError(f"images must be a uint8 numpy array with a channel axis, got {_describe(images)}")
    if _native is not None:
        contiguous = np.ascontiguousarray(images)  # a local: alive for the whole native call
        return _native.channel_histogram(contiguous, default_threads())
    c = images.shape[-1]
    flat = images.reshape(-1, c)
    offsets = (np.arange(c, dtype=np.uint16) * 256)[None, :]
    hist = np.zeros(256 * c, np.int64)
    for s in range(0, len(flat), 1 << 22):
        hist += np.bincount((flat[s : s + (1 << 22)] + offsets).ravel(), minlength=256 * c)
    return hist.reshape(c, 256)


@dataclass(frozen=True)
class Augment:
    """Training-time augmentation. Random choices are drawn in Python (numpy), applied by C++ or torch."""

    crop_pad: int = 0  # random crop of the original size after zero padding by this much (0: off)
    flip: bool = False  # random horizontal flip
    cutout: int = 0  # side of a zeroed square at a random centre (0: off)
    brightness: float = 0.0  # gpu/torch backends only: factor drawn from [1-b, 1+b]
    contrast: float = 0.0  # gpu/torch backends only

    PRESETS = {
        "none": {},
        "flip": {"flip": True},
        "crop": {"crop_pad": 4},
        "crop_flip": {"crop_pad": 4, "flip": True},
        "crop_flip_cutout": {"crop_pad": 4, "flip": True, "cutout": 8},
        "mnist": {"crop_pad": 2},
    }

    def __post_init__(self):
        """Bad values fail here, naming the field: a negative cutout or crop used to mean "off" (or a numpy error
        mid-epoch), and a NaN or negative jitter factor failed inside torchvision or poisoned every batch."""
        for k in ("crop_pad", "cutout"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or not 0 <= v <= MAX_AUGMENT_PIXELS:
                raise ZooError(f"augment {k} must be an integer from 0 to {MAX_AUGMENT_PIXELS} (pixels), got {v!r}")
            object.__setattr__(self, k, int(v))
        if not isinstance(self.flip, bool | np.bool_):
            raise ZooError(f"augment flip must be true or false, got {self.flip!r}")
        object.__setattr__(self, "flip", bool(self.flip))
        for k in ("brightness", "contrast"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating) or not 0 <= v <= 1:
                raise ZooError(f"augment {k} must be a number in [0, 1] (a factor drawn from [1-{k}, 1+{k}]), "
                               f"got {v!r}")  # NaN fails 0 <= v
            object.__setattr__(self, k, float(v))

    @classmethod
    def parse(cls, spec) -> Augment:
        if spec is None or spec is False:
            return cls()
        if isinstance(spec, cls):
            return spec
        if isinstance(spec, dict):
            unknown = sorted(map(str, set(spec) - set(cls.__dataclass_fields__)))
            if unknown:
                raise ZooError(f"augment: unknown option(s) {', '.join(unknown)}; options: "
                               f"{', '.join(cls.__dataclass_fields__)}")
            return cls(**spec)
        if not isinstance(spec, str) or spec not in cls.PRESETS:
            raise ZooError(f"unknown augment {spec!r}; {suggest(str(spec), cls.PRESETS, 'presets')}")
        return cls(**cls.PRESETS[spec])

    @property
    def jitter(self) -> bool:
        return bool(self.brightness or self.contrast)

    def sample(self, n: int, h: int, w: int, rng: np.random.Generator) -> dict[str, np.ndarray | None]:
        """Per-sample parameters for n images of size h x w (output size = input size)."""
        p: dict[str, np.ndarray | None] = {"crop_y": None, "crop_x": None, "flip": None, "cut_y": None, "cut_x": None}
        if self.crop_pad:
            p["crop_y"] = rng.integers(0, 2 * self.crop_pad + 1, n, dtype=np.int32)
            p["crop_x"] = rng.integers(0, 2 * self.crop_pad + 1, n, dtype=np.int32)
        if self.flip:
            p["flip"] = rng.integers(0, 2, n, dtype=np.uint8)
        if self.cutout:
            p["cut_y"] = (rng.integers(0, h, n) - self.cutout // 2).astype(np.int32)
            p["cut_x"] = (rng.integers(0, w, n) - self.cutout // 2).astype(np.int32)
        if self.brightness:
            p["brightness"] = rng.uniform(1 - self.brightness, 1 + self.brightness, n).astype(np.float32)
        if self.contrast:
            p["contrast"] = rng.uniform(1 - self.contrast, 1 + self.contrast, n).astype(np.float32)
        return p


def make_lut(mean, std) -> np.ndarray:
    """C x 256 float32 table: the normalised value of pixel v in channel c."""
    v = np.arange(256, dtype=np.float64) / 255.0
    return ((v[None, :] - np.asarray(mean, np.float64)[:, None]) / np.asarray(std, np.float64)[:, None]).astype(
        np.float32
    )


def gather_native(src: np.ndarray, index, params: dict, pad: int, cutout: int,
                  lut: np.ndarray | None, channels_last: bool, out: torch.Tensor, threads: int) -> torch.Tensor:
    """C++ gather into `out` (a preallocated, possibly pinned, B x H x W x C or B x C x H x W tensor).

    index and the per-sample params may be lists, any integer dtype or strided views: they are converted here
    (into locals that outlive the native call). src (the dataset) and out must already be exactly right, since
    a converted copy would be re-made every batch, or written instead of out. Bad arguments are ZooErrors.
    """
    _check_image_array(src, "src", 4, writeable=False)
    _, h, w, c = src.shape
    idx = _int_array(index, np.int64, "index")
    b = len(idx)
    crop_y = _int_array(params.get("crop_y"), np.int32, "crop_y", b)
    crop_x = _int_array(params.get("crop_x"), np.int32, "crop_x", b)
    flip = _int_array(params.get("flip"), np.uint8, "flip", b, allow_bool=True)
    cut_y = _int_array(params.get("cut_y"), np.int32, "cut_y", b) if cutout else None
    cut_x = _int_array(params.get("cut_x"), np.int32, "cut_x", b) if cutout else None
    if lut is not None:
        try:
            lut = np.ascontiguousarray(lut, np.float32)
        except (ValueError, TypeError) as e:
            raise ZooError(f"lut must be a C x 256 array of numbers, got {_describe(lut)} ({e})") from None
        if lut.shape != (c, 256):
            raise ZooError(f"lut must be C x 256 = ({c}, 256), got shape {lut.shape}")
    want = (b, h, w, c) if channels_last else (b, c, h, w)
    dtype = torch.uint8 if lut is None else torch.float32
    if (not isinstance(out, torch.Tensor) or out.device.type != "cpu" or out.dtype != dtype
            or tuple(out.shape) != want or not out.is_contiguous()):
        got = (f"{out.dtype} {tuple(out.shape)} on {out.device}, contiguous={out.is_contiguous()}"
               if isinstance(out, torch.Tensor) else type(out).__name__)
        raise ZooError(f"out must be a contiguous CPU {dtype} tensor of shape {want}, got {got}")
    threads = check_threads(threads)
    try:
        _native.gather(src, idx, crop_y, crop_x, flip, pad, h, w, cut_y, cut_x, cutout, lut, channels_last,
                       out.detach().numpy(), threads)
    except (ValueError, IndexError, TypeError) as e:  # value checks (index, crop windows) done in C++
        raise ZooError(f"gather: {e}") from None
    return out.permute(0, 3, 1, 2) if channels_last else out


def gather_torch(src: torch.Tensor, index: torch.Tensor, params: dict, pad: int, cutout: int,
                 lut: torch.Tensor | None, channels_last: bool) -> torch.Tensor:
    """Batched reference of the C++ gather, on any device: no per-sample Python.

    src is N x H x W x C uint8; returns B x C x H x W (channels_last memory format when asked),
    float32 through lut or uint8 when lut is None.
    """
    dev = src.device
    x = src[index]  # B x H x W x C
    b, h, w, c = x.shape

    def arg(name):
        v = params.get(name)
        return None if v is None else torch.as_tensor(v, device=dev)

    crop_y, crop_x, flip = arg("crop_y"), arg("crop_x"), arg("flip")
    if crop_y is not None or flip is not None:
        if pad:
            x = F.pad(x, (0, 0, pad, pad, pad, pad))
        origin_y = crop_y.long()[:, None] if crop_y is not None else torch.full((b, 1), pad, device=dev)
        origin_x = crop_x.long()[:, None] if crop_x is not None else torch.full((b, 1), pad, device=dev)
        rows = origin_y + torch.arange(h, device=dev)  # B x H padded-image rows
        cols = origin_x + torch.arange(w, device=dev)  # B x W padded-image columns
        if flip is not None:
            cols = torch.where(flip.bool()[:, None], cols.flip(1), cols)
        x = x[torch.arange(b, device=dev)[:, None, None], rows[:, :, None], cols[:, None, :]]
    if cutout:
        cy, cx = arg("cut_y").long(), arg("cut_x").long()
        ys, xs = torch.arange(h, device=dev), torch.arange(w, device=dev)
        my = (ys[None] >= cy[:, None]) & (ys[None] < cy[:, None] + cutout)
        mx = (xs[None] >= cx[:, None]) & (xs[None] < cx[:, None] + cutout)
        x = x.masked_fill((my[:, :, None] & mx[:, None, :])[..., None], 0)
    if lut is not None:
        x = lut[torch.arange(c, device=dev), x.long()]  # table lookup: same values as the C++ path
    x = x.permute(0, 3, 1, 2)
    return x if channels_last else x.contiguous()


def color_jitter(x: torch.Tensor, params: dict) -> torch.Tensor:
    """Batched brightness/contrast on float pixels in [0, 1] (B x C x H x W)."""
    if params.get("brightness") is not None:
        x = x * torch.as_tensor(params["brightness"], device=x.device).view(-1, 1, 1, 1)
    if params.get("contrast") is not None:
        f = torch.as_tensor(params["contrast"], device=x.device).view(-1, 1, 1, 1)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * f + mean
    return x.clamp_(0, 1)
