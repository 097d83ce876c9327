"""A model tuned ahead of time: the kernel launches its forward and backward will make, found without
running a kernel, then tuned.

`conv_problems(model, input_shape)` runs one forward of a copy of the model on meta tensors (shapes
and strides, no data, no kernels; the model itself is never touched) in which every torch Conv1d,
Conv2d and ConvTranspose2d computes as triton-conv's module does (the modules convert_model
converts; triton-conv's own modules compute as they always do), and records each call of the
package's ops (triton_conv::conv2d, ::conv_transpose2d) with the tensors the op receives. From
those it names, exactly as the autograd ops and passes.py will at run time:

- the conv2d problem the kernels run, canonical, as the op builds it: conv2d's own, conv1d's
  height-one conv2d, a transposed convolution's conv2d view (ConvProblem.from_transposed);
- each kernel pass the call launches, with the layout flag its tuning key carries: for conv2d and
  conv1d, fprop (flag: input or weight channels_last), dgrad where the input needs a gradient (the
  input's layout) and wgrad where the weight does (the weight's layout); for a transposed
  convolution (TRANSPOSED_PASSES), its forward is the view's dgrad (input or weight), its input
  gradient the view's fprop (the incoming gradient, taken to have the output's layout, or the
  weight) and its weight gradient the view's wgrad (the weight's layout).

`tune_model` tunes exactly those tuning keys at the batch sizes asked for, so that the model's first
step finds every config in the cache (a model captured in a CUDA graph must: nothing is tuned while
a graph is captured).
"""

from __future__ import annotations

import copy
import numbers
import sys
import time
from typing import NamedTuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .arguments import FLOAT_DTYPES, ConvArgumentError, ConvTypeError
from .autograd import checked_problem, checked_transposed_problem, conv2d_op, conv_transpose2d_op
from .compile_ahead import checked_workers
from .nn import CONVERSIONS
from .passes import pass_channels_last
from .problem import PASSES, TRANSPOSED_PASSES, ConvProblem
from .runtime import call_tf32, torch_conv_uses_tf32
from .tuning import _device, autotune, autotuning_enabled
from .tuning_cache import TuneResult
from .tuning_keys import tuning_key


class ConvCall(NamedTuple):
    """One call of a convolution op in a model's forward, as the kernels see it."""

    name: str  # the module that made the call (its qualified name in the model)
    problem: ConvProblem  # at batch 1: the conv2d problem the kernels run (a transposed conv's view)
    passes: dict[str, bool]  # kernel pass -> the channels_last flag it is tuned under; forward first
    transposed: bool = False  # a transposed convolution: `passes` are its view's (TRANSPOSED_PASSES)
    tf32: dict[str, bool] | None = None  # kernel pass -> fp32 in TF32 (the op's call_tf32 at run time)

    def kernel_pass(self, pass_name: str) -> str:
        """The kernel pass that runs the convolution's `pass_name` (fprop: its forward, dgrad: its
        input gradient, wgrad: its weight gradient)."""
        return TRANSPOSED_PASSES[pass_name] if self.transposed else pass_name


def _passes_run(input: torch.Tensor, weight: torch.Tensor) -> list[str]:
    """The convolution's passes a training step runs: the forward, and each gradient autograd wants."""
    wanted = {"fprop": True, "dgrad": input.requires_grad, "wgrad": weight.requires_grad}
    return [pass_name for pass_name, runs in wanted.items() if runs]


def _conv2d_call(name: str, args) -> ConvCall | None:
    """The problem and flags of autograd.implementations' conv2d, input_grad and weight_grad; None:
    nothing launches."""
    input, weight = args[0], args[1]
    if input.numel() == 0 or weight.numel() == 0:
        return None
    wanted = _passes_run(input, weight)
    passes = {p: pass_channels_last(p, input, weight, None) for p in wanted}
    problem = checked_problem(*args)
    tf32 = torch_conv_uses_tf32(input, weight, problem.groups, transposed=False)
    return ConvCall(name, problem.with_batch(1), passes, tf32={p: tf32 for p in passes})


def _transposed_call(name: str, args, output: torch.Tensor) -> ConvCall | None:
    """The conv_transpose2d op's problem and flags, and ConvTranspose2dFunction.backward's: the
    input gradient is conv2d's forward op on the incoming gradient, the weight gradient conv2d's
    weight-gradient op with x in the gradient's place."""
    input, weight = args[0], args[1]
    if input.numel() == 0:
        return None
    wanted = _passes_run(input, weight)
    # Keyed by kernel pass; the incoming gradient is laid out as the output.
    passes = {
        TRANSPOSED_PASSES[p]: pass_channels_last(p, input, weight, output, transposed=True) for p in wanted
    }
    problem = checked_transposed_problem(*args)
    # Its forward is the transposed op; both gradients are conv2d's ops with the gradient as input.
    forward = torch_conv_uses_tf32(input, weight, problem.groups, transposed=True)
    backward = torch_conv_uses_tf32(output, weight, problem.groups, transposed=False)
    tf32 = {p: forward if p == "dgrad" else backward for p in passes}
    return ConvCall(name, problem.with_batch(1), passes, transposed=True, tf32=tf32)


