#!/usr/bin/env python
"""Hostile-input sweep over zoo's trust boundaries (issues #20 and #21).

    python tests/sweep/hostile_sweep.py --out DIR [--only CLASS[,CLASS]] [--quick]

Not collected by pytest (the file name does not start with test_). Every case runs in its own subprocess, with a
timeout, in a private environment under DIR/work (ZOO_HOME, ZOO_DATA, HOME, TMPDIR, cwd all inside it; downloads
only from a local http.server on 127.0.0.1; proxies point at a dead local port so nothing else is reachable).
For each case it records the command, rc, whether stderr holds a traceback, whether a signal killed it, files
created / modified / deleted outside the folders the case may write, new leftover temp files (`*.tmp*`, `.old-*`,
`.unpack-*`), marker files a payload would create, and (where the case says what the right answer is) whether an
rc 0 came with a wrong result. DIR/summary.json and DIR/summary.md hold the counts per class and every failure.

Expectations: "refuse" = one clean error (rc 2, no traceback); "ok" = rc 0 (and the case's check passes);
"any" = rc 0 or 2, no traceback, and the check passes when rc is 0; "nocrash" (zoo._native, a private module) =
no signal, no hang, no traceback other than the Python exception the binding raises.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import pickle
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from tests.helpers import LocalHTTP  # noqa: E402  (after the path that finds it)

PY = sys.executable
TEMP_MARKERS = (".tmp", ".old-", ".unpack-")
MARK = "PWNED"


# ----------------------------------------------------------------------------------------------- local HTTP server
def body(data: bytes, length="auto", status=200, headers=(), pause=0.0, piece=1 << 16, drop_after=None):
    def route(h):
        h.send_response(status)
        if length is not None:
            h.send_header("Content-Length", str(len(data) if length == "auto" else length))
        for k, v in headers:
            h.send_header(k, v)
        h.send_header("Connection", "close")
        h.end_headers()
        sent = 0
        for i in range(0, len(data), piece):
            if drop_after is not None and sent >= drop_after:
                h.close_connection = True
                return
            h.wfile.write(data[i:i + piece])
            h.wfile.flush()
            sent += piece
            if pause:
                time.sleep(pause)

    return route


def redirect(location: str, status=302):
    def route(h):
        h.send_response(status)
        h.send_header("Location", location)
        h.send_header("Content-Length", "0")
        h.send_header("Connection", "close")
        h.end_headers()

    return route


# ----------------------------------------------------------------------------------------------- fork server
# Importing torch costs seconds per process; on a loaded 2-core machine that dominated the sweep. The server imports
# zoo, torch, onnxruntime... once, then forks one child per case: each case is still its own process (a segfault or
# abort is seen as a signal, a hang is killed), with its own environment, cwd, rlimit and stdout/stderr files.
# `--no-fork` runs every case as a fresh `python` instead.
FORK_SERVER = r"""
import json, os, resource, signal, sys, time, traceback
import numpy, torch, PIL.Image, safetensors.torch
import zoo, zoo.cli, zoo.data, zoo.data.native, zoo.weights, zoo.evaluation, zoo.report
import export, export.__main__
try:
    import onnx, onnxruntime
except ImportError:
    pass

