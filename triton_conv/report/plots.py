"""Throughput against N per layer: triton-conv, cuDNN and the Inductor peer measured, the model's
prediction dashed over them. matplotlib is optional (`pip install -e '.[plot]'` in the checkout, or
`pip install matplotlib`)."""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from pathlib import Path

from ..output_files import slug
from .markdown import pass_label

MIN_POINTS = 3  # a curve needs at least this many batch sizes
STYLE = {"triton-conv": "C0", "cudnn": "C1", "inductor": "C2"}


def matplotlib_pyplot():
    """matplotlib.pyplot with a file-only backend, or None when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def curves(records) -> dict:
    """{(layer_set, layer, pass, dtype, layout): {impl: [(N, images/s)], 'model': [(N, images/s)]}}"""
    found: dict = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r.get("kind") != "pass" or not r.get("seconds"):
            continue
        key = (r["layer_set"], r["layer"], pass_label(r), r["dtype"], r["layout"])
        found[key][r["implementation"]].append((r["N"], r["N"] / r["seconds"]))
        model_s = (r.get("model") or {}).get("seconds")
        if model_s and r["N"] not in dict(found[key]["model"]):
            found[key]["model"].append((r["N"], r["N"] / model_s))
    return {
        key: {name: sorted(points) for name, points in lines.items()}
        for key, lines in found.items()
        if max(len(points) for name, points in lines.items() if name != "model") >= MIN_POINTS
    }


def _plot_name(*parts: str) -> str:
    """A plot's file name from its curve's key, every part a slug (a dtype or layout read from a
    sweep could hold a '/'), cut with a hash of the key beyond 200 characters (a file system's 255)."""
    name = "-".join(slug(part) for part in parts)
    if len(name) > 200:
        name = f"{name[:183]}-{hashlib.sha256(name.encode()).hexdigest()[:16]}"
    return f"{name}.png"


def write_plots(records, out_dir: Path, note_dir: Path) -> str:
    """One PNG per layer, pass, dtype and layout; returns the markdown that shows them (or says why not)."""
    plt = matplotlib_pyplot()
    if plt is None:
        return (
            "Plots skipped: matplotlib is not installed "
            "(`pip install -e '.[plot]'` in the checkout, or `pip install matplotlib`)."
        )
    chosen = curves(records)
    if not chosen:
        return "No plots: no layer was measured at three or more batch sizes."
    out_dir.mkdir(parents=True, exist_ok=True)
    links = []
    for key, lines in chosen.items():
        layer_set, layer, pass_name, dtype, layout = key
        figure, axes = plt.subplots(figsize=(6, 4))
        for name, points in lines.items():
            xs, ys = zip(*points, strict=True)
            style = {"color": "k", "linestyle": "--", "label": "model (predicted)"} if name == "model" else {
                "color": STYLE.get(name, "C3"), "marker": "o", "label": name}  # fmt: skip
            axes.plot(xs, ys, **style)
        axes.set_xscale("log", base=2)
        batches = sorted({n for points in lines.values() for n, _ in points})
        axes.set_xticks(batches, [str(n) for n in batches])
        axes.set_yscale("log")
        axes.set_xlabel("batch size N")
        axes.set_ylabel("images per second")
        axes.set_title(f"{layer} ({layer_set}), {pass_name}, {dtype}, {layout}", fontsize=9)
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize=8)
        path = out_dir / _plot_name(layer_set, layer, pass_name.replace("+", ""), dtype, layout)
        figure.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(figure)
        links.append(f"![{layer}, {pass_name}, {dtype}]({Path(os.path.relpath(path, note_dir)).as_posix()})")
    return "\n".join(links)
