"""Autotune runs: tune every layer of a named layer set at each batch size, pass and dtype, time the
winner, the runner-up and cuDNN on the row's own problem, and add the model's prediction; one row
per combination, the rows autotune_markdown.py writes as tables.
"""

from __future__ import annotations

import itertools
import sys

import torch

from . import tuning
from .autotune_markdown import cell
from .compile_ahead import checked_workers, compile_before_tuning, default_workers
from .layers import network_needs
from .problem import PASSES
from .runtime import device_guard, fp32_uses_tf32
from .tuning_keys import dtype_name


def cudnn_runner(problem, pass_name: str, tensors: dict):
    """torch's convolution (cuDNN on a GPU) for the same pass, dtype, layout and inputs (no bias, as
    tuning.random_inputs makes them)."""
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
        return lambda: torch.nn.functional.conv2d(padded(tensors["x"]), w, None, *geometry, problem.groups)
    dy = tensors["dy"]
    x = tensors.get("x")
    if x is None:  # dgrad reads only x's shape
        x = torch.empty(problem.input_shape, dtype=dy.dtype, device=dy.device)
    mask = [True, False, False] if pass_name == "dgrad" else [False, True, False]
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
        with device_guard(self.device):  # tuning, re-timing and cuDNN's timing on the tables' device
            return self._row(problem, pass_name, dtype)

    def _row(self, problem, pass_name: str, dtype) -> dict:
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
    compile_workers=None,
) -> list[dict]:
    """Tune every layer of a layer set (a name from layers.py, or a list of (name, problem, count))
    at each batch size, pass and dtype; one row per combination, with the fields COLUMNS shows.

    The winner and runner-up are timed on the row's own problem (a cached result may come from
    another problem with the same key). cuDNN is timed the same way, on a GPU only. dgrad is skipped
    for layers whose input is an image (4 channels or fewer): no network needs that gradient.
    Without a GPU and a timer nothing is timed: the rows hold the default config and no times.
    `compile_workers`: as tune_model's (compile_ahead.py): what the rows will time is compiled
    first, on every usable core of a GPU machine by default.
    """
    stream = stream or sys.stderr
    compile_workers = checked_workers(compile_workers)
    set_name, layers = _layers(layer_set)
    run = _Run(device, timer, target, channels_last, cudnn, max_configs)
    if run.timing:
        workers = default_workers(run.device) if compile_workers is None else compile_workers
        for dtype in dtypes:
            tunings = [
                (base.with_batch(batch), pass_name, channels_last)
                for _, base, _ in layers
                for batch, pass_name in itertools.product(batch_sizes, passes)
                if network_needs(base, pass_name)
            ]
            compile_before_tuning(tunings, dtype, run.device, workers, stream if progress else None,
                                  target=target, max_configs=max_configs)  # fmt: skip
    if run.cudnn:
        torch.backends.cudnn.benchmark = True
    rows = []
    for index, (layer_name, base, count) in enumerate(layers):
        for batch, dtype, pass_name in itertools.product(batch_sizes, dtypes, passes):
            if not network_needs(base, pass_name):
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
                    f"{cell(row, 'winner_ms', '{:.4f}')} ms, cuDNN {cell(row, 'cudnn_ms', '{:.4f}')} ms",
                    file=stream,
                    flush=True,
                )
    return rows
