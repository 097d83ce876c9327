"""A model tuned ahead of time: the kernel launches its forward and backward will make, found without
running a kernel (model_calls.py), then tuned.

`tune_model` tunes exactly the tuning keys those calls look up at the batch sizes asked for, so that
the model's first step finds every config in the cache (a model captured in a CUDA graph must:
nothing is tuned while a graph is captured).
"""

from __future__ import annotations

import numbers
import sys
import time

import torch

from .arguments import FLOAT_DTYPES, ConvArgumentError, ConvTypeError
from .compile_ahead import checked_workers
from .model_calls import CallFinder, conv_problems  # noqa: F401  (conv_problems: this module's API too)
from .problem import PASSES
from .runtime import call_tf32
from .tuning import _device, autotune, autotuning_enabled
from .tuning_cache import TuneResult
from .tuning_keys import tuning_key


def _checked_passes(passes) -> tuple[str, ...]:
    """One pass name or several, each of PASSES: a misspelt name tuned nothing without a word, and a
    bare string was read as its letters."""
    names = (passes,) if isinstance(passes, str) else tuple(passes)
    unknown = [name for name in names if name not in PASSES]
    if unknown:
        raise ConvArgumentError(f"passes must name passes of {PASSES}, got {unknown}")
    return names


def _checked_batch_sizes(batch_sizes) -> tuple[int, ...]:
    sizes = (batch_sizes,) if isinstance(batch_sizes, numbers.Integral) else tuple(batch_sizes)
    whole = [isinstance(n, numbers.Integral) and not isinstance(n, bool) and n >= 1 for n in sizes]
    if not sizes or not all(whole):  # a batch of 0 or less was tuned as a GEMM of no rows
        raise ConvArgumentError(f"batch_sizes must be whole numbers of at least 1, got {batch_sizes!r}")
    return tuple(int(n) for n in sizes)


def _checked_shapes(input_shapes) -> list[tuple[int, ...]]:
    """One per-image shape or a list of them, each 2 to 4 whole numbers of at least 1 (an empty
    list raised IndexError, a NumPy integer's shape a TypeError about iterating it)."""
    if isinstance(input_shapes, torch.Tensor):  # a sample's values read as a shape, or not at all
        raise ConvTypeError("input_shapes must be a shape such as (C, H, W) or a list of them, not a"
                            " tensor (a sample x gives x.shape[1:])")  # fmt: skip
    one = isinstance(input_shapes, (tuple, list, torch.Size)) and input_shapes
    one = one and all(isinstance(size, numbers.Integral) for size in input_shapes)
    shapes = [input_shapes] if one else input_shapes
    try:
        shapes = [tuple(shape) for shape in shapes]
    except TypeError:
        shapes = None
    whole = lambda size: isinstance(size, numbers.Integral) and not isinstance(size, bool) and size >= 1
    if not shapes or not all(2 <= len(shape) <= 4 and all(map(whole, shape)) for shape in shapes):
        raise ConvArgumentError(
            "input_shapes must be one image's shape, (C, H, W) or (C, L) (or (N, C, H, W), N ignored),"
            f" of whole numbers >= 1, or a list of them, got {input_shapes!r}"
        )
    return [tuple(int(size) for size in shape) for shape in shapes]


def _model_dtype(model, dtype) -> torch.dtype:
    """The dtype the model's convolutions run in: `dtype`, else its first floating parameter's or
    buffer's (the one conv_problems' forward runs in), else torch's default."""
    if dtype is None:
        state = [*model.parameters(), *model.buffers()]
        dtype = next((t.dtype for t in state if t.is_floating_point()), torch.get_default_dtype())
    if dtype not in FLOAT_DTYPES:
        raise ConvTypeError(f"dtype must be one of {FLOAT_DTYPES} or None (the model's), got {dtype!r}")
    return dtype


def _compile_ahead(jobs, dtype, device, timer, workers, stream) -> None:
    """compile_ahead.compile_before_tuning for the tunings of `jobs` ((label, problem, kernel pass,
    layout, tf32) each, all of one tf32, under call_tf32 of it), when any of them will time
    (autotune: a GPU or a timer, and autotuning on or a timer)."""
    from .compile_ahead import compile_before_tuning, default_workers

    times = (device.type == "cuda" or timer is not None) and (timer is not None or autotuning_enabled())
    if times:
        workers = default_workers(device) if workers is None else workers
        tunings = [(problem, kernel_pass, layout) for _, problem, kernel_pass, layout, _ in jobs]
        compile_before_tuning(tunings, dtype, device, workers, stream)


