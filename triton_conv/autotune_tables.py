"""Autotune tables: tune a named layer set, and write which config won for which layer, batch size,
pass and dtype in markdown, with the model's view of why (tiles, waves, predicted efficiency).

`tune_layer_set(...)` returns one row per (layer, N, pass, dtype);
`tune_and_write(...)` is the `triton-conv tune` command's body. `write_autotune_tables(rows, ...)`
writes notes/autotune/<device-slug>.md (one file per device) from those rows, with a provenance
header (GPU, torch, Triton and CUDA versions, date, commit). The rows are kept beside it as
<device-slug>.json, so a later run (another layer set, more batch sizes) adds to the file instead
of replacing it. Only rows timed on a CUDA device may go into notes/: a table there is a
measurement, never a CPU rehearsal.
"""

from __future__ import annotations

import datetime
import functools
import itertools
import json
import os
import re
import sys

import torch
from tabulate import tabulate

from . import tuning
from .problem import PASSES
from .provenance import git_commit
from .runtime import fp32_uses_tf32
from .tuning_keys import dtype_name

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


def device_slug(name: str) -> str:
    """'NVIDIA H200' -> 'nvidia-h200': a file name for a device."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "device"


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


def _cell(row: dict, field: str, fmt: str) -> str:
    value = row.get(field)
    return "—" if value is None else fmt.format(value)


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
            f"- {run['date']}: GPU {run['gpu']}, torch {run['torch']}, Triton {run['triton']}, "
            f"CUDA {run['cuda']}, triton-conv {run['triton_conv']}, commit {run['commit']}"
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
        lines += [f"## {layer_set}: {pass_name}, {dtype}, {layout}", ""]
        table = [[_cell(r, field, fmt) for _, field, fmt in COLUMNS] for r in chosen]
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
    """Whether `path` lies in the repository's notes/ (which holds GPU measurements only)."""
    return _inside(path, os.path.join(_REPO, "notes"))


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder


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
    slug = device_slug(gpu)
    data_path = os.path.join(out_dir, slug + ".json")
    merged: dict[tuple, dict] = {}
    if os.path.exists(data_path):
        with open(data_path) as handle:
            merged = {row_key(r): r for r in json.load(handle)["rows"]}
    run = provenance(gpu)
    merged.update({row_key(r): {**r, "run": r.get("run") or run} for r in rows})
    all_rows = list(merged.values())
    _atomic_write(data_path, json.dumps({"device": gpu, "rows": all_rows}, indent=1))
    md_path = os.path.join(out_dir, slug + ".md")
    _atomic_write(md_path, render(all_rows, gpu))
    return md_path


def _atomic_write(path: str, text: str) -> None:
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w") as handle:
        handle.write(text)
    os.replace(temporary, path)


# --- the runs -------------------------------------------------------------------------------------
def cudnn_runner(problem, pass_name: str, tensors: dict):
    """torch's convolution (cuDNN on a GPU) for the same pass, dtype, layout and inputs."""
    pads = (problem.pad_top, problem.pad_left)
    symmetric = pads == (problem.pad_bottom, problem.pad_right)
    geometry = (problem.stride, pads if symmetric else (0, 0), problem.dilation)

    def padded(x):
        if symmetric:
            return x
        pad = (problem.pad_left, problem.pad_right, problem.pad_top, problem.pad_bottom)
        return torch.nn.functional.pad(x, pad)

    w = tensors["weight"]
    if pass_name == "fprop":
        return lambda: torch.nn.functional.conv2d(
            padded(tensors["x"]), w, tensors["bias"], *geometry, problem.groups
        )
    dy = tensors["dy"]
    x = tensors.get("x")
    if x is None:  # dgrad reads only x's shape
        x = torch.empty(problem.input_shape, dtype=dy.dtype, device=dy.device)
    mask = [True, False, False] if pass_name == "dgrad" else [False, True, True]
    rows = slice(problem.pad_top, problem.pad_top + problem.height)
    cols = slice(problem.pad_left, problem.pad_left + problem.width)

    def run():
        grads = torch.ops.aten.convolution_backward(
            dy, padded(x), w, [problem.out_channels], *geometry, False, [0, 0], problem.groups, mask
        )
        if pass_name == "dgrad" and not symmetric:  # the gradient of the padded input, cropped
            return (grads[0][..., rows, cols], *grads[1:])
        return grads

    return run


def _layers(layer_set):
    if isinstance(layer_set, str):
        from .layers import get_layer_set

        return layer_set, get_layer_set(layer_set)
    return "custom", list(layer_set)


