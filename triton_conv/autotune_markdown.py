"""Autotune tables in markdown: which config won for which layer, batch size, pass and dtype, with
the model's view of why (tiles, waves, predicted efficiency), from the rows autotune_runs.py times.

`write_autotune_tables(rows, ...)` writes notes/autotune/<device-slug>.md (one file per device) with a
provenance header (GPU, torch, Triton and CUDA versions, date, commit). The rows are kept beside it
as <device-slug>.json, so a later run (another layer set, more batch sizes) adds to the file instead
of replacing it. Only rows timed on a CUDA device may go into notes/: a table there is a
measurement, never a CPU rehearsal.
"""

from __future__ import annotations

import datetime
import json
import os

import torch
from tabulate import tabulate

from .output_files import folder_locked, slug, write_whole
from .provenance import git_commit

NOTES_DIR = os.path.join("notes", "autotune")
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (column header, row field, format) of the rows tune_layer_set returns.
COLUMNS = (
    ("layer", "layer", "{}"),
    ("N", "batch", "{}"),
    ("GEMM M×N×K", "gemm", "{}"),
    ("winner", "winner", "{}"),
    ("ms", "winner_ms", "{:.4f}"),
    ("TFLOP/s", "winner_tflops", "{:.1f}"),
    ("of peak", "winner_peak_fraction", "{:.0%}"),
    ("runner-up", "runner_up", "{}"),
    ("runner-up ms", "runner_up_ms", "{:.4f}"),
    ("cuDNN ms", "cudnn_ms", "{:.4f}"),
    ("cuDNN / winner", "cudnn_ratio", "{:.2f}"),
    ("tiles", "tiles", "{}"),
    ("waves", "waves", "{}"),
    ("model η", "predicted_efficiency", "{:.0%}"),
    ("timed", "candidates", "{}"),
)


def provenance(gpu: str | None) -> dict:
    """What a committed number must carry: GPU, torch, Triton and CUDA versions, date, commit."""
    import triton

    from .tuning_cache import package_version

    return {
        "gpu": gpu or "none (compiled only)",
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda": torch.version.cuda or "none",
        "triton_conv": package_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git_commit(),
    }


def cell(row: dict, field: str, fmt: str) -> str:
    """A row's field as a table cell (— where it has none); tune_layer_set's progress lines too."""
    value = row.get(field)
    return "—" if value is None else inline(fmt.format(value))


def inline(text) -> str:
    """Text for one table cell or heading: a '|' would open a column, a line break a row."""
    return " ".join(str(text).split()).replace("|", "\\|")


def row_key(row: dict) -> tuple:
    return (row["layer_set"], row["layer"], row["batch"], row["pass"], row["dtype"], row["layout"])


def render(rows: list[dict], gpu: str) -> str:
    """The markdown: provenance of each run, how to read it, one table per (layer set, pass, dtype)."""
    runs = sorted({tuple(sorted(r["run"].items())) for r in rows}, key=lambda run: dict(run)["date"])
    lines = [
        f"# Autotune results: {gpu}",
        "",
        "Measured on the GPU: each surviving config of the pass's search space timed with",
        "triton.testing.do_bench (median, after warm-up) on fresh random inputs; cuDNN timed the same",
        "way on the same problem (torch.backends.cudnn.benchmark, same dtype, layout and TF32 setting).",
        "winner/runner-up: BMxBNxBK g(GROUP_M) s(SPLIT_K) w(warps) st(stages). TFLOP/s: the pass's",
        "2·N·P·Q·K·C·R·S/g over the winner's time; of peak: that over the device table's dense peak",
        "for the dtype (fp32: TF32 when cuDNN uses it). cuDNN / winner above 1: the Triton winner is",
        "faster. tiles: CTAs of the winner's launch (split included); waves: tiles over the GPU's CTA",
        "slots; model η: triton_conv.model's predicted fraction of the peak, beside the measured one.",
        "timed: configs timed when the key was tuned (— where the result came from the cache, tuned on",
        "another problem with the same key or in an earlier run; its winner is re-timed on this one).",
        "",
        "Runs (provenance):",
        "",
    ]
    if any(r.get("source") for r in rows):
        lines[-3:-3] = [
            "Rows from `triton-conv campaign` (source: campaign): only the model's top candidates among",
            "pruning's survivors were timed ('timed' says how many), each by CUDA-graph replay (median of",
            "the replays), cuDNN the same way.",
        ]
    for run in map(dict, runs):
        lines.append(
            inline(
                f"- {run['date']}: GPU {run['gpu']}, torch {run['torch']}, Triton {run['triton']}, "
                f"CUDA {run['cuda']}, triton-conv {run['triton_conv']}, commit {run['commit']}"
            )
        )
    lines.append("")
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["layer_set"], row["pass"], row["dtype"], row["layout"]), []).append(row)
    for (layer_set, pass_name, dtype, layout), chosen in sorted(groups.items()):
        chosen.sort(key=lambda r: (r["layer_index"], r["batch"]))
        if chosen[0].get("transposed"):  # a transposed convolution's pass, run by its view's kernel
            pass_name = (
                f"{pass_name} of the transposed convolution (its conv2d view's {chosen[0]['kernel_pass']})"
            )
        lines += [f"## {inline(layer_set)}: {inline(pass_name)}, {inline(dtype)}, {inline(layout)}", ""]
        table = [[cell(r, field, fmt) for _, field, fmt in COLUMNS] for r in chosen]
        lines += [tabulate(table, [h for h, _, _ in COLUMNS], tablefmt="github", disable_numparse=True), ""]
        lines += [_observations(chosen), ""]
    return "\n".join(lines)