def child(req):
    os.environ.clear()
    os.environ.update(req["env"])
    os.chdir(req["cwd"])
    resource.setrlimit(resource.RLIMIT_AS, (12 << 30, 12 << 30))
    fo = os.open(req["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    fe = os.open(req["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    nul = os.open(os.devnull, os.O_RDONLY)
    os.dup2(nul, 0); os.dup2(fo, 1); os.dup2(fe, 2)
    sys.stdin = open(0, closefd=False)
    sys.stdout = open(1, "w", closefd=False, buffering=1)
    sys.stderr = open(2, "w", closefd=False, buffering=1)
    argv = req["argv"]
    rc = 0
    try:
        if argv[1:3] == ["-m", "zoo"]:
            sys.argv = ["python -m zoo", *argv[3:]]
            rc = zoo.cli.main(argv[3:])
        elif argv[1:3] == ["-m", "export"]:
            sys.argv = ["python -m export", *argv[3:]]
            rc = export.__main__.main(argv[3:])
        elif argv[1] == "-c":
            sys.argv = ["-c"]
            exec(compile(argv[2], "<string>", "exec"), {"__name__": "__main__"})
        else:
            raise SystemExit(f"fork server: cannot run {argv}")
    except SystemExit as e:
        code = e.code
        rc = code if isinstance(code, int) else (0 if code is None else (print(code, file=sys.stderr), 1)[1])
    except BaseException:
        traceback.print_exc()
        rc = 1
    try:
        sys.stdout.flush(); sys.stderr.flush()
    except Exception:
        pass
    os._exit(rc if isinstance(rc, int) else 1)

out = sys.stdout
for line in sys.stdin:
    req = json.loads(line)
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            child(req)
        finally:
            os._exit(99)
    end = time.monotonic() + req["timeout"]
    status = None
    while time.monotonic() < end:
        got, st = os.waitpid(pid, os.WNOHANG)
        if got:
            status = st
            break
        time.sleep(0.02)
    if status is None:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
        os.waitpid(pid, 0)
        out.write(json.dumps({"hung": True}) + "\n")
    else:
        rc = os.waitstatus_to_exitcode(status)
        out.write(json.dumps({"hung": False, "rc": rc}) + "\n")
    out.flush()
"""


class ForkRunner:
    def __init__(self, env: dict, cwd: Path):
        self.p = subprocess.Popen([PY, "-c", FORK_SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  cwd=cwd, env=env, text=True)

    def run(self, argv, cwd, env, timeout, out_file: Path, err_file: Path):
        req = {"argv": [str(a) for a in argv], "cwd": str(cwd), "env": env, "timeout": timeout,
               "stdout": str(out_file), "stderr": str(err_file)}
        self.p.stdin.write(json.dumps(req) + "\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError("fork server died")
        r = json.loads(line)
        read = lambda f: f.read_text(errors="replace") if f.exists() else ""  # noqa: E731
        return (None if r["hung"] else r["rc"]), read(out_file), read(err_file), r["hung"]


# ----------------------------------------------------------------------------------------------- snapshots
def snapshot(root: Path) -> dict:
    out = {}
    for d, dirs, files in os.walk(root, followlinks=False):
        for n in dirs + files:
            p = os.path.join(d, n)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            if os.path.islink(p):
                out[p] = ("l", os.readlink(p))
            elif os.path.isdir(p):
                out[p] = ("d",)
            else:
                out[p] = ("f", st.st_size, st.st_mtime_ns)
    return out


def under(p: str, prefixes) -> bool:
    return any(p == str(x) or p.startswith(str(x).rstrip("/") + "/") for x in prefixes)


def is_temp(name: str) -> bool:
    return any(m in name for m in TEMP_MARKERS) and not name.endswith(".lock")


# ----------------------------------------------------------------------------------------------- the sweep
class Sweep:
    def __init__(self, out: Path, quick: bool = False, fork: bool = True):
        self.out = out.resolve()
        self.w = self.out / "work"
        if self.w.exists():
            shutil.rmtree(self.w)
        for d in ("home/data", "cwd", "tmp", "userhome", "user", "fx", "cases", "runs", "src"):
            (self.w / d).mkdir(parents=True, exist_ok=True)
        self.quick = quick
        self.results: list[dict] = []
        # The tests' 127.0.0.1 server (tests/helpers.py), started for the whole sweep: its threads are daemons.
        self.srv = LocalHTTP({}, timeout=10).__enter__()
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.w / "userhome"),
            "ZOO_HOME": str(self.w / "home"), "ZOO_DATA": str(self.w / "home/data"),
            "TMPDIR": str(self.w / "tmp"), "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1",
            "ZOO_DATA_MIRROR": self.srv.url("/nomirror/"), "ZOO_WEIGHTS_URL": self.srv.url("/noweights/"),
            "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "ftp_proxy": "http://127.0.0.1:9",
            "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "no_proxy": "127.0.0.1",
            "NO_PROXY": "127.0.0.1", "ZOO_DOWNLOAD_DEADLINE": "30", "PYTHONDONTWRITEBYTECODE": "1",
            "TQDM_DISABLE": "1",
        }
        self.manifest_hash = self._repo_manifest_hash()
        (self.out / "io").mkdir(exist_ok=True)
        self.fork = ForkRunner(self.env, self.w / "cwd") if fork else None
        # user files: must never change
        for i in range(3):
            (self.w / "userhome" / f"notes{i}.txt").write_text(f"user file {i}\n")
            (self.w / "user" / "docs" / f"doc{i}.txt").parent.mkdir(parents=True, exist_ok=True)
            (self.w / "user" / "docs" / f"doc{i}.txt").write_text(f"user doc {i}\n")
        (self.w / "userhome/.cache").mkdir()
        (self.w / "userhome/.cache/keep.txt").write_text("keep\n")

    def _repo_manifest_hash(self) -> str:
        h = hashlib.sha256()
        for p in sorted((REPO / "zoo/weights").glob("*.json")):
            h.update(p.read_bytes())
        return h.hexdigest()

    # --------------------------------------------------------------------------------------- running one case
    def run(self, cls: str, name: str, argv: list[str], *, expect: str = "refuse", allow=(), protect=(),
            absent=(), check=None, timeout: int = 120, env: dict | None = None, setup=None, stdin=None):
        cid = f"{cls}-{len(self.results):04d}"
        case_dir = self.w / "cases" / cid
        case_dir.mkdir(parents=True, exist_ok=True)
        if setup:
            setup(case_dir)
        allowed = [self.w / "home", self.w / "cwd", self.w / "tmp", case_dir, *map(Path, allow)]
        before = snapshot(self.w)
        prot = {str(p): (Path(p).read_bytes() if Path(p).is_file() else None) for p in protect}
        e = dict(self.env, **(env or {}))
        t0 = time.time()
        if self.fork is not None:
            rc, out, err, hung = self.fork.run(argv, self.w / "cwd", e, timeout, self.out / "io" / f"{cid}.out",
                                               self.out / "io" / f"{cid}.err")
        else:
          try:
            p = subprocess.run(argv, cwd=self.w / "cwd", env=e, capture_output=True, timeout=timeout,
                               stdin=subprocess.DEVNULL if stdin is None else stdin,
                               preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (12 << 30, 12 << 30)))
            rc, out, err, hung = p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace"), False
          except subprocess.TimeoutExpired as ex:
            rc, out, err, hung = None, (ex.stdout or b"").decode(errors="replace"), (ex.stderr or b"").decode(
                errors="replace"), True
        secs = time.time() - t0
        after = snapshot(self.w)
        problems = []
        created = [k for k in after if k not in before]
        deleted = [k for k in before if k not in after]
        modified = [k for k in after if k in before and after[k] != before[k] and after[k][0] != "d"]
        outside = [k for k in created + modified if not under(k, allowed)]
        if outside:
            problems.append(("write_outside", outside[:5]))
        del_out = [k for k in deleted if not under(k, allowed)]
        if del_out:
            problems.append(("deletion", del_out[:5]))
        for pth, content in prot.items():
            now = Path(pth).read_bytes() if Path(pth).is_file() else None
            if now != content:
                problems.append(("deletion", [f"protected {pth} changed or removed"]))
        leftovers = [k for k in created if is_temp(os.path.basename(k)) and not under(k, [self.w / "tmp"])]
        # a temp file inside a temp folder counts once (the folder)
        leftovers = [k for k in leftovers if not any(k != o and k.startswith(o + "/") for o in leftovers)]
        if leftovers:
            problems.append(("leftover", leftovers[:5]))
        marks = [k for k in after if MARK in os.path.basename(k)] + \
            [str(p) for p in Path("/tmp").glob(f"*{MARK}*")]
        if marks:
            problems.append(("code_execution", marks[:5]))
        if self._repo_manifest_hash() != self.manifest_hash:
            problems.append(("write_outside", ["repo zoo/weights/*.json changed"]))
            self.manifest_hash = self._repo_manifest_hash()
        for a in absent:
            if os.path.lexists(a):
                problems.append(("half_written", [f"{a} exists after a refusal"]))
        tb = "Traceback (most recent call last)" in err
        sig = rc is not None and rc < 0
        if hung:
            problems.append(("hang", f"no exit within {timeout} s"))
        elif sig:
            problems.append(("crash", f"killed by signal {-rc} ({signal.Signals(-rc).name})"))
        elif expect == "nocrash":
            pass
        elif tb:
            problems.append(("traceback", err.strip().splitlines()[-1][:300]))
        elif expect == "refuse":
            if rc == 0:
                problems.append(("rc0_wrong", "rc 0 where a refusal was expected"))
            elif rc != 2:
                problems.append(("bad_rc", f"rc {rc}, expected 2"))
            elif "error" not in err.lower():
                problems.append(("unclear_error", err[-200:]))
        elif expect == "ok" and rc != 0:
            problems.append(("bad_rc", f"rc {rc}, expected 0: {err.strip()[-300:]}"))
        elif expect == "any" and rc not in (0, 2):
            problems.append(("bad_rc", f"rc {rc}, expected 0 or 2"))
        if check and rc == 0 and not hung:
            try:
                msg = check(case_dir, out, err)
            except Exception as ex:  # noqa: BLE001 - a check that fails to run is a failed check
                msg = f"check raised {type(ex).__name__}: {ex}"
            if msg:
                problems.append(("rc0_wrong", msg))
        rec = {"id": cid, "class": cls, "name": name, "argv": [str(a) for a in argv], "rc": rc, "traceback": tb,
               "signal": sig, "seconds": round(secs, 2), "expect": expect, "problems": problems,
               "stderr_tail": err.strip()[-400:]}
        self.results.append(rec)
        flag = "FAIL " + "; ".join(f"{k}: {v}" for k, v in problems) if problems else "ok"
        print(f"[{cid}] {name}: rc={rc} {secs:.1f}s {flag}", flush=True)
        return rec

    def zoo(self, cls, name, *args, **kw):
        return self.run(cls, name, [PY, "-m", "zoo", *map(str, args)], **kw)

    def export(self, cls, name, *args, **kw):
        return self.run(cls, name, [PY, "-m", "export", *map(str, args)], **kw)

    def api(self, cls, name, code: str, **kw):
        """Python snippet; a ZooError/ExportError exits 2 with 'error:', anything else is a traceback."""
        wrapped = ("import sys, os, json, math\nimport numpy as np\nfrom zoo.errors import ZooError\n"
                   "from export import ExportError\ntry:\n" + textwrap.indent(textwrap.dedent(code), "    ")
                   + "\nexcept (ZooError, ExportError) as e:\n    print('error:', e, file=sys.stderr)\n    sys.exit(2)\n")
        return self.run(cls, name, [PY, "-c", wrapped], **kw)

    def native(self, name, code: str, expect="nocrash", **kw):
        wrapped = ("import sys, os\nimport numpy as np\nfrom zoo import _native as N\nfrom zoo.data import native as "
                   "Z\nfrom zoo.errors import ZooError\nimport torch\ntry:\n"
                   + textwrap.indent(textwrap.dedent(code), "    ")
                   + "\nexcept ZooError as e:\n    print('error:', e, file=sys.stderr)\n    sys.exit(2)\n"
                   "except (ValueError, TypeError, IndexError, RuntimeError, MemoryError, OverflowError) as e:\n"
                   "    print('binding error:', type(e).__name__, e, file=sys.stderr)\n    sys.exit(3)\n")
        return self.run("native", name, [PY, "-c", wrapped], expect=expect, **kw)

    # --------------------------------------------------------------------------------------- fixtures
    def setup(self):
        from tests.helpers import write_cifar10, write_image_folder, write_mnist

        w = self.w
        write_mnist(w / "src/mnist", 200, 100)
        write_image_folder(w / "src/tiny", n_per_class=20, size=28, mode="L", splits=("train",))
        write_image_folder(w / "src/tiny", n_per_class=5, size=28, mode="L", splits=("test",))
        write_cifar10(w / "src/cifar10", n_per_batch=20)
        steps = [
            ["ingest", "mnist", "--root", w / "src/mnist", "--allow-partial"],
            ["ingest", "tiny", "--root", w / "src/tiny"],
            ["ingest", "cifar10", "--root", w / "src/cifar10", "--allow-partial"],
            ["train", "lenet5", "--dataset", "mnist", "--epochs", "1", "--batch-size", "32", "--out", w / "runs/base",
             "--no-progress"],
        ]
        for s in steps:
            p = subprocess.run([PY, "-m", "zoo", *map(str, s)], cwd=w / "cwd", env=self.env, capture_output=True)
            if p.returncode:
                sys.exit(f"setup failed: {s}: {p.stderr.decode()[-2000:]}")
        self.base = w / "runs/base/model.safetensors"
        self.ckpt = w / "runs/base/checkpoint.pt"
        p = subprocess.run([PY, "-m", "export", "onnx", str(self.base), "--out", str(w / "fx/exp"), "--max-real", "20"],
                           cwd=w / "cwd", env=self.env, capture_output=True)
        if p.returncode:
            sys.exit(f"setup export failed: {p.stderr.decode()[-2000:]}")
        self.onnx = next((w / "fx/exp").glob("*.onnx"))
        for f in (w / "runs/base").iterdir():  # the fixtures are read-only from here on: a case must not touch them
            f.chmod(0o444)

    # --------------------------------------------------------------------------------------- helpers
    def meta(self) -> dict:
        from safetensors import safe_open

        with safe_open(str(self.base), framework="pt") as f:  # the raw JSON: the sweep crafts its own variants
            return json.loads(f.metadata()["zoo"])

    def state(self) -> dict:
        from safetensors.torch import load_file

        return load_file(str(self.base))

    def write_st(self, path: Path, state=None, meta=None, raw_meta=None):
        from safetensors.torch import save_file

        state = {k: v.clone().contiguous() for k, v in (self.state() if state is None else state).items()}
        md = None
        if raw_meta is not None:
            md = raw_meta
        elif meta is not None:
            md = {"zoo": json.dumps(meta)}
        save_file(state, str(path), metadata=md)
        return path

    def consumers(self, cls: str, label: str, f: Path, *, expect="refuse", check_api=None, export=False,
                  eval_check=None, with_eval=False):
        """Every way a weights file is opened: the API (load + preprocess + forward), zoo eval, export."""
        code = f"""
            import zoo, torch
            m = zoo.load({str(f)!r})
            x = zoo.preprocess_for(m)(np.full((28, 28), 128, np.uint8))
            y = m(x)
            print(json.dumps({{"finite_x": bool(torch.isfinite(x).all()), "finite_y": bool(torch.isfinite(y).all()),
                              "shape": list(y.shape)}}))
        """
        self.api(cls, f"{label}: zoo.load + preprocess + forward", code, expect=expect, check=check_api, timeout=90)
        if not (with_eval or export or eval_check):
            return
        rep = self.w / "cases" / f"rep-{len(self.results)}"
        self.zoo(cls, f"{label}: zoo eval", "eval", f, "--dataset", "mnist", "--no-figures", "--out", rep,
                 "--batch-size", 64, expect=expect, allow=[rep], check=eval_check, timeout=120)
        if export:
            ex = self.w / "cases" / f"exp-{len(self.results)}"
            self.export(cls, f"{label}: export onnx", "onnx", f, "--out", ex, "--max-real", 10, "--no-verify",
                        expect=expect, allow=[ex], timeout=120)

    # =========================================================================================== WEIGHTS
    def sweep_weights(self):
        fx = self.w / "fx/weights"
        fx.mkdir(parents=True)
        meta, state = self.meta(), self.state()

        def finite_check(_d, out, _e):
            r = json.loads(out.strip().splitlines()[-1])
            return None if r["finite_x"] and r["finite_y"] and r["shape"] == [1, 10] else f"result {r}"

        def st(name, **kw):
            return self.write_st(fx / f"{name}.safetensors", **kw)

        # control
        self.consumers("weights", "control (the trained file)", self.base, expect="ok", check_api=finite_check,
                       export=True)
        cases = [
            ("no metadata", dict(raw_meta={}), {}),
            ("zoo metadata not JSON", dict(raw_meta={"zoo": "{not json"}), {}),
            ("zoo metadata a JSON list", dict(raw_meta={"zoo": "[1,2]"}), {}),
            ("zoo metadata JSON null", dict(raw_meta={"zoo": "null"}), {}),
            ("tag ../../escape", dict(meta=dict(meta, tag="../../escape.x")), {"export": True}),
            ("tag with slash", dict(meta=dict(meta, tag="lenet5.mnist/../../../x")), {"export": True}),
            ("tag absolute", dict(meta=dict(meta, tag=str(self.w / "user/evil.mnist"))), {"export": True}),
            ("tag int", dict(meta=dict(meta, tag=123)), {"export": True}),
            ("tag NUL", dict(meta=dict(meta, tag="lenet5.mn\0ist")), {"export": True}),
            ("tag 300 chars", dict(meta=dict(meta, tag="a" * 300 + ".mnist")), {"export": True, "expect": "any"}),
            ("no input_size", dict(meta={k: v for k, v in meta.items() if k != "input_size"}), {}),
            ("input_size string", dict(meta=dict(meta, input_size="abc")), {}),
            ("input_size negative", dict(meta=dict(meta, input_size=[1, -28, 28])), {}),
            ("input_size zero channels", dict(meta=dict(meta, input_size=[0, 28, 28])), {}),
            ("input_size huge", dict(meta=dict(meta, input_size=[1, 100000, 100000])), {}),
            ("input_size float", dict(meta=dict(meta, input_size=[1, 28.5, 28])), {}),
            ("input_size 2 entries", dict(meta=dict(meta, input_size=[1, 28])), {}),
            ("input_size bool", dict(meta=dict(meta, input_size=[True, 28, 28])), {}),
            ("no classes", dict(meta={k: v for k, v in meta.items() if k != "classes"}), {}),
            ("classes empty", dict(meta=dict(meta, classes=[])), {}),
            ("classes a string", dict(meta=dict(meta, classes="0123456789")), {}),
            ("classes ints", dict(meta=dict(meta, classes=list(range(10)))), {"expect": "any"}),
            ("classes 11 (head has 10)", dict(meta=dict(meta, classes=[str(i) for i in range(11)])), {}),
            ("no model", dict(meta={k: v for k, v in meta.items() if k != "model"}), {}),
            ("model unknown", dict(meta=dict(meta, model="nonexistent")), {}),
            ("model code string", dict(meta=dict(meta, model=f"__import__('os').system('touch {self.w}/{MARK}1')")),
             {}),
            ("model a list", dict(meta=dict(meta, model=["lenet5"])), {}),
            ("config_overrides dropout 5", dict(meta=dict(meta, config_overrides={"dropout": 5})), {}),
            ("config_overrides unknown key", dict(meta=dict(meta, config_overrides={"__class__": 1})), {}),
            ("config_overrides a list", dict(meta=dict(meta, config_overrides=[1, 2])), {}),
            ("config_overrides channels huge", dict(meta=dict(meta, config_overrides={"channels": [10 ** 6, 10 ** 6]})),
             {}),
            ("mean NaN", dict(meta=dict(meta, mean=[float("nan")])), {}),
            ("std zero", dict(meta=dict(meta, std=[0.0])), {}),
            ("std negative", dict(meta=dict(meta, std=[-1.0])), {}),
            ("mean a string", dict(meta=dict(meta, mean="x")), {}),
            ("mean 3 channels for 1", dict(meta=dict(meta, mean=[0.1, 0.2, 0.3], std=[0.3, 0.3, 0.3])), {}),
            ("dataset ../../etc", dict(meta=dict(meta, dataset="../../etc")), {"expect": "any",
                                                                                 "eval_nodataset": True}),
            ("labels bogus", dict(meta=dict(meta, labels="bogus")), {"expect": "any"}),
            ("missing tensor", dict(state={k: v for i, (k, v) in enumerate(state.items()) if i}, meta=meta), {}),
            ("extra tensor", dict(state=dict(state, extra=state[next(iter(state))]), meta=meta), {}),
            ("wrong tensor shape", dict(state={k: (v[:1].contiguous() if i == 0 else v)
                                               for i, (k, v) in enumerate(state.items())}, meta=meta), {}),
            ("int tensors", dict(state={k: v.to(__import__("torch").int32) for k, v in state.items()}, meta=meta),
             {"expect": "any"}),
            ("float64 tensors", dict(state={k: v.double() for k, v in state.items()}, meta=meta),
             {"expect": "ok"}),
            ("bfloat16 tensors", dict(state={k: v.bfloat16() for k, v in state.items()}, meta=meta),
             {"expect": "ok"}),
            ("NaN weights", dict(state={k: v * float("nan") for k, v in state.items()}, meta=meta),
             {"expect": "nan"}),
        ]
        for label, kw, opt in cases:
            f = st(label.replace(" ", "_").replace("/", "_").replace(".", "_"), **kw)
            expect = opt.get("expect", "refuse")
            if expect == "nan":
                def nan_eval(d, out, err, rep=None):
                    return None if any(w in (out + err).lower() for w in ("non-finite", "nonfinite", "nan or inf")) \
                        else "NaN weights evaluated without a warning"
                self.consumers("weights", label, f, expect="any", eval_check=nan_eval)
                continue
            if opt.get("eval_nodataset"):  # the file's own dataset names the cache folder: refused
                rep = self.w / "cases" / f"rep-{len(self.results)}"
                self.zoo("weights", f"{label}: zoo eval without --dataset", "eval", f, "--no-figures", "--out", rep,
                         allow=[rep])
            self.consumers("weights", label, f, expect=expect, with_eval=label.startswith(("classes", "mean", "std",
                                                                                          "dataset", "labels", "input_size huge")),
                           check_api=finite_check if expect == "ok" else None, export=opt.get("export", False))
        # raw-byte files
        good = self.base.read_bytes()
        hlen = struct.unpack("<Q", good[:8])[0]
        raw = {
            "empty file": b"",
            "7 bytes": b"\x01" * 7,
            "truncated half": good[: len(good) // 2],
            "truncated in header": good[: 8 + hlen // 2],
            "random bytes": os.urandom(4096),
            "header length 2**63": struct.pack("<Q", 1 << 63) + good[8:],
            "header length past file": struct.pack("<Q", len(good)) + good[8:],
            "header not JSON": struct.pack("<Q", 10) + b"\xff" * 10 + good[8 + hlen:],
            "offsets past end": self._craft_header(good, lambda h: self._bump_offsets(h, 10 ** 9)),
            "dtype lies (F64 for F32)": self._craft_header(good, lambda h: self._set_dtype(h, "F64")),
            "shape lies (huge)": self._craft_header(good, lambda h: self._set_shape(h, [1 << 40, 1 << 40])),
            "shape negative": self._craft_header(good, lambda h: self._set_shape(h, [-1, 6])),
            "pickle disguised": pickle.dumps({"a": 1}),
        }
        for label, data in raw.items():
            f = fx / (label.replace(" ", "_").replace("*", "").replace("(", "").replace(")", "") + ".safetensors")
            f.write_bytes(data)
            self.consumers("weights", label, f, with_eval=label in ("truncated half", "random bytes",
                                                                   "header length 2**63", "offsets past end"))
        # odd file system objects
        os.symlink("/etc/passwd", fx / "symlink_passwd.safetensors")
        self.consumers("weights", "symlink to /etc/passwd", fx / "symlink_passwd.safetensors")
        (fx / "dir.safetensors").mkdir()
        self.consumers("weights", "a directory", fx / "dir.safetensors")
        os.mkfifo(fx / "fifo.safetensors")
        self.api("weights", "a FIFO (zoo.load)", f"import zoo; zoo.load({str(fx / 'fifo.safetensors')!r})", timeout=30)
        self.api("weights", "missing file", f"import zoo; zoo.load({str(fx / 'nope.safetensors')!r})")
        # publish: the manifest is private (ZOO_MANIFEST), the fixtures must stay untouched
        man = self.w / "home/manifest"
        man.mkdir()
        env = {"ZOO_MANIFEST": str(man / "manifest.json")}
        for label in ("tag ../../escape", "tag with slash", "tag absolute", "tag NUL", "no metadata", "random bytes"):
            f = next(fx.glob(label.replace(" ", "_").replace("/", "_").replace(".", "_") + ".safetensors"), None)
            if f is None:
                f = fx / (label.replace(" ", "_") + ".safetensors")
            self.zoo("weights", f"{label}: publish", "publish", f, "--force", env=env)
        self.zoo("weights", "publish control", "publish", self.base, "--force", env=env, expect="ok",
                 check=lambda d, o, e: None if (man / "lenet5.mnist.safetensors").is_file() else "not published")
        self.zoo("weights", "publish --url odd", "publish", self.base, "--url", "javascript:alert(1)\n", env=env,
                 expect="any")
        # the manifest as data
        self.sweep_manifest()

    def _craft_header(self, good: bytes, edit) -> bytes:
        hlen = struct.unpack("<Q", good[:8])[0]
        h = json.loads(good[8:8 + hlen])
        edit(h)
        hb = json.dumps(h).encode()
        hb += b" " * (-len(hb) % 8)
        return struct.pack("<Q", len(hb)) + hb + good[8 + hlen:]

    @staticmethod
    def _first(h):
        return next(k for k in h if k != "__metadata__")

    def _bump_offsets(self, h, by):
        k = self._first(h)
        h[k]["data_offsets"] = [h[k]["data_offsets"][0] + by, h[k]["data_offsets"][1] + by]

    def _set_dtype(self, h, dt):
        h[self._first(h)]["dtype"] = dt

    def _set_shape(self, h, shape):
        h[self._first(h)]["shape"] = shape

    def sweep_manifest(self):
        from zoo.io import sha256_file

        good = json.loads((REPO / "zoo/weights/manifest.json").read_text())
        entry = good["weights"]["lenet5.mnist"]
        store = self.w / "fx/mstore"
        store.mkdir()
        shutil.copy(REPO / "zoo/weights/lenet5.mnist.safetensors", store / "lenet5.mnist.safetensors")
        os.symlink("/etc/passwd", store / "passwd.safetensors")
        variants = {
            "file ../../etc/passwd": dict(entry, file="../../../../etc/passwd"),
            "file absolute": dict(entry, file="/etc/passwd"),
            "file symlink out": dict(entry, file="passwd.safetensors"),
            "file NUL": dict(entry, file="a\0b.safetensors"),
            "file a list": dict(entry, file=["x"]),
            "sha256 wrong": dict(entry, sha256="0" * 64),
            "size negative": dict(entry, size=-1),
            "size a string": dict(entry, size="big"),
            "url file:///etc/passwd": dict(entry, url="file:///etc/passwd", sha256="0" * 64, file="x.safetensors"),
            "metrics NaN": dict(entry, metrics={"top1": float("nan")}),
        }
        for label, e in variants.items():
            d = self.w / "fx" / f"man-{len(self.results)}"
            d.mkdir()
            for f in store.iterdir():
                os.symlink(f, d / f.name) if not f.is_symlink() else os.symlink(os.readlink(f), d / f.name)
            (d / "manifest.json").write_text(json.dumps({"format": good.get("format"), "weights": {"lenet5.mnist": e}}))
            env = {"ZOO_MANIFEST": str(d / "manifest.json")}
            self.api("weights", f"manifest {label}: zoo.load(tag)", "import zoo; zoo.load('lenet5.mnist')", env=env,
                     expect="any" if label in ("metrics NaN", "size a string", "size negative") else "refuse")
            self.zoo("weights", f"manifest {label}: weights list", "weights", "list", env=env, expect="any")
        for label, text in (("not JSON", "{"), ("a list", "[]"), ("weights a list", '{"weights": []}'),
                            ("entry a string", '{"weights": {"lenet5.mnist": "x"}}'),
                            ("tag ../x", json.dumps({"weights": {"../x.y": entry}}))):
            d = self.w / "fx" / f"man-{len(self.results)}"
            d.mkdir()
            (d / "manifest.json").write_text(text)
            env = {"ZOO_MANIFEST": str(d / "manifest.json")}
            self.zoo("weights", f"manifest {label}: list", "list", env=env)
            self.zoo("weights", f"manifest {label}: weights pull --all", "weights", "pull", "--all", "--from",
                     store, env=env)
        del sha256_file

    # =========================================================================================== CHECKPOINTS
    def sweep_checkpoints(self):
        import torch

        ck = torch.load(self.ckpt, weights_only=True)
        fx = self.w / "fx/ckpt"
        fx.mkdir(parents=True)

        class Payload:
            def __init__(self, path):
                self.path = path

            def __reduce__(self):
                return (os.system, (f"touch {self.path}",))

        def resume(label, write, expect="refuse", epochs=2):
            out = self.w / "cases" / f"run-{len(self.results)}"
            out.mkdir(parents=True)
            for f in (self.w / "runs/base").iterdir():
                if f.is_file():
                    shutil.copy(f, out / f.name)
                    (out / f.name).chmod(0o644)
            (out / "checkpoint.pt").unlink()
            write(out / "checkpoint.pt")
            (out / "user_notes.txt").write_text("mine\n")
            self.zoo("checkpoints", f"resume: {label}", "train", "lenet5", "--dataset", "mnist", "--resume", "--out",
                     out, "--epochs", epochs, "--batch-size", 32, "--no-progress", expect=expect, allow=[out],
                     protect=[out / "user_notes.txt"], timeout=180)

        def save(obj):
            return lambda p: torch.save(obj, p)

        def rawbytes(b):
            return lambda p: p.write_bytes(b)

        resume("control (valid checkpoint)", save(ck), expect="ok")
        resume("pickle payload in torch.save", save({"model": Payload(self.w / f"{MARK}_ck1")}))
        resume("pickle payload, plain pickle", rawbytes(pickle.dumps(Payload(self.w / f"{MARK}_ck2"))))
        resume("payload nested in history", save(dict(ck, history=[Payload(self.w / f"{MARK}_ck3")])))
        resume("empty file", rawbytes(b""))
        resume("truncated zip", rawbytes(self.ckpt.read_bytes()[:2000]))
        resume("random bytes", rawbytes(os.urandom(5000)))
        resume("a list", save([1, 2, 3]))
        resume("a tensor", save(torch.zeros(3)))
        resume("dict missing keys", save({"model": ck["model"]}))
        resume("epoch -5", save(dict(ck, epoch=-5)), expect="any")
        resume("epoch 10**9", save(dict(ck, epoch=10 ** 9)), expect="any")
        resume("epoch a string", save(dict(ck, epoch="3")))
        resume("epoch NaN", save(dict(ck, epoch=float("nan"))))
        resume("epoch a tensor", save(dict(ck, epoch=torch.tensor(0))), expect="any")
        resume("model wrong shapes", save(dict(ck, model={k: v[:1] for k, v in ck["model"].items()})))
        resume("model missing keys", save(dict(ck, model={})))
        resume("model a list", save(dict(ck, model=[1])))
        resume("model NaN weights", save(dict(ck, model={k: v * float("nan") if v.is_floating_point() else v
                                                        for k, v in ck["model"].items()})))
        resume("optimizer garbage", save(dict(ck, optimizer={"state": 5, "param_groups": "x"})))
        resume("optimizer a list", save(dict(ck, optimizer=[1])))
        resume("scheduler garbage", save(dict(ck, scheduler=[1, 2])))
        resume("history a string", save(dict(ck, history="abc")))
        resume("history rows garbage", save(dict(ck, history=[1, "x", None])))
        resume("best a string", save(dict(ck, best="x")))
        resume("bad_epochs a string", save(dict(ck, bad_epochs="x")))
        resume("recipe a list", save(dict(ck, recipe=[1])))
        resume("model_name other", save(dict(ck, model_name="lenet5_bn")))
        resume("num_classes 11", save(dict(ck, num_classes=11)))
        resume("symlink to /etc/passwd", lambda p: os.symlink("/etc/passwd", p))
        resume("a directory", lambda p: p.mkdir())
        # --init torchvision:FILE (a state dict) and zoo:TAG
        def init(label, write, model="lenet5", ds="mnist", expect="refuse", spec=None):
            f = fx / f"init-{len(self.results)}.pth"
            if write:
                write(f)
            out = self.w / "cases" / f"run-{len(self.results)}"
            self.zoo("checkpoints", f"--init: {label}", "train", model, "--dataset", ds, "--init",
                     spec or f"torchvision:{f}", "--out", out, "--epochs", 1, "--batch-size", 32, "--no-progress",
                     expect=expect, allow=[out], absent=[out / "model.safetensors"] if expect == "refuse" else (),
                     timeout=180)

        init("pickle payload", save({"x": Payload(self.w / f"{MARK}_init")}), model="resnet18_tv", ds="cifar10")
        init("plain pickle payload", rawbytes(pickle.dumps(Payload(self.w / f"{MARK}_init2"))), model="resnet18_tv",
             ds="cifar10")
        init("a list", save([1]), model="resnet18_tv", ds="cifar10")
        init("wrong shapes", save({"conv1.weight": torch.zeros(1)}), model="resnet18_tv", ds="cifar10")
        init("values not tensors", save({"conv1.weight": "x"}), model="resnet18_tv", ds="cifar10")
        init("empty file", rawbytes(b""), model="resnet18_tv", ds="cifar10")
        init("missing file", None, model="resnet18_tv", ds="cifar10")
        init("torchvision on lenet5", save({}), model="lenet5")
        init("zoo:../../x", None, spec="zoo:../../x")
        init("zoo:unknown.tag", None, spec="zoo:nonexist.mnist")
        init("bogus scheme", None, spec="http://127.0.0.1:9/x")
        init("empty", None, spec="")

    # =========================================================================================== CACHE
    def copy_dataset(self, src: str, dst: str) -> Path:
        d = self.w / "home/data" / dst
        shutil.copytree(self.w / "home/data" / src, d, symlinks=True)
        return d

    def sweep_cache(self):
        import numpy as np

        n_test = 100

        def npy_header_only(path, shape, dtype="<i8"):
            hdr = {"descr": dtype, "fortran_order": False, "shape": shape}
            h = repr(hdr).encode()
            h += b" " * (-(len(h) + 11) % 64) + b"\n"
            path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h + b"\0" * 64)

        class Payload:
            def __reduce__(self):
                return (os.system, (f"touch {self.__class__.path}",))

        def payload_labels(p):
            Payload.path = self.w / f"{MARK}_npy"
            np.save(p, np.array([Payload()] * n_test, dtype=object), allow_pickle=True)

        def meta_edit(fn):
            def apply(p):
                m = json.loads(p.read_text())
                fn(m)
                p.write_text(json.dumps(m))
            return apply

        def loop(p):
            p.unlink()
            os.symlink(p.name, p)

        damages = {
            "images.npy truncated": ("images.npy", lambda p: p.write_bytes(p.read_bytes()[:300])),
            "images.npy empty": ("images.npy", lambda p: p.write_bytes(b"")),
            "images.npy float32": ("images.npy", lambda p: np.save(p, np.zeros((n_test, 28, 28, 1), np.float32))),
            "images.npy wrong shape": ("images.npy", lambda p: np.save(p, np.zeros((n_test, 32, 32, 1), np.uint8))),
            "images.npy fewer images": ("images.npy", lambda p: np.save(p, np.zeros((5, 28, 28, 1), np.uint8))),
            "images.npy header huge": ("images.npy", lambda p: npy_header_only(p, (1 << 40, 28, 28, 1), "|u1")),
            "images.npy symlink /etc/passwd": ("images.npy", lambda p: (p.unlink(), os.symlink("/etc/passwd", p))),
            "images.npy a directory": ("images.npy", lambda p: (p.unlink(), p.mkdir())),
            "images.npy a FIFO": ("images.npy", lambda p: (p.unlink(), os.mkfifo(p))),
            "images.npy missing": ("images.npy", lambda p: p.unlink()),
            "labels out of range": ("labels.npy", lambda p: np.save(p, np.full(n_test, 10, np.int64))),
            "labels negative": ("labels.npy", lambda p: np.save(p, np.full(n_test, -1, np.int64))),
            "labels float": ("labels.npy", lambda p: np.save(p, np.zeros(n_test, np.float64))),
            "labels bool": ("labels.npy", lambda p: np.save(p, np.zeros(n_test, bool))),
            "labels uint64 huge": ("labels.npy", lambda p: np.save(p, np.full(n_test, 2 ** 63, np.uint64))),
            "labels 2-D": ("labels.npy", lambda p: np.save(p, np.zeros((n_test, 2), np.int64))),
            "labels count mismatch": ("labels.npy", lambda p: np.save(p, np.zeros(n_test - 1, np.int64))),
            "labels object pickle payload": ("labels.npy", payload_labels),
            "labels header huge": ("labels.npy", lambda p: npy_header_only(p, (1 << 40,))),
            "labels big-endian": ("labels.npy", lambda p: np.save(p, (np.arange(n_test) % 10).astype(">i8"))),
            "meta.json not JSON": ("meta.json", lambda p: p.write_text("{")),
            "meta.json a list": ("meta.json", lambda p: p.write_text("[]")),
            "meta.json missing": ("meta.json", lambda p: p.unlink()),
            "meta classes empty": ("meta.json", meta_edit(lambda m: m.update(classes=[]))),
            "meta classes 3 (labels to 9)": ("meta.json", meta_edit(lambda m: m.update(classes=["a", "b", "c"]))),
            "meta classes ints": ("meta.json", meta_edit(lambda m: m.update(classes=list(range(10))))),
            "meta shape strings": ("meta.json", meta_edit(lambda m: m.update(shape=["28", "28", "1"]))),
            "meta shape 4 entries": ("meta.json", meta_edit(lambda m: m.update(shape=[28, 28, 1, 1]))),
            "meta std zero": ("meta.json", meta_edit(lambda m: m.update(std=[0.0]))),
            "meta mean NaN": ("meta.json", lambda p: p.write_text(p.read_text().replace('"mean": [', '"mean": [NaN, '
                                                                                          ).replace("[NaN, 0", "[NaN"))),
            "meta std Infinity": ("meta.json", meta_edit(lambda m: m.update(std=[float("inf")]))),
            "meta num_samples wrong": ("meta.json", meta_edit(lambda m: m.update(num_samples=99999))),
            "meta num_samples a string": ("meta.json", meta_edit(lambda m: m.update(num_samples="100"))),
            "meta 10 MB of junk keys": ("meta.json", meta_edit(lambda m: m.update(junk="x" * 10_000_000))),
            "split link dangling": ("LINK", lambda p: (p.unlink(), os.symlink(".nowhere", p))),
            "split link loop": ("LINK", loop),
            "split link to a user folder": ("LINK", lambda p: (p.unlink(), os.symlink(self.w / "user/docs", p))),
        }
        protect = [self.w / "user/docs" / f"doc{i}.txt" for i in range(3)]
        for i, (label, (fname, fn)) in enumerate(damages.items()):
            name = f"dmg{i}"
            d = self.copy_dataset("mnist", name)
            target = d / "test" if fname == "LINK" else (d / "test").resolve() / fname
            fn(target)
            rep = self.w / "cases" / f"rep-{len(self.results)}"
            # harmless damage (the answer stays right): rc 0 is fine, a traceback is not
            exp = "any" if label in ("labels big-endian", "meta std zero", "meta 10 MB of junk keys") else "refuse"
            self.zoo("cache", f"{label}: zoo eval", "eval", self.base, "--dataset", name, "--no-figures", "--out", rep,
                     expect=exp, allow=[rep], protect=protect, timeout=60)
            self.api("cache", f"{label}: open_split + loader", f"""
                from zoo.data import open_split, Loader
                s = open_split({name!r}, 'test')
                n = sum(len(y) for _, y in Loader(s, 32, shuffle=False))
                print(n)
            """, expect=exp, protect=protect, timeout=60)
            if label in ("labels out of range", "meta std zero", "images.npy truncated", "split link to a user folder",
                         "split link loop", "labels object pickle payload"):
                # train reads the train split: damage it the same way
                name2 = f"dmgt{i}"
                d2 = self.copy_dataset("mnist", name2)
                t2 = d2 / "train" if fname == "LINK" else (d2 / "train").resolve() / fname
                if label == "labels out of range":
                    np.save(t2, np.full(len(np.load(t2)), 10, np.int64))
                else:
                    fn(t2)
                out = self.w / "cases" / f"run-{len(self.results)}"
                self.zoo("cache", f"{label}: train on it", "train", "lenet5", "--dataset", name2, "--epochs", 1,
                         "--batch-size", 32, "--out", out, "--no-progress", expect="refuse", allow=[out],
                         absent=[out / "model.safetensors"], protect=protect, timeout=90)
                self.zoo("cache", f"{label}: ingest --force rebuilds it", "ingest", name2, "--root",
                         self.w / "src/mnist", "--force", expect="ok", protect=protect, timeout=90,
                         check=lambda _d, o, e, n=name2: self._opens(n))
        # stale leftovers and hostile links inside a dataset folder: ingest --force takes them over safely
        d = self.copy_dataset("tiny", "stale")
        (d / ".train.tmp-abc").mkdir()
        (d / ".train.tmp-abc/x").write_text("junk")
        (d / ".train.old-abc").mkdir()
        (d / ".train.v-deadbeef").mkdir()
        os.symlink(self.w / "user/docs", d / ".train.v-userlink")
        os.symlink(self.w / "user/docs", d / ".test.tmp-userlink")
        self.zoo("cache", "stale temps + links to a user folder: ingest --force", "ingest", "stale", "--root",
                 self.w / "src/tiny", "--force", expect="ok", protect=protect,
                 check=lambda _d, o, e: None if not any((d / n).exists() for n in (".train.tmp-abc", ".train.old-abc",
                                                                                   ".train.v-deadbeef"))
                 else "stale temp folders left behind")
        # a dataset folder that is a symlink to a user folder: the cache writes there? (the user made the link)
        self.sweep_ingest_sources(protect)

    def _opens(self, name):
        from zoo.data import open_split

        env_old = os.environ.get("ZOO_DATA")
        os.environ["ZOO_DATA"] = self.env["ZOO_DATA"]
        try:
            s = open_split(name, "train")
            return None if len(s) > 0 else "empty split"
        except Exception as e:  # noqa: BLE001
            return f"rebuilt split does not open: {e}"
        finally:
            if env_old is None:
                os.environ.pop("ZOO_DATA", None)
            else:
                os.environ["ZOO_DATA"] = env_old

    def sweep_ingest_sources(self, protect):
        import numpy as np
        from PIL import Image

        from tests.helpers import write_cifar10, write_idx, write_image_folder, write_mnist

        src = self.w / "src"

        def folder(label, mutate, expect="refuse", extra=()):
            root = src / f"if{len(self.results)}"
            write_image_folder(root, n_per_class=2, size=28, mode="L", classes=["a", "b"])
            mutate(root)
            name = f"if{len(self.results)}"
            self.zoo("cache", f"ingest folder: {label}", "ingest", name, "--root", root, *extra, expect=expect,
                     protect=protect, timeout=60, absent=[] if expect != "refuse" else [])

        def put(rel, data):
            def m(root):
                p = root / rel
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(data) if isinstance(data, bytes) else data(p)
            return m

        png = io.BytesIO()
        Image.fromarray(np.zeros((28, 28), np.uint8)).save(png, "PNG")
        png = png.getvalue()
        jpg = io.BytesIO()
        Image.fromarray(np.zeros((28, 28), np.uint8)).save(jpg, "JPEG")
        jpg = jpg.getvalue()
        bomb = bytearray(png)
        bomb[16:24] = struct.pack(">II", 100000, 100000)  # IHDR width/height (CRC now wrong)
        folder("corrupt PNG", put("train/a/bad.png", png[:40] + b"\0" * 40))
        folder("truncated PNG", put("train/a/trunc.png", png[: len(png) // 2]))
        folder("zero-byte PNG", put("train/a/zero.png", b""))
        folder("PNG header 100000x100000", put("train/a/bomb.png", bytes(bomb)))
        folder("truncated JPEG", put("train/a/trunc.jpg", jpg[: len(jpg) // 2]))
        folder("JPEG garbage after SOI", put("train/a/g.jpg", b"\xff\xd8\xff" + os.urandom(500)))
        folder("wrong image size", put("train/a/big.png", lambda p: Image.fromarray(np.zeros((40, 40), np.uint8))
                                       .save(p)))
        folder("PNG named .jpg", put("train/a/x.jpg", png), expect="any")
        folder("symlink image to /etc/passwd", lambda r: os.symlink("/etc/passwd", r / "train/a/link.png"))
        folder("directory named x.png", lambda r: (r / "train/a/dir.png").mkdir(), expect="any")
        folder("FIFO named x.png", lambda r: os.mkfifo(r / "train/a/fifo.png"), expect="any")
        folder("empty class folder", lambda r: (r / "train/c").mkdir())
        folder("class folder symlink to user docs", lambda r: os.symlink(self.w / "user/docs", r / "train/c"),
               expect="any")
        folder("16-bit PNG", put("train/a/x16.png", lambda p: Image.fromarray(np.zeros((28, 28), np.uint16) + 40000)
                                 .save(p)), expect="ok")
        folder("only non-images", lambda r: [shutil.rmtree(r / "train/a"), (r / "train/a").mkdir(),
                                             (r / "train/a/readme.txt").write_text("hi")])
        folder("--threads 0", lambda r: None, expect="refuse", extra=("--threads", "0"))
        folder("--threads 10**6", lambda r: None, extra=("--threads", "1000000"))
        folder("--threads -1", lambda r: None, extra=("--threads", "-1"))
        folder("--resize 0", lambda r: None, extra=("--resize", "0"))
        folder("--resize -5", lambda r: None, extra=("--resize", "-5"))
        folder("--resize 100000", lambda r: None, extra=("--resize", "100000"))
        folder("--classes unknown", lambda r: None, extra=("--classes", "zz"))
        folder("--classes duplicated", lambda r: None, extra=("--classes", "a,a"))
        folder("--classes empty", lambda r: None, extra=("--classes", ","))
        folder("--splits ../x", lambda r: None, extra=("--splits", "../x"))
        folder("--splits bogus", lambda r: None, extra=("--splits", "bogus"))
        # official formats
        def mnist(label, mutate, expect="refuse", name="mn"):
            root = src / f"mn{len(self.results)}"
            write_mnist(root, 20, 10)
            mutate(root)
            self.zoo("cache", f"ingest mnist files: {label}", "ingest",
                     name if name == "mnist" else f"{name}{len(self.results)}", "--root", root,
                     expect=expect, protect=protect, timeout=60)

        def idx_header(dims, dtype=0x08):
            return bytes([0, 0, dtype, len(dims)]) + b"".join(int(d).to_bytes(4, "big") for d in dims)

        mnist("IDX claims 2**31 images", lambda r: (r / "train-images-idx3-ubyte").write_bytes(
            idx_header([2 ** 31 - 1, 28, 28]) + b"\0" * 1000))
        mnist("IDX claims 65535x65535 images", lambda r: (r / "train-images-idx3-ubyte").write_bytes(
            idx_header([20, 65535, 65535]) + b"\0" * 1000))
        mnist("IDX wrong magic", lambda r: (r / "train-images-idx3-ubyte").write_bytes(b"\1\2\3\4" + b"\0" * 100))
        mnist("IDX float dtype", lambda r: (r / "train-images-idx3-ubyte").write_bytes(
            idx_header([20, 28, 28], 0x0D) + b"\0" * (20 * 28 * 28 * 4)))
        mnist("IDX 0 dims", lambda r: (r / "train-images-idx3-ubyte").write_bytes(bytes([0, 0, 8, 0])))
        mnist("IDX empty", lambda r: (r / "train-images-idx3-ubyte").write_bytes(b""))
        mnist("labels 255", lambda r: write_idx(r / "train-labels-idx1-ubyte", np.full(20, 255, np.uint8)))
        mnist("label count mismatch", lambda r: write_idx(r / "train-labels-idx1-ubyte", np.zeros(5, np.uint8)))
        mnist("gz bomb header", lambda r: (r / "train-images-idx3-ubyte").unlink() or
              (r / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_header([20, 28, 28]) + b"\0" * 10)))
        mnist("canonical name, partial, no --allow-partial", lambda r: None, name="mnist")

        def cifar(label, mutate, expect="refuse"):
            root = src / f"cf{len(self.results)}"
            write_cifar10(root, 10)
            mutate(root / "cifar-10-batches-py")
            self.zoo("cache", f"ingest cifar pickles: {label}", "ingest", f"cf{len(self.results)}", "--root", root,
                     expect=expect, protect=protect, timeout=60)

        class P:
            def __reduce__(self):
                return (os.system, (f"touch {P.path}",))

        def pk(obj):
            return pickle.dumps(obj, protocol=2)

        P.path = self.w / f"{MARK}_cifar"
        cifar("os.system payload", lambda d: (d / "data_batch_1").write_bytes(pk({b"data": P(), b"labels": [0]})))
        cifar("payload in meta", lambda d: (d / "batches.meta").write_bytes(pk({b"label_names": P()})))
        cifar("numpy-looking global payload", lambda d: (d / "data_batch_1").write_bytes(
            b"\x80\x02cnumpy\nsys\n." ))
        cifar("builtins eval global", lambda d: (d / "data_batch_1").write_bytes(
            b"\x80\x02cbuiltins\neval\nX\x04\x00\x00\x001+1\x85R."))
        cifar("wrong keys", lambda d: (d / "data_batch_1").write_bytes(pk({b"x": 1})))
        cifar("data wrong length", lambda d: (d / "data_batch_1").write_bytes(
            pk({b"data": np.zeros((10, 5), np.uint8), b"labels": [0] * 10})))
        cifar("labels out of range", lambda d: (d / "data_batch_1").write_bytes(
            pk({b"data": np.zeros((10, 3072), np.uint8), b"labels": [99] * 10})))
        cifar("labels negative", lambda d: (d / "data_batch_1").write_bytes(
            pk({b"data": np.zeros((10, 3072), np.uint8), b"labels": [-1] * 10})))
        cifar("labels strings", lambda d: (d / "data_batch_1").write_bytes(
            pk({b"data": np.zeros((10, 3072), np.uint8), b"labels": ["a"] * 10})))
        cifar("data float", lambda d: (d / "data_batch_1").write_bytes(
            pk({b"data": np.zeros((10, 3072), np.float64), b"labels": [0] * 10})))
        cifar("pickle deep nesting", lambda d: (d / "data_batch_1").write_bytes(b"\x80\x02" + b"]" * 100000 + b"."))
        cifar("truncated pickle", lambda d: (d / "data_batch_1").write_bytes(pk({b"data": 1})[:10]))
        cifar("label names 10000", lambda d: (d / "batches.meta").write_bytes(
            pk({b"label_names": [b"x%d" % i for i in range(10000)]})), expect="any")

    # =========================================================================================== DOWNLOADS
    def sweep_downloads(self):
        import numpy as np
        from PIL import Image

        S = self.srv
        protect = [self.w / "user/docs" / f"doc{i}.txt" for i in range(3)]

        def dl(label, dataset, mirror, expect="refuse", root=None, extra=(), env=None, timeout=90, check=None):
            root = root or self.w / "cases" / f"dl-{len(self.results)}"
            self.zoo("downloads", label, "ingest", dataset, "--download", "--mirror", mirror, "--root", root, *extra,
                     expect=expect, allow=[root], protect=protect, env=env, timeout=timeout,
                     absent=[] if expect != "refuse" else [root / "train-images-idx3-ubyte.gz",
                                                           root / "CINIC-10.tar.gz"], check=check)
            return root

        names = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz"]

        def route_all(prefix, fn):
            for n in names + ["CINIC-10.tar.gz", "cifar-10-python.tar.gz"]:
                S.routes[f"{prefix}{n}"] = fn(n)

        behaviours = {
            "404": lambda n: (lambda h: h.send_error(404)),
            "500": lambda n: (lambda h: h.send_error(500)),
            "wrong content (md5 mismatch)": lambda n: body(b"garbage" * 100),
            "Content-Length 10**12": lambda n: body(b"x" * 100, length=10 ** 12),
            "Content-Length negative": lambda n: body(b"x" * 100, length=-5),
            "Content-Length not a number": lambda n: body(b"x" * 100, length="abc"),
            "body past the cap (no length)": lambda n: body(b"\0" * (15 << 20), length=None, piece=1 << 20),
            "short body": lambda n: body(b"x" * 100, length=1000),
            "connection dropped mid-body": lambda n: body(b"x" * (1 << 20), length=1 << 21, drop_after=1 << 19),
            "redirect to 127.0.0.1 other path": lambda n: redirect(S.url(f"/dl-wrong/{n}")),
            "redirect to file:///etc/passwd": lambda n: redirect("file:///etc/passwd"),
            "redirect loop": lambda n: redirect(S.url(f"/dl-loop/{n}")),
            "gzip content-encoding junk": lambda n: body(b"\x1f\x8b" + os.urandom(200),
                                                         headers=[("Content-Encoding", "gzip")]),
            "header injection": lambda n: body(b"x", headers=[("X-Evil", "a\r\nSet-Cookie: b")]),
        }
        for i, (label, fn) in enumerate(behaviours.items()):
            prefix = {"redirect loop": "/dl-loop/"}.get(label, f"/dl{i}/")
            route_all(prefix, fn)
            route_all("/dl-wrong/", lambda n: body(b"wrong"))
            dl(f"mnist mirror: {label}", "mnist", S.url(prefix))
        route_all("/dl-slow/", lambda n: body(b"x" * 400, piece=10, pause=0.5))
        dl("mnist mirror: slow body past the deadline", "mnist", S.url("/dl-slow/"),
           env={"ZOO_DOWNLOAD_DEADLINE": "3"}, timeout=60)
        for label, mirror in (("file:///etc/", "file:///etc/"), ("ftp://127.0.0.1:9/", "ftp://127.0.0.1:9/"),
                              ("javascript:", "javascript:alert(1)"), ("empty", ""), ("no host", "http:///x/"),
                              ("refused port", "http://127.0.0.1:9/"), ("malformed IPv6", "http://[::1/"),
                              ("newline in URL", S.url("/dl0/") + "\r\nX: y"), ("relative path", "../../user/"),
                              ("file:// user folder", f"file://{self.w}/user/docs/")):
            dl(f"mirror {label}", "mnist", mirror)
        dl("--download of a non-downloadable name", "tiny", S.url("/dl0/"))
        # ZOO_DATA_MIRROR (env) instead of --mirror
        self.zoo("downloads", "ZOO_DATA_MIRROR garbage content", "ingest", "mnist", "--download", "--root",
                 self.w / "cases/dl-env", env={"ZOO_DATA_MIRROR": S.url("/dl2/")}, allow=[self.w / "cases/dl-env"],
                 protect=protect)
        # a root that already holds user files: nothing of theirs is touched
        root = self.w / "cases/dl-userroot"
        root.mkdir()
        (root / "train-images-idx3-ubyte.gz").write_bytes(b"my own file")
        (root / "notes.txt").write_text("mine")
        self.zoo("downloads", "root holds a user file of the same name", "ingest", "mnist", "--download", "--mirror",
                 S.url("/dl2/"), "--root", root, allow=[root], protect=[*protect, root / "notes.txt"])
        self.results[-1]["problems"] += [("deletion", "user file changed")] if (
            root / "train-images-idx3-ubyte.gz").read_bytes() != b"my own file" else []

        # CINIC-10 archives (no published checksum): hostile tarballs
        def tgz(members) -> bytes:
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w:gz") as tf:
                for m, data in members:
                    tf.addfile(m, io.BytesIO(data) if data is not None else None)
            return buf.getvalue()

        def ti(name, data=b"", **kw):
            m = tarfile.TarInfo(name)
            m.size = len(data) if data is not None else 0
            for k, v in kw.items():
                setattr(m, k, v)
            return m, data

        def small_png(v=0):
            b = io.BytesIO()
            Image.fromarray(np.full((32, 32, 3), v, np.uint8)).save(b, "PNG")
            return b.getvalue()

        classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
        good_members = [ti(f"{s}/{c}/{k}.png", small_png(k * 20)) for s in ("train", "valid", "test")
                        for c in classes for k in range(2)]
        marker = self.w / "user/docs"
        archives = {
            "member ../../escape": [ti("../../escape_PWNED.txt", b"x")],
            "member absolute path": [ti(f"{self.w}/user/docs/abs_PWNED.txt", b"x")],
            "symlink member to /etc": [ti("train", None, type=tarfile.SYMTYPE, linkname="/etc")],
            "symlink then write through it": [ti("train", None, type=tarfile.SYMTYPE, linkname=str(marker)),
                                              ti("train/doc0.txt", b"overwritten")],
            "hardlink member to /etc/passwd": [ti("pw", None, type=tarfile.LNKTYPE, linkname="/etc/passwd")],
            "device member": [ti("dev", None, type=tarfile.CHRTYPE, devmajor=1, devminor=3)],
            "fifo member": [ti("fifo", None, type=tarfile.FIFOTYPE)],
            "setuid file": [ti("suid", b"#!/bin/sh\n", mode=0o4755)],
            "size bomb header (truncated data)": None,
            "not a tar": None,
            "empty tar": [],
            "valid tiny CINIC-10": good_members,
            "valid but 'train' exists in root": good_members,
        }
        for i, (label, members) in enumerate(archives.items()):
            if label == "size bomb header (truncated data)":
                m = tarfile.TarInfo("train/big.png")
                m.size = 3 << 30
                data = gzip.compress(m.tobuf() + b"\0" * 4096)
            elif label == "not a tar":
                data = gzip.compress(b"hello" * 100)
            else:
                data = tgz(members)
            S.routes[f"/cinic{i}/CINIC-10.tar.gz"] = body(data)
            root = self.w / "cases" / f"dl-cinic{i}"
            if label.startswith("valid but"):
                (root / "train").mkdir(parents=True)
                (root / "train/mine.txt").write_text("mine")
            ok = label.startswith("valid tiny")
            dl(f"cinic10 archive: {label}", "cinic10", S.url(f"/cinic{i}/"), root=root,
               expect="ok" if ok else "refuse", extra=("--allow-partial",) if ok else (),
               check=(lambda _d, o, e, r=root: None if (r / "train/airplane/0.png").is_file() else "not unpacked")
               if ok else None)
            if label.startswith("valid but") and (root / "train/mine.txt").read_text() != "mine":
                self.results[-1]["problems"].append(("deletion", "user's train/mine.txt changed"))
            # no escape outside the root
            for p in (self.w / "escape_PWNED.txt", self.w / "cases/escape_PWNED.txt",
                      self.w / "user/docs/abs_PWNED.txt"):
                if p.exists():
                    self.results[-1]["problems"].append(("write_outside", str(p)))
        # weights pull
        good = (REPO / "zoo/weights/lenet5.mnist.safetensors").read_bytes()
        S.routes["/wgood/lenet5.mnist.safetensors"] = body(good)
        S.routes["/wbad/lenet5.mnist.safetensors"] = body(b"x" * len(good))
        S.routes["/wbig/lenet5.mnist.safetensors"] = body(b"x" * (len(good) * 3), length=None)
        S.routes["/wlen/lenet5.mnist.safetensors"] = body(good, length=10 ** 12)
        S.routes["/wredir/lenet5.mnist.safetensors"] = redirect("file:///etc/passwd")
        wdir = self.w / "home/weights/lenet5.mnist.safetensors"
        # A private manifest whose store lacks the file (the checkout's zoo/weights holds every file, so a pull
        # against the package manifest only says "already installed").
        pm = self.w / "fx/pullman"
        pm.mkdir(parents=True)
        entry = json.loads((REPO / "zoo/weights/manifest.json").read_text())["weights"]["lenet5.mnist"]
        (pm / "manifest.json").write_text(json.dumps({"format": json.loads((REPO / "zoo/weights/manifest.json")
                                                                            .read_text()).get("format"),
                                                      "weights": {"lenet5.mnist": entry}}))

        def pull(label, *args, expect="refuse", env=None):
            if wdir.exists():
                wdir.unlink()
            self.zoo("downloads", f"weights pull: {label}", "weights", "pull", *args, "--no-progress", expect=expect,
                     env={"ZOO_MANIFEST": str(pm / "manifest.json"), **(env or {})}, protect=protect, absent=[wdir] if expect == "refuse" else [],
                     check=(lambda _d, o, e: None if wdir.is_file() and wdir.read_bytes() == good else "not installed")
                     if expect == "ok" else None)

        pull("good mirror", "lenet5.mnist", "--from", S.url("/wgood/"), expect="ok")
        pull("wrong bytes", "lenet5.mnist", "--from", S.url("/wbad/"))
        pull("body past the size", "lenet5.mnist", "--from", S.url("/wbig/"))
        pull("Content-Length 10**12", "lenet5.mnist", "--from", S.url("/wlen/"))
        pull("redirect to file://", "lenet5.mnist", "--from", S.url("/wredir/"))
        pull("404", "lenet5.mnist", "--from", S.url("/nothing/"))
        pull("file:///etc/", "lenet5.mnist", "--from", "file:///etc/")
        pull("ftp://", "lenet5.mnist", "--from", "ftp://127.0.0.1:9/")
        pull("empty --from", "lenet5.mnist", "--from", "")
        lnk = self.w / "fx/pullsrc"
        lnk.mkdir(parents=True)
        os.symlink("/etc/passwd", lnk / "lenet5.mnist.safetensors")
        pull("folder whose file is a symlink to /etc/passwd", "lenet5.mnist", "--from", lnk)
        pull("tag ../x", "../x", "--from", S.url("/wgood/"))
        pull("pattern matching nothing", "zz*", "--from", S.url("/wgood/"))
        pull("tags and --all", "lenet5.mnist", "--all", "--from", S.url("/wgood/"))
        pull("ZOO_WEIGHTS_URL bad bytes", "lenet5.mnist", env={"ZOO_WEIGHTS_URL": S.url("/wbad/")})
        if wdir.exists():
            wdir.unlink()
        self.api("downloads", "zoo.load(tag) fetches from ZOO_WEIGHTS_URL: bad bytes", "import zoo; "
                 "zoo.load('lenet5.mnist')", env={"ZOO_MANIFEST": str(pm / "manifest.json"),
                                                  "ZOO_WEIGHTS_URL": S.url("/wbad/")}, absent=[wdir])
        self.api("downloads", "zoo.load(tag) fetches from ZOO_WEIGHTS_URL: good bytes", "import zoo; "
                 "print(zoo.load('lenet5.mnist').zoo_meta['tag'])", env={"ZOO_MANIFEST": str(pm / "manifest.json"),
                                                                           "ZOO_WEIGHTS_URL": S.url("/wgood/")},
                 expect="ok", check=lambda _d, o, e: None if wdir.is_file() and wdir.read_bytes() == good
                 else "not installed")

    # =========================================================================================== NATIVE
    def sweep_native(self):
        fx = self.w / "fx/native"
        fx.mkdir(parents=True)
        import numpy as np
        from PIL import Image

        b = io.BytesIO()
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(b, "PNG")
        (fx / "ok.png").write_bytes(b.getvalue())
        b = io.BytesIO()
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(b, "JPEG")
        (fx / "ok.jpg").write_bytes(b.getvalue())
        (fx / "empty.png").write_bytes(b"")
        (fx / "big.png").write_bytes((fx / "ok.png").read_bytes() + b"\0" * (1 << 20))
        os.mkfifo(fx / "fifo.png")
        os.symlink("/dev/zero", fx / "zero.png")
        png, jpg = str(fx / "ok.png"), str(fx / "ok.jpg")
        n = self.native
        # decode (raw binding and the public wrapper)
        for label, data in (("str", "'abc'"), ("int", "5"), ("None", "None"), ("empty bytes", "b''"),
                            ("1 byte", "b'\\x89'"), ("PNG signature only", "b'\\x89PNG\\r\\n\\x1a\\n'"),
                            ("JPEG SOI only", "b'\\xff\\xd8\\xff'"), ("bytearray", "bytearray(b'xyz')"),
                            ("memoryview", "memoryview(b'xyz')")):
            if label in ("str", "None", "memoryview"):
                n(f"_native.decode data={label}", f"print(N.decode({data}, np.zeros((8, 8, 3), np.uint8)))")
            n(f"native.decode data={label}", f"print(Z.decode({data}, np.zeros((8, 8, 3), np.uint8)))",
              expect="refuse" if label in ("str", "int", "None") else "any")
        outs = {"float32": "np.zeros((8, 8, 3), np.float32)", "2-D": "np.zeros((8, 8), np.uint8)",
                "non-contiguous": "np.zeros((8, 16, 3), np.uint8)[:, ::2]", "read-only": "np.zeros((8,8,3),np.uint8)"
                ".copy(); o.flags.writeable = False" , "0x0x3": "np.zeros((0, 0, 3), np.uint8)",
                "2 channels": "np.zeros((8, 8, 2), np.uint8)", "4 channels": "np.zeros((8, 8, 4), np.uint8)",
                "big-endian uint16": "np.zeros((8,8,3), '>u2')", "a list": "[[0]]",
                "broadcast (0 strides)": "np.broadcast_to(np.zeros(1, np.uint8), (8, 8, 3))",
                "unaligned uint8 view": "np.frombuffer(bytearray(8*8*3+1), np.uint8)[1:].reshape(8, 8, 3)",
                "torch tensor": "torch.zeros(8, 8, 3, dtype=torch.uint8)"}
        pngb = f"open({png!r}, 'rb').read()"
        for label, expr in outs.items():
            setup = f"o = {expr}" if "; " not in expr else f"o = {expr}"
            n(f"_native.decode out={label}", f"{setup}\nprint(N.decode({pngb}, o))")
            n(f"native.decode out={label}", f"{setup}\nprint(Z.decode({pngb}, o))",
              expect="any" if label in ("unaligned uint8 view", "0x0x3") else "refuse")
        n("decode PNG 1x1 into 8x8", "b = __import__('io').BytesIO(); __import__('PIL.Image').Image.fromarray("
          "np.zeros((1,1,3),np.uint8)).save(b,'PNG'); print(Z.decode(b.getvalue(), np.zeros((8,8,3),np.uint8)))",
          expect="ok")
        n("decode mutation fuzz PNG (300 mutants)", f"""
            rng = np.random.default_rng(0); src = bytearray({pngb}); o = np.zeros((8, 8, 3), np.uint8)
            for i in range(300):
                d = bytearray(src)
                for _ in range(rng.integers(1, 8)):
                    d[rng.integers(0, len(d))] = rng.integers(0, 256)
                N.decode(bytes(d[: rng.integers(1, len(d) + 1)]), o)
            print('done')
        """, expect="ok", timeout=120)
        n("decode mutation fuzz JPEG (300 mutants)", f"""
            rng = np.random.default_rng(1); src = bytearray(open({jpg!r}, 'rb').read()); o = np.zeros((8, 8, 1), np.uint8)
            for i in range(300):
                d = bytearray(src)
                for _ in range(rng.integers(1, 8)):
                    d[rng.integers(0, len(d))] = rng.integers(0, 256)
                N.decode(bytes(d[: rng.integers(1, len(d) + 1)]), o)
            print('done')
        """, expect="ok", timeout=120)
        # decode_files
        o4 = "np.zeros((1, 8, 8, 3), np.uint8)"
        for label, path in (("missing", str(fx / "nope.png")), ("a directory", str(fx)), ("empty", str(fx / "empty.png")),
                            ("a FIFO", str(fx / "fifo.png")), ("symlink to /dev/zero", str(fx / "zero.png")),
                            ("/dev/zero", "/dev/zero"), ("NUL in path", png + "\0x"), ("empty path", ""),
                            ("4096-char path", "/" + "a" * 4095)):
            n(f"_native.decode_files path {label}", f"print(N.decode_files([{path!r}], {o4}, 2, 1 << 20))", timeout=30)
            n(f"native.decode_files path {label}", f"print(Z.decode_files([{path!r}], {o4}))", expect="any",
              timeout=30)
        for label, args in (("threads 0", "0, 1<<20"), ("threads -1", "-1, 1<<20"), ("threads 2**31-1", "2**31-1, 1<<20"),
                            ("threads 2**31", "2**31, 1<<20"), ("max_bytes -1", "1, -1"), ("max_bytes 0", "1, 0"),
                            ("max_bytes 2**63", "1, 2**63"), ("threads a str", "'2', 1")):
            n(f"_native.decode_files {label}", f"print(N.decode_files([{png!r}], {o4}, {args}))")
        for label, kw in (("threads 0", "threads=0"), ("threads -1", "threads=-1"), ("threads 10**6", "threads=10**6"),
                          ("threads 1.5", "threads=1.5"), ("threads True", "threads=True"),
                          ("max_bytes -1", "max_bytes=-1"), ("max_bytes 'x'", "max_bytes='x'"),
                          ("max_bytes NaN", "max_bytes=float('nan')"), ("max_bytes 1.5", "max_bytes=1.5"),
                          ("max_bytes 2**70", "max_bytes=2**70"), ("max_bytes None", "max_bytes=None")):
            exp = "ok" if label in ("threads 0", "max_bytes None") else (
                "any" if label in ("max_bytes -1",) else "refuse")
            n(f"native.decode_files {label}", f"print(Z.decode_files([{png!r}], {o4}, {kw}))", expect=exp)
        n("native.decode_files file over max_bytes", f"s = Z.decode_files([{str(fx / 'big.png')!r}], {o4}, max_bytes=1000)"
          f"\nassert s[0] == Z.TOO_LARGE, s; print(s)", expect="ok")
        n("native.decode_files N mismatch", f"print(Z.decode_files([{png!r}, {png!r}], {o4}))", expect="refuse")
        n("native.decode_files paths a str", f"print(Z.decode_files({png!r}, {o4}))", expect="refuse")
        n("native.decode_files 10000 paths", f"print(Z.decode_files([{png!r}] * 10000, np.zeros((10000, 8, 8, 3), "
          "np.uint8), threads=64).sum())", expect="ok", timeout=60)
        # channel_histogram
        for label, expr in (("empty (0, 3)", "np.zeros((0, 3), np.uint8)"), ("0-d", "np.uint8(3)"),
                            ("0-d array", "np.array(3, np.uint8)"), ("(5, 0)", "np.zeros((5, 0), np.uint8)"),
                            ("float", "np.zeros((5, 3), np.float32)"), ("list", "[[1, 2, 3]]"),
                            ("non-contiguous", "np.zeros((10, 10, 3), np.uint8)[::2]"),
                            ("broadcast", "np.broadcast_to(np.zeros(3, np.uint8), (1000, 3))"),
                            ("int8", "np.zeros((5, 3), np.int8)")):
            exp = "refuse" if label in ("0-d", "0-d array", "float", "list", "int8") else "ok"
            n(f"native.channel_histogram {label}", f"print(Z.channel_histogram({expr}).shape)", expect=exp)
            if label in ("(5, 0)", "0-d array", "broadcast"):
                n(f"_native.channel_histogram {label}", f"print(N.channel_histogram({expr}, 2).shape)")
        for t in ("0", "-5", "2**31-1", "2**40"):
            n(f"_native.channel_histogram threads {t}", f"print(N.channel_histogram(np.zeros((9, 3), np.uint8), {t}))")
        # gather (public wrapper)
        pre = ("src = np.random.default_rng(0).integers(0, 255, (4, 8, 8, 3), dtype=np.uint8)\n"
               "out = torch.empty(2, 3, 8, 8)\nlut = Z.make_lut([0.5]*3, [0.25]*3)\n")
        g = "Z.gather_native(src, {idx}, {params}, {pad}, {cut}, {lut}, False, {out}, {threads})"

        def gather(label, expect="refuse", idx="[0, 1]", params="{}", pad="0", cut="0", lut="lut", out="out",
                   threads="2", extra=""):
            n(f"native.gather_native {label}", pre + extra + "r = " + g.format(idx=idx, params=params, pad=pad, cut=cut,
                                                                              lut=lut, out=out, threads=threads)
              + "\nprint(tuple(r.shape), bool(torch.isfinite(r.float()).all()))", expect=expect)

        gather("control", expect="ok")
        gather("index out of range", idx="[0, 4]")
        gather("index negative", idx="[-1, 0]")
        gather("index 2**62", idx="[2**62, 0]")
        gather("index float", idx="[0.5, 1.0]")
        gather("index 2-D", idx="[[0, 1]]")
        gather("index strings", idx="['a', 'b']")
        gather("index uint64 huge", idx="np.array([2**63, 0], np.uint64)")
        gather("index empty", idx="[]", out="torch.empty(0, 3, 8, 8)", expect="ok")
        gather("crop_y negative", params="{'crop_y': [-1, 0], 'crop_x': [0, 0]}", pad="4")
        gather("crop beyond padded", params="{'crop_y': [9, 0], 'crop_x': [0, 0]}", pad="4")
        gather("crop int32 max", params="{'crop_y': [2**31-1, 0], 'crop_x': [0, 0]}", pad="4")
        gather("crop int64 huge", params="{'crop_y': [2**40, 0], 'crop_x': [0, 0]}", pad="4")
        gather("crop_y only", params="{'crop_y': [0, 0]}", pad="4")
        gather("crop length 1", params="{'crop_y': [0], 'crop_x': [0]}", pad="4")
        gather("pad negative", pad="-1")
        gather("pad 2**31", pad="2**31")
        gather("pad 10**6 with crops", params="{'crop_y': [10**6, 0], 'crop_x': [10**6, 0]}", pad="10**6",
               expect="ok")
        gather("flip 255", params="{'flip': [255, 2]}", expect="ok")
        gather("flip -1", params="{'flip': [-1, 0]}")
        gather("flip bool", params="{'flip': [True, False]}", expect="ok")
        gather("cutout huge", cut="2**31-1", params="{'cut_y': [0, 0], 'cut_x': [0, 0]}", expect="ok")
        gather("cutout negative", cut="-3", params="{'cut_y': [0, 0], 'cut_x': [0, 0]}", expect="any")
        gather("cutout without centres", cut="4")
        gather("cut_y int32 extremes", cut="8", params="{'cut_y': [-2**31, 2**31-1], 'cut_x': [2**31-1, -2**31]}",
               expect="ok")
        gather("lut wrong shape", lut="np.zeros((3, 255), np.float32)")
        gather("lut NaN", lut="np.full((3, 256), np.nan, np.float32)", expect="any")
        gather("lut a string", lut="'x'")
        gather("out wrong dtype", out="torch.empty(2, 3, 8, 8, dtype=torch.float64)")
        gather("out wrong shape", out="torch.empty(2, 3, 8, 9)")
        gather("out non-contiguous", out="torch.empty(2, 8, 8, 3).permute(0, 3, 1, 2)")
        gather("out a numpy array", out="np.empty((2, 3, 8, 8), np.float32)")
        gather("out on meta device", out="torch.empty(2, 3, 8, 8, device='meta')")
        gather("threads 0", threads="0")
        gather("threads 10**6", threads="10**6")
        gather("threads -1", threads="-1")
        gather("src float", extra="src = src.astype(np.float32)\n")
        gather("src 2 channels", extra="src = np.zeros((4, 8, 8, 2), np.uint8)\n")
        gather("src non-contiguous", extra="src = src[:, :, ::2]\n")
        gather("src read-only", extra="src.flags.writeable = False\n", expect="ok")
        gather("src empty", extra="src = np.zeros((0, 8, 8, 3), np.uint8)\n")
        # the raw binding, arguments the wrapper never passes
        raw = ("src = np.zeros((4, 8, 8, 3), np.uint8)\nidx = np.array([0, 1], np.int64)\n")
        for label, call in (
                ("out_h larger than src, no crop", "N.gather(src, idx, None, None, None, 0, 64, 64, None, None, 0, None,"
                 " True, np.zeros((2, 64, 64, 3), np.uint8), 2)"),
                ("out_h 0", "N.gather(src, idx, None, None, None, 0, 0, 8, None, None, 0, None, True, "
                 "np.zeros((2, 0, 8, 3), np.uint8), 2)"),
                ("out size overflow", "N.gather(src, idx, None, None, None, 0, 2**30, 2**30, None, None, 0, None, "
                 "True, np.zeros(1, np.uint8), 2)"),
                ("cut with int32 max centre", "N.gather(src, idx, None, None, None, 0, 8, 8, np.full(2, 2**31-1, "
                 "np.int32), np.full(2, 2**31-1, np.int32), 2**31-1, None, True, np.zeros((2, 8, 8, 3), np.uint8), 2)"),
                ("index int32 (not int64)", "N.gather(src, idx.astype(np.int32), None, None, None, 0, 8, 8, None, None,"
                 " 0, None, True, np.zeros((2, 8, 8, 3), np.uint8), 2)"),
                ("index None", "N.gather(src, None, None, None, None, 0, 8, 8, None, None, 0, None, True, "
                 "np.zeros((2, 8, 8, 3), np.uint8), 2)"),
                ("threads -2**31", "N.gather(src, idx, None, None, None, 0, 8, 8, None, None, 0, None, True, "
                 "np.zeros((2, 8, 8, 3), np.uint8), -2**31)"),
                ("lut float64", "N.gather(src, idx, None, None, None, 0, 8, 8, None, None, 0, np.zeros((3, 256)), True, "
                 "np.zeros((2, 8, 8, 3), np.float32), 2)"),
                ("out read-only", "o = np.zeros((2, 8, 8, 3), np.uint8); o.flags.writeable = False; N.gather(src, idx, "
                 "None, None, None, 0, 8, 8, None, None, 0, None, True, o, 2)")):
            n(f"_native.gather {label}", raw + call + "\nprint('returned')")
        # augment specs (public)
        for label, spec in (("crop_pad -1", "{'crop_pad': -1}"), ("cutout -3", "{'cutout': -3}"),
                            ("crop_pad 1.5", "{'crop_pad': 1.5}"), ("flip 'yes'", "{'flip': 'yes'}"),
                            ("brightness NaN", "{'brightness': float('nan')}"), ("brightness -1", "{'brightness': -1}"),
                            ("contrast inf", "{'contrast': float('inf')}"), ("unknown key", "{'rotate': 5}"),
                            ("a list", "['crop']"), ("an int", "5"), ("unknown preset", "'bogus'"),
                            ("crop_pad 10**9", "{'crop_pad': 10**9}"), ("crop_pad True", "{'crop_pad': True}")):
            n(f"Loader augment={label}", f"""
                sys.path.insert(0, {str(REPO)!r})
                from zoo.data import open_split, Loader
                s = open_split('tiny', 'train')
                for x, y in Loader(s, 32, augment={spec}, backend='torch' if 'bright' in {label!r} or 'contrast' in {label!r} else None):
                    assert torch.isfinite(x).all(), 'non-finite batch'
                print('ok')
            """, expect="refuse", timeout=60)

    # =========================================================================================== CLI FLAGS
    def sweep_cli(self):
        T = ["train", "lenet5", "--dataset", "tiny", "--no-progress"]

        def train(label, *flags, expect="refuse", check=None):
            out = self.w / "cases" / f"run-{len(self.results)}"
            self.zoo("cli", f"train {label}", *T, "--out", out, "--batch-size", 32, "--epochs", 1, *flags,
                     expect=expect, allow=[out], check=check, timeout=180,
                     absent=[out / "model.safetensors"] if expect == "refuse" else ())

        def finished(_d, out, err):
            return None if "trained lenet5" in out else "no summary line"

        train("control", expect="ok", check=finished)
        for flag, vals in {
            "--epochs": ["0", "-1", "1e3", "abc"], "--lr": ["nan", "inf", "-1", "0", "11", "1e308"],
            "--batch-size": ["0", "-1", "1.5", "10000000000"], "--seed": ["-1", "4294967296", "1.5"],
            "--momentum": ["nan", "-0.5", "1.5"], "--weight-decay": ["nan", "-1", "inf"],
            "--label-smoothing": ["1.5", "-0.1", "nan"], "--warmup-epochs": ["-1", "inf", "nan"],
            "--grad-clip": ["nan", "-1", "inf"], "--ema": ["1.5", "nan", "-0.1", "1"], "--gamma": ["nan", "-1", "0"],
            "--step-epochs": ["0", "-1"], "--patience": ["-1"], "--val-fraction": ["1", "1.5", "-0.1", "nan", "0.999"],
            "--optimizer": ["bogus"], "--schedule": ["bogus"], "--augment": ["bogus", "../x"],
            "--recipe": ["bogus", "../x"], "--device": ["bogus", "cuda", "cuda:7", "meta"],
            "--labels": ["coarse", "bogus"], "--train-last": ["-1", "0", "1000"], "--train-subset": ["0", "-1", "1.5"],
            "--init": ["bogus", "zoo:", "torchvision:", "xavier:x"],
            "--model-opt": ["dropout=2", "dropout=nan", "dropout=-0.1", "channels=[-1,16]", "act=bogus",
                            "unknown=1", "noequals", "=1", "dropout=__import__('os').system('touch PWNED_mo')",
                            "channels=[100000,100000]", "kernels=[0,0]", "pool=max", "dropout=True"],
        }.items():
            for v in vals:
                exp = "ok" if (flag, v) in {("--train-last", "1000"), ("--model-opt", "pool=max"), ("--ema", "0.999")} \
                    else "refuse"
                if (flag, v) in {("--val-fraction", "0.999"), ("--train-last", "0"), ("--train-last", "1000"),
                                 ("--model-opt", "channels=[100000,100000]")}:
                    exp = "any"
                train(f"{flag} {v}", flag, v, expect=exp)
        train("--resume with no checkpoint (documented: a note, then from scratch)", "--resume", expect="ok")
        # --out collisions
        f = self.w / "cases/outfile"
        f.write_text("a user file\n")
        self.zoo("cli", "train --out is a file", *T, "--out", f, "--epochs", 1, protect=[f])
        self.zoo("cli", "train --out a finished run without --overwrite", *T, "--out", self.w / "runs/base",
                 "--epochs", 1, protect=[self.base])
        od = self.w / "cases/ow"
        shutil.copytree(self.w / "runs/base", od)
        (od / "my_notes.txt").write_text("mine")
        self.zoo("cli", "train --overwrite keeps unrelated user files", *T, "--out", od, "--epochs", 1,
                 "--batch-size", 32, "--overwrite", expect="any", allow=[od], protect=[od / "my_notes.txt"],
                 timeout=180)
        self.zoo("cli", "train --out /proc/x (unwritable)", *T, "--out", "/proc/zoo_sweep", "--epochs", 1)
        self.zoo("cli", "train unknown model", "train", "bogus", "--dataset", "tiny", "--epochs", 1)
        self.zoo("cli", "train dataset ../x", "train", "lenet5", "--dataset", "../x", "--epochs", 1)
        self.zoo("cli", "train dataset not ingested", "train", "lenet5", "--dataset", "nothere", "--epochs", 1)
        # eval
        E = ["eval", self.base, "--no-figures"]

        def ev(label, *flags, expect="refuse", check=None, model=None):
            out = self.w / "cases" / f"rep-{len(self.results)}"
            args = (["eval", model, "--no-figures"] if model else E)
            self.zoo("cli", f"eval {label}", *args, "--out", out, *flags, expect=expect, allow=[out], check=check,
                     timeout=120)

        def top1_ok(d, out, err):
            return None if "top-1" in out or "top1" in out else "no top-1 printed"

        ev("control", expect="ok", check=top1_ok)
        for flag, vals in {"--batch-size": ["0", "-1", "1.5", "10000000000"], "--split": ["bogus", "../x", "train"],
                           "--device": ["bogus", "cuda", "meta"], "--backend": ["bogus"],
                           "--compare": ["bogus", "torch,bogus", ",", "torch,torch"], "--dataset": ["../x", "nothere",
                                                                                                    "cifar10"],
                           "--labels": ["coarse"], "--run-log": ["/nonexistent", "/etc/passwd"]}.items():
            for v in vals:
                exp = "ok" if (flag, v) in {("--split", "train"), ("--compare", "torch,torch"),
                                            ("--batch-size", "10000000000")} else "refuse"
                if (flag, v) == ("--run-log", "/etc/passwd"):
                    exp = "any"
                ev(f"{flag} {v}", flag, v, expect=exp)
        ev("--tta on digits", "--tta")
        ev("onnx file --backend torch", "--backend", "torch", model=self.onnx)
        ev("onnx file control", expect="ok", model=self.onnx, check=top1_ok)
        ev("model tag ../x", model="../x")
        ev("model bogus tag", model="bogus.mnist")
        ev("model /etc/passwd", model="/etc/passwd")
        ev("model .pt that does not exist", model=str(self.w / "nope.pt"))
        rl = self.w / "fx/badlog.jsonl"
        rl.write_text('{"epoch": "x", "train_loss": NaN}\nnot json\n[1,2]\n')
        ev("--run-log malformed", "--run-log", rl, expect="any")
        fo = self.w / "cases/evfile"
        fo.write_text("user\n")
        self.zoo("cli", "eval --out is a file", *E, "--out", fo, protect=[fo])
        # ingest
        for label, args in (("dataset ../x", ["../x", "--root", self.w / "src/tiny"]),
                            ("dataset a/b", ["a/b", "--root", self.w / "src/tiny"]),
                            ("dataset empty", ["", "--root", self.w / "src/tiny"]),
                            ("dataset _x", ["_x", "--root", self.w / "src/tiny"]),
                            ("dataset with NUL", ["a\x01b", "--root", self.w / "src/tiny"]),
                            ("no --root", ["tiny2"]), ("--root missing", ["tiny2", "--root", "/nonexistent"]),
                            ("--root a file", ["tiny2", "--root", "/etc/passwd"]),
                            ("--root empty dir", ["tiny2", "--root", self.w / "fx"]),
                            ("--mirror without --download", ["tiny2", "--root", self.w / "src/tiny", "--mirror", "x"]),
                            ("mnist canonical wrong shape", ["mnist", "--root", self.w / "src/tiny", "--force"]),
                            ("cifar100 --classes on canonical", ["cifar10", "--root", self.w / "src/cifar10",
                                                                 "--classes", "cat,dog", "--force"])):
            self.zoo("cli", f"ingest {label}", "ingest", *args, timeout=60)
        # export
        for label, args, exp in (
                ("--opset 0", ["onnx", self.base, "--opset", "0"], "refuse"),
                ("--opset 999", ["onnx", self.base, "--opset", "999"], "refuse"),
                ("--batch 0", ["onnx", self.base, "--batch", "0"], "refuse"),
                ("--batch -1", ["onnx", self.base, "--batch", "-1"], "refuse"),
                ("--batch abc", ["onnx", self.base, "--batch", "abc"], "refuse"),
                ("--batch 10**9", ["onnx", self.base, "--batch", "1000000000", "--no-verify"], "any"),
                ("--max-real 0", ["onnx", self.base, "--max-real", "0"], "refuse"),
                ("--max-real -1", ["torchscript", self.base, "--max-real", "-1"], "refuse"),
                ("no names", ["onnx"], "refuse"),
                ("bogus name", ["onnx", "bogus"], "refuse"),
                ("name ../x", ["onnx", "../x"], "refuse"),
                ("--dataset ../x", ["onnx", "lenet5", "--dataset", "../x"], "refuse"),
                ("--out a file", ["onnx", self.base, "--out", "/etc/passwd"], "refuse"),
                ("--out /proc", ["onnx", self.base, "--out", "/proc/zoo_sweep"], "refuse"),
                ("--fp16 on cpu", ["onnx", self.base, "--fp16", "--max-real", "10"], "any"),
                ("control onnx", ["onnx", self.base, "--max-real", "10"], "ok"),
                ("control torchscript", ["torchscript", self.base, "--max-real", "10"], "ok"),
                ("an .onnx file as input", ["onnx", self.onnx], "refuse")):
            out = self.w / "cases" / f"exp-{len(self.results)}"
            if "--out" not in args:
                args = [*args, "--out", out]
            self.export("cli", f"export {label}", *args, expect=exp, allow=[out], timeout=180)
        # experiment / demo / publish / weights / list
        for label, args, exp in (
                ("experiment bogus family", ["experiment", "bogus", "--dataset", "tiny"], "refuse"),
                ("experiment --epochs 0", ["experiment", "lenet5", "--dataset", "tiny", "--epochs", "0"], "refuse"),
                ("experiment --epochs -1", ["experiment", "mlp", "--dataset", "tiny", "--epochs", "-1"], "refuse"),
                ("experiment --seed -1", ["experiment", "mlp", "--dataset", "tiny", "--seed", "-1"], "refuse"),
                ("demo no root", ["demo"], "refuse"),
                ("demo --epochs 0", ["demo", "--root", self.w / "src/mnist", "--epochs", "0"], "refuse"),
                ("demo --epochs -3", ["demo", "--root", self.w / "src/mnist", "--epochs", "-3"], "refuse"),
                ("publish missing file", ["publish", "/nonexistent.safetensors"], "refuse"),
                ("publish /etc/passwd", ["publish", "/etc/passwd"], "refuse"),
                ("weights pull nothing", ["weights", "pull"], "refuse"),
                ("weights list pattern", ["weights", "list", "../*"], "ok"),
                ("list pattern", ["list", "[[["], "ok"),
                ("list --markdown", ["list", "--markdown"], "ok"),
                ("info", ["info"], "ok"),
                ("unknown command", ["bogus"], "refuse"),
                ("no command", [], "refuse")):
            out = self.w / "cases" / f"x-{len(self.results)}"
            self.zoo("cli", label, *args, *(["--out", out] if args and args[0] == "experiment" else []), expect=exp,
                     allow=[out], timeout=120, env={"ZOO_MANIFEST": str(self.w / "home/manifest/manifest.json")}
                     if args[:1] == ["publish"] else None)

    # =========================================================================================== PYTHON API
    def sweep_api(self):
        a = self.api
        base = str(self.base)
        for label, arg in (("int", "123"), ("None", "None"), ("empty", "''"), ("../x", "'../x'"),
                           ("bogus tag", "'bogus.mnist'"), ("/etc/passwd", "'/etc/passwd'"), ("a list", "['x']"),
                           ("tag with NUL", "'lenet5.mn\\0ist'"), ("bare name", "'lenet5'")):
            a("api", f"zoo.load({label})", f"import zoo; m = zoo.load({arg}); print(type(m).__name__)",
              expect="ok" if label == "bare name" else "refuse")
        for label, kw, exp in (
                ("bogus name", "'bogus'", "refuse"), ("num_classes 0", "'lenet5', num_classes=0", "refuse"),
                ("num_classes -1", "'lenet5', num_classes=-1", "refuse"),
                ("num_classes 1.5", "'lenet5', num_classes=1.5", "refuse"),
                ("num_classes '10'", "'lenet5', num_classes='10'", "refuse"),
                ("num_classes True", "'lenet5', num_classes=True", "refuse"),
                ("in_chans 0", "'lenet5', in_chans=0", "refuse"), ("in_chans -3", "'lenet5', in_chans=-3", "refuse"),
                ("img_size 0", "'lenet5', img_size=0", "refuse"), ("img_size -5", "'lenet5', img_size=-5", "refuse"),
                ("img_size 10**6", "'mlp2', img_size=10**6", "refuse"),
                ("img_size nan", "'lenet5', img_size=float('nan')", "refuse"),
                ("dropout nan", "'lenet5', dropout=float('nan')", "refuse"),
                ("dropout 1", "'lenet5', dropout=1.0", "refuse"),
                ("unknown override", "'lenet5', bogus=1", "refuse"),
                ("dataset ../x", "'lenet5', dataset='../x'", "refuse"),
                ("init bogus", "'lenet5', init='bogus'", "refuse"),
                ("resnet18 width 0", "'resnet18', width=0", "refuse"),
                ("mlp hidden negative", "'mlp2', hidden=-1", "refuse"),
                ("convnet_bn dropout -1", "'convnet_bn', dropout=-1", "refuse"),
                ("pretrained with num_classes", "'lenet5', pretrained=True, num_classes=3", "refuse"),
                ("control", "'lenet5'", "ok")):
            a("api", f"create_model({label})", f"import zoo; m = zoo.create_model({kw}); print(sum(p.numel() for p in "
              "m.parameters()))", expect=exp)
        pre = "import zoo, torch\np = zoo.preprocess_for('lenet5.mnist')\n"
        for label, img, exp in (
                ("uint8 28x28", "np.zeros((28, 28), np.uint8)", "ok"),
                ("float64 NaN array", "np.full((28, 28), np.nan)", "refuse"),
                ("float tensor inf", "torch.full((1, 28, 28), float('inf'))", "refuse"),
                ("int64 array", "np.full((28, 28), 10**12, np.int64)", "refuse"),
                ("negative int array", "np.full((28, 28), -5, np.int32)", "refuse"),
                ("empty array", "np.zeros((0, 0), np.uint8)", "refuse"),
                ("5-D array", "np.zeros((1, 1, 1, 28, 28), np.uint8)", "refuse"),
                ("bool array", "np.zeros((28, 28), bool)", "any"),
                ("complex array", "np.zeros((28, 28), complex)", "refuse"),
                ("string path missing", "'/nonexistent.png'", "refuse"),
                ("path to /etc/passwd", "'/etc/passwd'", "refuse"),
                ("path to a directory", "'/etc'", "refuse"),
                ("None", "None", "refuse"), ("int", "5", "refuse"), ("empty list", "[]", "refuse"),
                ("list of mixed", "[np.zeros((28, 28), np.uint8), 5]", "refuse"),
                ("huge 1x20000x20000", "np.zeros((20000, 20000), np.uint8)", "any"),
                ("1x1 image", "np.zeros((1, 1), np.uint8)", "ok"),
                ("4 channels", "np.zeros((28, 28, 4), np.uint8)", "any"),
                ("7 channels", "np.zeros((28, 28, 7), np.uint8)", "refuse"),
                ("uint16 tensor", "torch.zeros(1, 28, 28, dtype=torch.int16)", "refuse"),
                ("float in [0,1] tensor", "torch.rand(1, 28, 28)", "refuse"),  # documented: uint8 pixels only
                ("float > 1 tensor", "torch.full((1, 28, 28), 300.0)", "refuse"),
                ("PIL image", "__import__('PIL.Image').Image.new('RGB', (28, 28))", "ok")):
            a("api", f"preprocess_for(model)({label})", pre + f"x = p({img})\nassert torch.isfinite(x).all(), "
              "'non-finite output'\nassert x.ndim == 4, x.shape\nprint(tuple(x.shape))", expect=exp, timeout=60)
        for label, arg in (("bogus tag", "'bogus.mnist'"), ("int", "5"), ("None", "None"), ("dict", "{}"),
                           ("meta without mean", "type('M', (), {'zoo_meta': {}})()")):
            a("api", f"preprocess_for({label})", f"import zoo; zoo.preprocess_for({arg})")
        ev = f"import zoo\nm = zoo.load({base!r})\n"
        for label, kw, exp in (
                ("control", "", "ok"), ("batch_size 0", "batch_size=0", "refuse"),
                ("batch_size -1", "batch_size=-1", "refuse"), ("batch_size 1.5", "batch_size=1.5", "refuse"),
                ("batch_size True", "batch_size=True", "refuse"), ("batch_size nan", "batch_size=float('nan')",
                                                                   "refuse"),
                ("batch_size '64'", "batch_size='64'", "refuse"), ("backend bogus", "backend='bogus'", "refuse"),
                ("device bogus", "device='bogus'", "refuse"), ("device cuda", "device='cuda'", "refuse"),
                ("device 5", "device=5", "refuse"), ("split ../x", "split='../x'", "refuse"),
                ("split bogus", "split='bogus'", "refuse"), ("tta on digits", "tta=True", "refuse"),
                ("tta 'yes'", "tta='yes'", "refuse"), ("labels bogus", "labels='bogus'", "refuse"),
                ("dataset None", "dataset=None", "refuse")):
            ds = "" if "dataset=" in kw else "'mnist', "
            a("api", f"evaluate({label})", ev + f"r = zoo.evaluate(m, {ds}{kw})\nassert 0 <= r.top1 <= 1\n"
              "print(r.top1)", expect=exp, timeout=90)
        a("api", "evaluate(string that is no model)", "import zoo; zoo.evaluate('bogus', 'mnist')")
        a("api", "evaluate(a non-module object)", "import zoo; zoo.evaluate(5, 'mnist')")
        a("api", "evaluate(model for 3 channels on mnist)", "import zoo; zoo.evaluate(zoo.create_model('lenet5', "
          "dataset='cifar10'), 'mnist')")
        a("api", "evaluate(model with 5 classes on mnist)", "import zoo; zoo.evaluate(zoo.create_model('lenet5', "
          "num_classes=5), 'mnist')")
        a("api", "evaluate(model returning NaN)", """
            import zoo, torch
            class M(torch.nn.Module):
                def forward(self, x):
                    return torch.full((x.shape[0], 10), float('nan'))
            m = M(); m.zoo_meta = zoo.load(%r).zoo_meta
            r = zoo.evaluate(m, 'mnist')
            assert r.problems or getattr(r, 'nonfinite_logits', None), 'NaN logits reported as a clean result'
            print(r.top1)
        """.replace("%r", repr(base)), expect="any")
        tr = "import zoo\n"
        for label, kw, exp in (
                ("epochs 0", "epochs=0", "refuse"), ("epochs -1", "epochs=-1", "refuse"),
                ("epochs 1.5", "epochs=1.5", "refuse"), ("epochs True", "epochs=True", "refuse"),
                ("lr nan", "lr=float('nan')", "refuse"), ("lr -1", "lr=-1", "refuse"),
                ("lr 10**400", "lr=10**400", "refuse"), ("batch_size 0", "batch_size=0", "refuse"),
                ("seed -1", "seed=-1", "refuse"), ("seed 2**32", "seed=2**32", "refuse"),
                ("seed 1.5", "seed=1.5", "refuse"), ("device bogus", "device='bogus'", "refuse"),
                ("recipe bogus", "recipe='bogus'", "refuse"), ("augment dict bad", "augment={'cutout': -3}", "refuse"),
                ("augment dict unknown key", "augment={'rot': 1}", "refuse"),
                ("model opts not dict", "model=[1]", "refuse"), ("unknown kwarg", "bogus=1", "refuse"),
                ("out_dir an int", "out_dir=5", "refuse"), ("train_subset 0", "train_subset=0", "refuse"),
                ("train_last -1", "train_last=-1", "refuse"), ("init 5", "init=5", "refuse"),
                ("labels bogus", "labels='bogus'", "refuse"), ("fp16_weights 'x'", "fp16_weights='x'", "any"),
                ("dataset ../x", None, "refuse"), ("name int", None, "refuse")):
            out = self.w / "cases" / f"run-{len(self.results)}"
            if label == "dataset ../x":
                call = f"zoo.train('lenet5', '../x', epochs=1, out_dir={str(out)!r})"
            elif label == "name int":
                call = f"zoo.train(5, 'tiny', epochs=1, out_dir={str(out)!r})"
            else:
                call = (f"zoo.train('lenet5', 'tiny', **dict(dict(epochs=1, batch_size=32, progress=False, "
                        f"out_dir={str(out)!r}), {kw}))")
            a("api", f"train({label})", tr + call, expect=exp, allow=[out], timeout=180,
              absent=[out / "model.safetensors"] if exp == "refuse" else ())
        ld = "from zoo.data import open_split, Loader, loader\ns = open_split('tiny', 'train')\n"
        for label, kw, exp in (
                ("batch_size 0", "batch_size=0", "refuse"), ("batch_size nan", "batch_size=float('nan')", "refuse"),
                ("batch_size 10**12", "batch_size=10**12", "ok"), ("num_threads 0", "num_threads=0", "refuse"),
                ("num_threads 10**6", "num_threads=10**6", "refuse"), ("prefetch 0", "prefetch=0", "refuse"),
                ("shard (1, 1)", "shard=(1, 1)", "refuse"), ("shard [0, 2]", "shard=[0, 2]", "refuse"),
                ("indices out of range", "indices=[10**6]", "refuse"), ("indices negative", "indices=[-1]", "refuse"),
                ("indices float", "indices=[0.5, 1.7]", "refuse"), ("indices 2-D", "indices=[[0, 1]]", "refuse"),
                ("indices strings", "indices=['a']", "refuse"), ("backend bogus", "backend='bogus'", "refuse"),
                ("device bogus", "device='bogus'", "refuse"), ("device cuda", "device='cuda'", "refuse"),
                ("dtype a string", "dtype='float32'", "refuse"), ("transform on native", "transform=abs", "refuse"),
                ("shuffle 'x'", "shuffle='x'", "any"), ("seed -1", "seed=-1", "refuse"),
                ("seed 2**64", "seed=2**64", "refuse"), ("control", "", "ok")):
            bs = "" if "batch_size" in kw else "batch_size=32, "
            a("api", f"Loader({label})", ld + f"n = 0\nfor x, y in Loader(s, {bs}{kw}):\n    assert torch.isfinite(x)"
              ".all(); n += len(y)\nprint(n)".replace("torch.", "__import__('torch')."), expect=exp, timeout=60)
        for label, call in (("dataset ../x", "open_split('../x', 'train')"), ("split ../x", "open_split('tiny', '../x')"),
                            ("dataset int", "open_split(5, 'train')"), ("labels bogus", "open_split('tiny', 'train', "
                                                                                        "labels='bogus')"),
                            ("labels coarse on tiny", "open_split('tiny', 'train', labels='coarse')"),
                            ("loader bogus", "loader('nothere')"), ("loader batch -1", "loader('tiny', 'train', -1)")):
            a("api", f"data.{label}", f"from zoo.data import open_split, loader\n{call}")
        for label, call in (("root missing", "ingest('newds', '/nonexistent')"),
                            ("root None", "ingest('newds', None)"), ("splits a str", f"ingest('newds2', "
                                                                     f"{str(self.w / 'src/tiny')!r}, splits='train')"),
                            ("threads -1", f"ingest('newds3', {str(self.w / 'src/tiny')!r}, threads=-1)"),
                            ("classes a str", f"ingest('newds4', {str(self.w / 'src/tiny')!r}, classes='a')"),
                            ("unknown option", f"ingest('newds5', {str(self.w / 'src/tiny')!r}, bogus=1)"),
                            ("resize float", f"ingest('newds6', {str(self.w / 'src/tiny')!r}, resize=1.5)")):
            a("api", f"data.ingest({label})", f"from zoo.data import ingest\n{call}", timeout=60)
        # load_exported
        fx = self.w / "fx/onnx"
        fx.mkdir(parents=True)
        import onnx

        for i, loc in enumerate(("../../../../etc/passwd", "/etc/passwd", "sub/../../x.bin")):
            p = fx / f"ext{i}.onnx"
            onnx.save_model(onnx.load(str(self.onnx)), str(p), save_as_external_data=True, location=f"w{i}.bin",
                            size_threshold=0)
            mm = onnx.load(str(p), load_external_data=False)
            for t in mm.graph.initializer:
                for e in t.external_data:
                    if e.key == "location":
                        e.value = loc
            p.write_bytes(mm.SerializeToString())
            a("api", f"load_exported(.onnx external data {loc})", f"import zoo; r = zoo.load_exported({str(p)!r}); "
              "print(r)")
            ev_out = self.w / "cases" / f"rep-{len(self.results)}"
            self.zoo("api", f"zoo eval .onnx external data {loc}", "eval", p, "--dataset", "mnist", "--out", ev_out,
                     allow=[ev_out])
        os.symlink("/etc/passwd", fx / "passwd.onnx")
        (fx / "garbage.onnx").write_bytes(os.urandom(1000))
        (fx / "empty.onnx").write_bytes(b"")
        mm = onnx.load(str(self.onnx))
        del mm.metadata_props[:]
        (fx / "nometa.onnx").write_bytes(mm.SerializeToString())
        for f in ("passwd.onnx", "garbage.onnx", "empty.onnx", "nometa.onnx", "nope.onnx", "x.bin"):
            a("api", f"load_exported({f})", f"import zoo, torch; r = zoo.load_exported({str(fx / f)!r}); "
              "print(r(torch.zeros(1, 1, 28, 28)).shape)", expect="any" if f == "nometa.onnx" else "refuse")
        a("api", "load_exported(device bogus)", f"import zoo; zoo.load_exported({str(self.onnx)!r}, device='bogus')")
        a("api", "Exported called with wrong shape", f"import zoo, torch; r = zoo.load_exported({str(self.onnx)!r}); "
          "r(torch.zeros(1, 3, 5, 5))")
        a("api", "Exported called with NaN", f"import zoo, torch; r = zoo.load_exported({str(self.onnx)!r}); "
          "print(r(torch.full((1, 1, 28, 28), float('nan'))))", expect="any")
        a("api", "Exported called with a numpy array", f"import zoo; r = zoo.load_exported({str(self.onnx)!r}); "
          "r(np.zeros((1, 1, 28, 28), np.float32))", expect="any")
        # export API
        ex = f"import torch, zoo\nfrom export import to_onnx, to_torchscript\nm = zoo.load({base!r})\n"
        for label, call, exp in (
                ("to_onnx opset 0", "to_onnx(m, torch.zeros(1,1,28,28), OUT, opset=0)", "refuse"),
                ("to_onnx wrong example shape", "to_onnx(m, torch.zeros(1,3,5,5), OUT)", "refuse"),
                ("to_onnx example not a tensor", "to_onnx(m, [1], OUT)", "refuse"),
                ("to_onnx model not a module", "to_onnx(5, torch.zeros(1,1,28,28), OUT)", "refuse"),
                ("to_onnx path a dir", "to_onnx(m, torch.zeros(1,1,28,28), os.path.dirname(OUT))", "refuse"),
                ("to_torchscript NaN example", "to_torchscript(m, torch.full((1,1,28,28), float('nan')), OUT)", "any"),
                ("to_onnx NaN weights", "[p.data.fill_(float('nan')) for p in m.parameters()]; "
                                        "to_onnx(m, torch.zeros(1,1,28,28), OUT)", "refuse")):
            out = self.w / "cases" / f"exapi-{len(self.results)}"
            out.mkdir(parents=True)
            a("api", label, ex + call.replace("OUT", repr(str(out / "m.onnx"))), expect=exp, allow=[out],
              timeout=120, absent=[out / "m.onnx"] if exp == "refuse" else ())
        a("api", "weights.publish(bad path)", "from zoo.weights import publish; from pathlib import Path; "
          "publish(Path('/etc/passwd'))", env={"ZOO_MANIFEST": str(self.w / "home/manifest/manifest.json")})
        a("api", "list_models(pattern int)", "import zoo; print(zoo.list_models(5))", expect="any")
        a("api", "list_pretrained('[[[')", "import zoo; print(zoo.list_pretrained('[[['))", expect="any")

    # =========================================================================================== REPORT
    def summary(self):
        classes = {}
        fails = []
        kinds = {}
        for r in self.results:
            c = classes.setdefault(r["class"], {"cases": 0, "failed": 0})
            c["cases"] += 1
            if r["problems"]:
                c["failed"] += 1
                fails.append(r)
            for k, _ in r["problems"]:
                kinds[k] = kinds.get(k, 0) + 1
        tallies = {k: kinds.get(k, 0) for k in ("traceback", "rc0_wrong", "crash", "hang", "write_outside",
                                                "deletion", "leftover", "code_execution", "half_written", "bad_rc",
                                                "unclear_error")}
        tallies["cases_with_traceback_in_stderr"] = sum(r["traceback"] for r in self.results)
        s = {"cases": len(self.results), "classes": classes, "tallies": tallies, "failures": fails}
        (self.out / "summary.json").write_text(json.dumps(s, indent=1, default=str))
        (self.out / "cases.json").write_text(json.dumps(self.results, indent=1, default=str))
        md = ["# zoo hostile-input sweep", "", f"{len(self.results)} cases", "", "| class | cases | failed |",
              "|---|---:|---:|"]
        md += [f"| {k} | {v['cases']} | {v['failed']} |" for k, v in classes.items()]
        md += ["", "| tally | count |", "|---|---:|"] + [f"| {k} | {v} |" for k, v in tallies.items()]
        md += ["", "## Failures", ""]
        for r in fails:
            md.append(f"- `{r['id']}` **{r['name']}** rc={r['rc']}: " + "; ".join(f"{k}: {v}" for k, v in r["problems"]))
            md.append(f"  - `{' '.join(r['argv'])[:300]}`")
        (self.out / "summary.md").write_text("\n".join(md) + "\n")
        return s


ORDER = ("weights", "checkpoints", "cache", "downloads", "native", "cli", "api")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for the work tree and the summary")
    p.add_argument("--only", help="comma-separated classes: " + ",".join(ORDER))
    p.add_argument("--quick", action="store_true")
    p.add_argument("--no-fork", action="store_true", help="a fresh python per case instead of forks of a warm one")
    a = p.parse_args(argv)
    sw = Sweep(Path(a.out), quick=a.quick, fork=not a.no_fork)
    t0 = time.time()
    sw.setup()
    print(f"setup done in {time.time() - t0:.0f} s", flush=True)
    for cls in (a.only.split(",") if a.only else ORDER):
        try:
            getattr(sw, f"sweep_{cls}")()
        except Exception:  # noqa: BLE001 - a bug in the sweep itself: recorded, and the next class still runs
            import traceback

            traceback.print_exc()
            sw.results.append({"id": f"{cls}-harness", "class": cls, "name": "sweep harness error (cases after it in "
                               "this class did not run)", "argv": [], "rc": None, "traceback": False, "signal": False,
                               "seconds": 0, "expect": "", "problems": [("harness", traceback.format_exc()[-300:])],
                               "stderr_tail": ""})
        sw.summary()
    s = sw.summary()
    print(json.dumps({"cases": s["cases"], "classes": s["classes"], "tallies": s["tallies"]}, indent=1))
    print(f"{time.time() - t0:.0f} s; summary: {sw.out / 'summary.md'}")
    return 1 if s["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
