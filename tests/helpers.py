"""Generators of small files in each official format, and of cached splits."""

from __future__ import annotations

import gzip
import json
import pickle
from pathlib import Path

import numpy as np

CLASSES10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def rand_images(n: int, size: int, chans: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size, size, chans), dtype=np.uint8)


def write_idx(path: Path, arr: np.ndarray, *, gz: bool = False) -> Path:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def write_mnist(root: Path, n_train=200, n_test=100, gz=False):
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for prefix, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        imgs = rand_images(n, 28, 1, seed)[..., 0]
        labels = np.arange(n) % 10
        write_idx(root / f"{prefix}-images-idx3-ubyte", imgs, gz=gz)
        write_idx(root / f"{prefix}-labels-idx1-ubyte", labels.astype(np.uint8), gz=gz)
        out[prefix] = (imgs, labels)
    return out


def _dump(path: Path, obj) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=2))


def write_cifar10(root: Path, n_per_batch=20):
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)
    _dump(d / "batches.meta", {b"label_names": [c.encode() for c in CLASSES10]})
    all_imgs = []
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        imgs = rand_images(n_per_batch, 32, 3, i)
        labels = [int(v) for v in np.arange(n_per_batch) % 10]
        _dump(d / name, {b"data": imgs.transpose(0, 3, 1, 2).reshape(n_per_batch, -1), b"labels": labels})
        all_imgs.append((imgs, labels))
    return all_imgs


def write_cifar100(root: Path, n=30):
    d = root / "cifar-100-python"
    d.mkdir(parents=True, exist_ok=True)
    from zoo.data.specs import CIFAR100_CLASSES

    fine = list(CIFAR100_CLASSES)  # the published names: ingest checks them under the name cifar100
    _dump(d / "meta", {b"fine_label_names": [c.encode() for c in fine],
                       b"coarse_label_names": [f"super{i}".encode() for i in range(20)]})
    out = {}
    for i, split in enumerate(("train", "test")):
        imgs = rand_images(n, 32, 3, 10 + i)
        f = [int(v) for v in np.arange(n) % 100]
        _dump(d / split, {b"data": imgs.transpose(0, 3, 1, 2).reshape(n, -1), b"fine_labels": f,
                          b"coarse_labels": [v // 5 for v in f]})
        out[split] = (imgs, f)
    return out


def write_stl10(root: Path, n=20):
    d = root / "stl10_binary"
    d.mkdir(parents=True, exist_ok=True)
    names = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
    (d / "class_names.txt").write_text("\n".join(names) + "\n")
    out = {}
    for i, split in enumerate(("train", "test")):
        imgs = rand_images(n, 96, 3, 20 + i)
        labels = (np.arange(n) % 10 + 1).astype(np.uint8)
        imgs.transpose(0, 3, 2, 1).tofile(d / f"{split}_X.bin")  # column-major, as the official files
        labels.tofile(d / f"{split}_y.bin")
        out[split] = (imgs, labels - 1)
    return out


def write_image_folder(root: Path, n_per_class=3, size=32, fmt="PNG", classes=None, splits=("train", "test"),
                       mode="RGB"):
    from PIL import Image

    classes = classes or CLASSES10
    ext = {"PNG": "png", "JPEG": "jpg"}[fmt]
    out = {}
    for si, split in enumerate(splits):
        imgs = []
        for ci, c in enumerate(classes):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for k in range(n_per_class):
                arr = rand_images(1, size, 3 if mode != "L" else 1, seed=si * 100000 + ci * 1000 + k)[0]
                im = Image.fromarray(arr[..., 0] if mode == "L" else arr)
                im.save(root / split / c / f"{k:04d}.{ext}", fmt, **({"quality": 90} if fmt == "JPEG" else {}))
                imgs.append((root / split / c / f"{k:04d}.{ext}", ci))
        out[split] = imgs
    return out


def make_cached_split(dataset: str, n=512, size=32, chans=3, split="train", num_classes=10, seed=0):
    """Write a split straight into the cache (ZOO_DATA) and open it."""
    from zoo.data.cache import CACHE_VERSION, channel_stats, open_split, split_dir

    d = split_dir(dataset, split)
    d.mkdir(parents=True, exist_ok=True)
    imgs = rand_images(n, size, chans, seed)
    # Make the labels learnable: class = brightness bucket of the image.
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, n)
    imgs = (imgs // 4 + (labels * (192 // num_classes))[:, None, None, None]).astype(np.uint8)
    np.save(d / "images.npy", imgs)
    np.save(d / "labels.npy", labels.astype(np.int64))
    mean, std = channel_stats(imgs)
    meta = {"cache_version": CACHE_VERSION, "dataset": dataset, "split": split, "format": "generated",
            "num_samples": n, "shape": [size, size, chans], "classes": [f"c{i}" for i in range(num_classes)],
            "mean": mean, "std": std}
    (d / "meta.json").write_text(json.dumps(meta))
    return open_split(dataset, split)



class LocalHTTP:
    """Serve test responses from 127.0.0.1 (port 0: the OS picks a free one), one handler per path.

    A handler gets the request handler `h` and writes the whole response itself (status, headers, body), so a test
    can send any mix of Content-Length, chunked encoding, short or slow bodies. Serving stops when the `with`
    block ends; each connection times out after `timeout` s (5) and the threads are daemons, so nothing outlives a test."""

    def __init__(self, routes: dict, *, timeout: float = 5):
        import http.server
        import threading

        self.routes = routes
        routes_ = self.routes  # read at request time: a test may add routes while serving

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # chunked transfer encoding needs 1.1

            def setup(self):
                self.timeout = timeout  # per connection: nothing a test starts outlives it for long
                super().setup()

            def do_GET(self):
                route = routes_.get(self.path)
                if route is None:
                    self.send_error(404)
                    return
                try:
                    route(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client stopped reading (a cap or a deadline): expected in these tests

            def log_message(self, *args):  # keep pytest's output clean
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):  # a client gone mid-response is no error here
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_port}{path}"

    def __enter__(self) -> LocalHTTP:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def http_body(data: bytes, *, length: int | None | str = "auto", chunked: bool = False, piece: int = 1 << 16,
              pause: float = 0.0):
    """A LocalHTTP handler sending `data` in `piece`-byte writes, `pause` seconds apart. `length`: the
    Content-Length to announce ("auto": the true one; None: none, the end is the connection's close unless
    `chunked`)."""
    import time

    def route(h) -> None:
        h.send_response(200)
        if chunked:
            h.send_header("Transfer-Encoding", "chunked")
        elif length is not None:
            h.send_header("Content-Length", str(len(data) if length == "auto" else length))
        h.send_header("Connection", "close")
        h.end_headers()
        for i in range(0, len(data), piece):
            part = data[i:i + piece]
            h.wfile.write(b"%x\r\n%s\r\n" % (len(part), part) if chunked else part)
            h.wfile.flush()
            if pause:
                time.sleep(pause)
        if chunked:
            h.wfile.write(b"0\r\n\r\n")

    return route