class _Run:
    """What every row of one tune_layer_set call shares: device, timer, model device, options."""

    def __init__(self, device, timer, target, channels_last, cudnn, max_configs):
        self.tuning = tuning
        self.device = tuning._device(device)
        self.name, live = tuning.device_identity(self.device)
        self.spec = tuning.get_device(target) if target else (live or tuning.get_device(tuning.CPU_TARGET))
        self.timing = self.device.type == "cuda" or timer is not None
        self.timer = timer or (tuning.gpu_timer if self.device.type == "cuda" else tuning.cpu_timer)
        self.target, self.channels_last, self.max_configs = target, channels_last, max_configs
        self.cudnn = cudnn and self.device.type == "cuda"
        self.layout = "nhwc" if channels_last else "nchw"

    def row(self, problem, pass_name: str, dtype) -> dict:
        from .model import predict

        t = self.tuning
        result = t.autotune(
            problem, pass_name, dtype, self.channels_last, self.device,
            timer=self.timer if self.timing else None, target=self.target, max_configs=self.max_configs,
        )  # fmt: skip
        best_ms, runner_ms, cudnn_ms = result.best_ms, result.runner_up_ms, None
        if self.timing:
            tensors = t.random_inputs(problem, pass_name, dtype, self.channels_last, self.device)
            if result.cached or result.problem != str(problem):  # timed on another problem: re-time
                best_ms, runner_ms = (
                    None if c is None
                    else self.timer(t.pass_runner(problem, pass_name, tensors, c, self.channels_last))
                    for c in (result.best, result.runner_up)
                )  # fmt: skip
            if self.cudnn:
                cudnn_ms = self.timer(cudnn_runner(problem, pass_name, tensors))
        try:
            model = predict(problem, pass_name, result.best, self.spec, dtype_name(dtype))
            tiles, waves, eta = model.stats.tiles, model.stats.waves, model.efficiency
        except ValueError:  # the config cannot run on the model's device
            tiles = waves = eta = None
        m, n, k = problem.gemm(pass_name)
        groups = f" ×{problem.groups}g" if problem.groups > 1 else ""
        return {
            "batch": problem.batch, "pass": pass_name, "dtype": dtype_name(dtype),
            "layout": self.layout, "gemm": f"{m}×{n}×{k}{groups}",
            "winner": str(result.best), "winner_split_k": result.best.split_k, "winner_ms": best_ms,
            "winner_tflops": problem.flops(pass_name) / best_ms / 1e9 if best_ms else None,
            "winner_peak_fraction": (
                problem.flops(pass_name) / (best_ms * 1e-3)
                / self.spec.peak_flops(dtype_name(dtype), allow_tf32=fp32_uses_tf32())
                if best_ms and dtype != torch.float64 else None
            ),
            "runner_up": str(result.runner_up) if result.runner_up else None, "runner_up_ms": runner_ms,
            "cudnn_ms": cudnn_ms, "cudnn_ratio": cudnn_ms / best_ms if cudnn_ms and best_ms else None,
            "tiles": tiles, "waves": waves, "predicted_efficiency": eta,
            "candidates": len(result.timings) or None, "key": result.key, "device": self.name,
            "model_device": self.spec.name, "timed_on": self.device.type if self.timing else None,
        }  # fmt: skip


def tune_layer_set(
    layer_set,
    batch_sizes=(1, 8, 32, 128),
    passes=PASSES,
    dtypes=(torch.float16,),
    device=None,
    *,
    channels_last=True,
    timer=None,
    target=None,
    cudnn=True,
    max_configs=None,
    progress=True,
    stream=None,
) -> list[dict]:
    """Tune every layer of a layer set (a name from layers.py, or a list of (name, problem, count))
    at each batch size, pass and dtype; one row per combination, with the fields COLUMNS shows.

    The winner and runner-up are timed on the row's own problem (a cached result may come from
    another problem with the same key). cuDNN is timed the same way, on a GPU only. dgrad is skipped
    for layers whose input is an image (4 channels or fewer): no network needs that gradient.
    Without a GPU and a timer nothing is timed: the rows hold the default config and no times.
    """
    stream = stream or sys.stderr
    set_name, layers = _layers(layer_set)
    run = _Run(device, timer, target, channels_last, cudnn, max_configs)
    if run.cudnn:
        torch.backends.cudnn.benchmark = True
    rows = []
    for index, (layer_name, base, count) in enumerate(layers):
        for batch, dtype, pass_name in itertools.product(batch_sizes, dtypes, passes):
            if pass_name == "dgrad" and base.in_channels <= 4:
                continue
            row = {"layer_set": set_name, "layer": layer_name, "layer_index": index, "count": count}
            try:
                row.update(run.row(base.with_batch(batch), pass_name, dtype))
            except torch.cuda.OutOfMemoryError:  # megapixel layers at large N: say so, go on
                torch.cuda.empty_cache()
                m, n, k = base.with_batch(batch).gemm(pass_name)
                row.update({
                    "batch": batch, "pass": pass_name, "dtype": dtype_name(dtype), "layout": run.layout,
                    "gemm": f"{m}×{n}×{k}", "winner": "out of memory", "device": run.name,
                    "model_device": run.spec.name, "timed_on": "cuda",
                })  # fmt: skip
            rows.append(row)
            if progress:
                print(
                    f"{set_name} {layer_name} N={batch} {pass_name} {row['dtype']}: {row['winner']} "
                    f"{_cell(row, 'winner_ms', '{:.4f}')} ms, cuDNN {_cell(row, 'cudnn_ms', '{:.4f}')} ms",
                    file=stream,
                    flush=True,
                )
    return rows


def tune_and_write(
    layer_set="resnet50",
    batch_sizes=(1, 8, 32, 128),
    passes=PASSES,
    dtypes=("fp16",),
    out_dir=NOTES_DIR,
    device=None,
    progress=True,
    rep_ms: int = 100,
    max_configs: int | None = None,
) -> str | None:
    """The body of `triton-conv tune`: tune a layer set on the GPU (do_bench with `rep_ms` of timed
    runs per config) and merge the rows into <out_dir>/<device>.md. Without a GPU nothing is
    measured or written, and None is returned."""
    if not torch.cuda.is_available():
        print("triton-conv tune: no CUDA device, nothing measured; notes/ left as it is", file=sys.stderr)
        return None
    from .tuning import gpu_timer

    by_name = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
    dtypes = [by_name[d] if isinstance(d, str) else d for d in dtypes]
    timer = functools.partial(gpu_timer, warmup=max(5, rep_ms // 4), rep=rep_ms)
    rows = tune_layer_set(
        layer_set,
        batch_sizes,
        passes,
        dtypes,
        device,
        timer=timer,
        max_configs=max_configs,
        progress=progress,
    )
    return write_autotune_tables(rows, out_dir)
