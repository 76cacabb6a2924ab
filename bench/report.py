"""Turn pytest-benchmark JSON files into the README's Markdown table and a PNG chart.

    python bench/report.py bench/results/*.json --md bench/results/RESULTS.md --png bench/results/throughput.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def rows_from(path: Path) -> tuple[dict, list[dict]]:
    data = json.loads(path.read_text())
    mi = data.get("machine_info", {})
    ci = data.get("commit_info", {})
    commit = mi.get("zoo_commit") or (ci.get("id") if ci.get("id") != "unknown" else "")
    host = f"{mi.get('cpu', {}).get('brand_raw', '')} ({mi.get('cpu', {}).get('count', '')} cores)"
    # Files from before the GPU name was recorded: say a GPU ran the CUDA cases, without guessing which.
    cuda = any(str((b.get("extra_info") or {}).get("device", "")).startswith("cuda") or "cuda" in (b["param"] or "")
               or b["param"] == "gpu" for b in data["benchmarks"])
    gpu = mi.get("gpu") or ("a CUDA GPU (name not recorded in this file)" if cuda else "")
    versions = ", ".join(f"{k} {v}" for k, v in mi.get("versions", {}).items() if k not in ("numpy", "zoo"))
    machine = {"file": path.name, "date": data.get("datetime", "")[:10],
               "machine": f"{gpu} on {host}" if gpu else host, "python": mi.get("python_version", ""),
               "versions": versions, "commit": (commit or "")[:10]}
    rows = []
    for b in data["benchmarks"]:
        e = b.get("extra_info", {})
        if "images_per_s" not in e:
            continue
        ratio = {k: v for k, v in e.items() if k.startswith("ratio")}
        rows.append({"suite": b["name"].split("[")[0].replace("test_", ""), "case": b["param"] or b["name"],
                     "img/s": e["images_per_s"], "median ms": b["stats"]["median"] * 1000,
                     "ratio": next((f"{v:.2f}x {k.removeprefix('ratio_')}" for k, v in ratio.items()), "")})
    return machine, rows


def fmt(v: float) -> str:
    return f"{v / 1e6:.2f}M" if v >= 1e6 else f"{v / 1e3:.1f}k" if v >= 1e3 else f"{v:.0f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--md", type=Path, help="write the Markdown table here (default: print)")
    p.add_argument("--png", type=Path, help="write a bar chart of img/s here")
    p.add_argument("--title", default="")
    a = p.parse_args(argv)
    out, panels = [], {}  # (file, suite) -> [(case, img/s)]: one chart panel each
    for f in a.files:
        machine, rows = rows_from(f)
        if not rows:
            continue
        out.append(f"**{f.stem}** — {machine['date']}, {machine['machine']}, Python {machine['python']}"
                   + (f", {machine['versions']}" if machine["versions"] else "")
                   + f", commit {machine['commit'] or 'n/a'}\n")
        out.append("| suite | case | img/s | median ms | ratio |\n|---|---|---:|---:|---|")
        for r in rows:
            out.append(f"| {r['suite']} | {r['case']} | {fmt(r['img/s'])} | {r['median ms']:.3f} | {r['ratio']} |")
            panels.setdefault(f"{f.stem} — {r['suite']} ({machine['machine']})", []).append((r["case"], r["img/s"]))
        out.append("")
    text = "\n".join(out)
    if a.md:
        a.md.write_text(text + "\n")
    else:
        print(text)
    if a.png and panels:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        sizes = [len(rows) for rows in panels.values()]
        fig, axes = plt.subplots(len(panels), 1, figsize=(10, 0.17 * sum(sizes) + 0.9 * len(panels)),
                                 gridspec_kw={"height_ratios": sizes}, squeeze=False)
        for ax, (title, rows) in zip(axes[:, 0], panels.items()):
            ax.barh([c for c, _ in rows], [v for _, v in rows], color="C0")
            ax.set_xscale("log")
            ax.set_ylim(len(rows) - 0.5, -0.5)  # first case on top, no empty band
            ax.set_title(title, fontsize=8, loc="left")
            ax.tick_params(axis="y", labelsize=6)
            ax.tick_params(axis="x", labelsize=7)
            ax.grid(axis="x", alpha=0.3)
        axes[-1, 0].set_xlabel("images / s (log)")
        fig.suptitle(a.title or "zoo benchmarks", y=1.0)
        fig.tight_layout()
        fig.savefig(a.png, dpi=100, bbox_inches="tight")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