def _observations(rows: list[dict]) -> str:
    """One line under a table: where split-K won, and how often the winner beat cuDNN."""
    won = [r for r in rows if (r.get("winner_split_k") or 1) > 1]
    split = sorted({r["batch"] for r in won})
    compared = [r for r in rows if r.get("cudnn_ratio")]
    faster = [r for r in compared if r["cudnn_ratio"] > 1]
    text = f"Split-K won {len(won)} of {len(rows)} rows" + (f" (at N = {split})." if split else ".")
    if compared:
        text += f" The Triton winner beat cuDNN in {len(faster)} of {len(compared)}."
    return text


def inside_notes(path: str) -> bool:
    """Whether `path` lies in a triton-conv checkout's notes/ (which holds GPU measurements only):
    this package's, or another clone's (a notes/ beside a triton_conv/ package and a
    pyproject.toml), where a command run from that clone with this one installed writes by default."""
    real = os.path.realpath(path)
    while True:
        parent = os.path.dirname(real)
        if os.path.basename(real) == "notes" and _is_checkout(parent):
            return True
        if parent == real:
            return _inside(path, os.path.join(_REPO, "notes"))
        real = parent


def _is_checkout(folder: str) -> bool:
    package, project = os.path.join(folder, "triton_conv"), os.path.join(folder, "pyproject.toml")
    return os.path.isdir(package) and os.path.isfile(project)


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder


def table_paths(out_dir: str, gpu: str) -> tuple[str, str]:
    """A device's rows and tables: <out_dir>/<device-slug>.json and .md."""
    stem = os.path.join(out_dir, slug(gpu, "device"))
    return stem + ".json", stem + ".md"


def write_autotune_tables(rows: list[dict], out_dir: str = NOTES_DIR, gpu: str | None = None) -> str:
    """Merge `rows` into <out_dir>/<device-slug>.json and rewrite <device-slug>.md from all of them.

    Rows not timed on a CUDA device (row['timed_on'] != 'cuda') are refused anywhere under the
    repository's notes/; tests write CPU-timed rows into a temporary folder. A row that carries its
    own provenance ('run': a campaign's, measured elsewhere) keeps it; the others get this machine's.
    """
    if not rows:
        raise ValueError("no rows to write")
    gpu = gpu or rows[0]["device"]
    unmeasured = [r for r in rows if r.get("timed_on") != "cuda"]
    if unmeasured and inside_notes(out_dir):
        raise ValueError(
            f"{len(unmeasured)} rows were not timed on a GPU (timed_on={unmeasured[0].get('timed_on')!r}); "
            "notes/ holds measurements only: write them elsewhere"
        )
    os.makedirs(out_dir, exist_ok=True)
    data_path, md_path = table_paths(out_dir, gpu)
    with folder_locked(data_path):  # two runs merging into one table read and write it in turn
        merged: dict[tuple, dict] = {}
        if os.path.exists(data_path):
            with open(data_path) as handle:
                merged = {row_key(r): r for r in json.load(handle)["rows"]}
        run = provenance(gpu)
        merged.update({row_key(r): {**r, "run": r.get("run") or run} for r in rows})
        all_rows = list(merged.values())
        markdown = render(all_rows, gpu)  # before either write: a row it cannot render must not be kept
        write_whole(data_path, json.dumps({"device": gpu, "rows": all_rows}, indent=1))
        write_whole(md_path, markdown)
    return md_path