class _OpRecorder(TorchDispatchMode):
    """Records each call of triton-conv's convolution ops under the innermost running module."""

    def __init__(self, names: list[str]):
        super().__init__()
        self.names, self.calls = names, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        output = func(*args, **(kwargs or {}))
        if func is conv2d_op:
            self.calls.append(_conv2d_call(self.names[-1], args))
        elif func is conv_transpose2d_op:
            self.calls.append(_transposed_call(self.names[-1], args, output))
        return output


def _meta_like(tensor: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """A meta tensor of `tensor`'s shape in the layout the model runs in: 4-D tensors channels_last
    or contiguous, as model.to(memory_format=...) leaves them; others contiguous."""
    layout = torch.channels_last if channels_last and tensor.dim() == 4 else torch.contiguous_format
    meta = torch.empty(tensor.shape, dtype=tensor.dtype, device="meta", memory_format=layout)
    return meta.requires_grad_(tensor.requires_grad)


def _meta_copy(model: torch.nn.Module, channels_last: bool) -> torch.nn.Module:
    """A copy of `model` whose parameters and buffers are meta tensors of their shapes (no data is
    copied): the forward that finds the calls runs on it, so neither the model nor a thread running
    it or tuning it at the same time sees a meta weight, a swapped class or a recording hook."""
    twins = {}
    for tensor in (*model.parameters(), *model.buffers()):
        meta = _meta_like(tensor, channels_last)
        is_parameter = isinstance(tensor, torch.nn.Parameter)
        twins[id(tensor)] = torch.nn.Parameter(meta, tensor.requires_grad) if is_parameter else meta
    try:
        return copy.deepcopy(model, twins)
    except Exception as error:  # a module holding a process group, a lock, an open file ...
        raise ConvTypeError(
            f"model: its convolutions are found on a copy of it with meta tensors, and copy.deepcopy"
            f" failed ({type(error).__name__}: {error}); pass the module it wraps"
        ) from error


def _recorded_calls(meta_model: torch.nn.Module, input_shape, channels_last: bool) -> list[ConvCall]:
    """conv_problems on a _meta_copy, whose classes this may change: the copy is used for nothing else."""
    shape = tuple(input_shape)
    shape = (1, *(shape[1:] if len(shape) == 4 else shape))
    names = {module: name for name, module in meta_model.named_modules()}
    names[meta_model] = names[meta_model] or type(meta_model).__name__
    stack: list[str] = []

    def enter(module, args):
        stack.append(names[module])

    def leave(module, args, output):  # returns None: the output stays the module's
        stack.pop()

    for module in names:
        module.register_forward_pre_hook(enter)
        module.register_forward_hook(leave, always_call=True)
        if type(module) in CONVERSIONS:  # torch's class -> triton-conv's, whose forward calls the ops
            module.__class__ = CONVERSIONS[type(module)]
    state = [*meta_model.parameters(), *meta_model.buffers()]
    dtype = next((t.dtype for t in state if t.is_floating_point()), torch.get_default_dtype())
    x = _meta_like(torch.empty(shape, dtype=dtype, device="meta"), channels_last)
    recorder = _OpRecorder(stack)
    with torch.enable_grad(), recorder:
        meta_model(x)
    return [call for call in recorder.calls if call is not None]


def conv_problems(model: torch.nn.Module, input_shape, *, channels_last: bool = True) -> list[ConvCall]:
    """Each convolution call of one forward of `model` (the module docstring), in order, as ConvCall
    (name, problem at batch 1, kernel passes with their layout flags, transposed).

    `input_shape`: one image's (C, H, W), or (C, L) for a 1-D model; (N, C, H, W) has N ignored.
    `channels_last`: the model's 4-D parameters and 4-D input are channels_last at run time (as
    model.to(memory_format=torch.channels_last) and x.to(memory_format=...) make them), else
    contiguous; the layouts inside the model follow from those, as on the GPU. Parameters' and
    buffers' requires_grad say which gradients a training step asks for. The forward runs on a copy
    of the model with meta tensors (_meta_copy): the model is left as it was, and threads may run it
    meanwhile. A model that cannot be deep-copied (one holding a process group, as
    DistributedDataParallel does) raises ConvTypeError: pass the module it wraps.
    """
    return _recorded_calls(_meta_copy(model, channels_last), input_shape, channels_last)


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
    meta_model = _meta_copy(model, channels_last)
    jobs: dict[str, tuple] = {}
    for shape in shapes:
        try:
            calls = _recorded_calls(meta_model, shape, channels_last)
        except RuntimeError as error:  # the model refused the shape: say which argument gave it
            raise ConvArgumentError(
                f"input_shapes {shape}: the model's forward refused it: {error}"
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