def tune_model(
    model,
    input_shapes,
    batch_sizes=(1,),
    dtype=None,
    passes=PASSES,
    progress=True,
    *,
    channels_last=True,
    device=None,
    timer=None,
    stream=None,
    compile_workers=None,
) -> list[TuneResult]:
    """Tune every convolution of `model` ahead of time for each input shape and batch size.

    `input_shapes`: one per-image shape ((C, H, W), or (C, L) for a 1-D model) or a list of them.
    `dtype`: what the convolutions run in; None (the default): the model's parameters' dtype. Pass
    the autocast dtype (torch.float16, torch.bfloat16) for a model run under torch.autocast.
    `passes`: which of each convolution's passes (fprop: forward, dgrad: input gradient, wgrad:
    weight gradient; a transposed convolution's run other kernels: ConvCall.kernel_pass).
    `channels_last`: the layout the model will run in (conv_problems). Exactly the tuning keys the
    model's step will look up are tuned (conv_problems), each distinct key once (cached keys are not
    re-timed): no input gradient where the input needs none (the first layer), no weight gradient
    where the weight is frozen. Progress goes to `stream` (stderr) one line per key. Without a GPU
    and a timer the lines say 'default'.
    `compile_workers`: processes that compile, before any timing, every config the tunings will time
    (compile_ahead.py; a model's first tuning otherwise spends minutes compiling on one core); by
    default every usable core when a GPU will be timed (none with one usable core, where a worker
    would only add its start), else none; 0: none. A count given
    compiles for the tuning's device even where the tuning runs on the CPU (for an H200 there, as
    the tests check it). A compile step that fails leaves the tuning as it would have been.
    """
    stream = stream or sys.stderr
    passes, batch_sizes = _checked_passes(passes), _checked_batch_sizes(batch_sizes)
    compile_workers = checked_workers(compile_workers)
    shapes, dtype, device = _checked_shapes(input_shapes), _model_dtype(model, dtype), _device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConvArgumentError(f"device is {device}, and this torch sees no CUDA device")
    finder = CallFinder(model, channels_last)
    jobs: dict[str, tuple] = {}
    for shape in shapes:
        try:
            calls = finder.calls(shape)
        except RuntimeError as error:  # say which argument gave the shape, and how it was run
            raise ConvArgumentError(
                f"input_shapes {shape}: the model's forward, run at this shape on meta tensors (shapes, "
                f"no data), failed: {error}"
            ) from error
        for call in calls:
            for batch in batch_sizes:
                sized = call.problem.with_batch(batch)
                for pass_name in passes:
                    kernel_pass = call.kernel_pass(pass_name)
                    if kernel_pass in call.passes:
                        layout = call.passes[kernel_pass]
                        label = f"{call.name} (transposed {pass_name})" if call.transposed else call.name
                        tf32 = call.tf32[kernel_pass]  # the precision the op's call runs it in
                        with call_tf32(tf32):
                            key = tuning_key(sized, kernel_pass, dtype, layout)
                        jobs.setdefault(key, (label, sized, kernel_pass, layout, tf32))
    for tf32 in dict.fromkeys(job[-1] for job in jobs.values()):
        with call_tf32(tf32):
            alike = [job for job in jobs.values() if job[-1] == tf32]
            _compile_ahead(alike, dtype, device, timer, compile_workers, stream if progress else None)
    results = []
    for i, (key, (label, problem, kernel_pass, layout, tf32)) in enumerate(jobs.items(), 1):
        start = time.perf_counter()
        with call_tf32(tf32):
            result = autotune(problem, kernel_pass, dtype, layout, device, timer=timer)
        results.append(result)
        if progress:
            how = ("cached" if result.cached else f"tuned {len(result.timings)} configs"
                   if result.timed_on else "default, not timed")  # fmt: skip
            ms = "" if result.best_ms is None else f" {result.best_ms:.4f} ms"
            print(f"[{i}/{len(jobs)}] {label} {key}: {result.best}{ms} ({how}, "
                  f"{time.perf_counter() - start:.1f} s)", file=stream, flush=True)  # fmt: skip
    return results
