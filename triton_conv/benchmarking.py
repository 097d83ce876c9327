"""Helpers for the benchmark suite (bench/): the three implementations of each pass, the settings
they share, the references they are checked against, and the sweep as a command (`run_sweep`). The
timers, the measured peaks and peak memory are in timers.py (re-exported here, where bench/ reads them).

The implementations, each on the same tensors (dtype, memory format, TF32 setting):

- "triton-conv": this package's custom ops (what triton_conv.conv2d and its backward run);
- "cudnn": torch's convolution (cuDNN on a GPU, with torch.backends.cudnn.benchmark on);
- "inductor": the same torch functions through torch.compile with max-autotune and Triton as the only
  GEMM and convolution backend, so Inductor's own Triton conv templates run (`peer_options`).

Nothing here needs a GPU to import; on the CPU every helper works on CPU tensors (the interpreter),
which is how CI keeps the benchmark files from rotting.
"""

from __future__ import annotations

import contextlib
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from .memory_format import random_in_layout
from .output_files import slug
from .problem import ConvProblem
from .timers import (  # noqa: F401 - re-exported: bench/ and the tests import them from here
    host_seconds,
    in_turn,
    input_sets,
    measure_copy_bandwidth,
    measure_matmul_peak,
    median_seconds,
    peak_memory_bytes,
    synchronized_timer,
)

IMPLEMENTATIONS = ("triton-conv", "cudnn", "inductor")
BENCH_PASSES = ("fprop", "dgrad", "wgrad", "fwd+bwd")
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32, "fp64": torch.float64}
# Relative error (Frobenius norm) each dtype may show against an fp32/fp64 reference.
TOLERANCE = {"fp16": 1e-2, "bf16": 4e-2, "fp32": 1e-2, "fp64": 1e-9}
TOLERANCE_FP32_IEEE = 1e-4


# --- settings shared by the implementations -----------------------------------------------------------
def use_comparable_settings(tf32: bool = True) -> None:
    """For the whole session: cuDNN's algorithm search on (torch.backends.cudnn.benchmark) and one TF32
    setting for cuDNN, cuBLAS, Inductor's templates and triton-conv, which read different flags.

    TF32 on: cuDNN's new-API fp32_precision = 'tf32' where it exists (Inductor's conv template reads
    exactly that; conv and rnn inherit it, and the legacy allow_tf32 still reads True), else the legacy
    flag; cuBLAS through its legacy flag. TF32 off: the legacy flags. Set once and never restored:
    torch 2.13 refuses to read a legacy flag once the two APIs disagree, and Inductor reads some."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    cudnn.benchmark = True
    matmul.allow_tf32 = tf32  # the legacy setter keeps both of cuBLAS's flags readable
    if tf32 and hasattr(cudnn, "fp32_precision"):
        cudnn.fp32_precision = "tf32"
    else:
        cudnn.allow_tf32 = tf32


def peer_options() -> dict:
    """torch.compile options for the peer: max-autotune without CUDA graphs (the other two
    implementations launch eagerly, so graphs would credit only the peer with saved launch time), and
    Triton as the only GEMM and convolution backend, 1x1 convolutions as Triton GEMMs. Knobs that this
    torch does not have are left out: the backward templates (max_autotune_conv_bwd_*) came after 2.11."""
    import torch._inductor.config as inductor

    wanted = {
        "max_autotune": True,
        "coordinate_descent_tuning": True,
        "triton.cudagraphs": False,
        "max_autotune_gemm_backends": "TRITON",
        "max_autotune_conv_backends": "TRITON",
        "max_autotune_conv_bwd_input_backends": "TRITON",
        "max_autotune_conv_bwd_weight_backends": "TRITON",
        "conv_1x1_as_mm": True,
    }

    def exists(key: str) -> bool:
        owner = inductor
        *path, leaf = key.split(".")
        for part in path:
            owner = getattr(owner, part, None)
        return owner is not None and hasattr(owner, leaf)

    return {key: value for key, value in wanted.items() if exists(key)}


def peer_has_backward_templates() -> bool:
    """Whether this torch's Inductor has Triton templates for dgrad and wgrad (else they run ATen)."""
    options = peer_options()
    return {"max_autotune_conv_bwd_input_backends", "max_autotune_conv_bwd_weight_backends"} <= set(options)


def compile_peer(fn: Callable, *, on_gpu: bool = True) -> Callable:
    """`fn` through torch.compile as the peer; on a CPU only Dynamo's tracing (backend 'eager'), which
    checks the wrapping without Inductor's CPU code generation."""
    if on_gpu:
        return torch.compile(fn, dynamic=False, options=peer_options())
    return torch.compile(fn, dynamic=False, backend="eager")


# --- the passes ---------------------------------------------------------------------------------------
def make_inputs(problem: ConvProblem, dtype: torch.dtype, channels_last: bool, device) -> dict:
    """Random x, w and dy for one problem, in the memory format asked for (a model's strides)."""
    make = lambda shape: random_in_layout(shape, dtype, device, channels_last)
    return {"x": make(problem.input_shape), "w": make(problem.weight_shape), "dy": make(problem.output_shape)}


def _geometry(problem: ConvProblem):
    if (problem.pad_top, problem.pad_left) != (problem.pad_bottom, problem.pad_right):
        raise ValueError(f"the benchmarks use symmetric padding, got {problem}")
    return list(problem.stride), [problem.pad_top, problem.pad_left], list(problem.dilation), problem.groups


def torch_pass(pass_name: str, problem: ConvProblem, tensors: dict) -> Callable[[], object]:
    """torch's own pass (cuDNN on a GPU): F.conv2d, aten.convolution_backward, or both with autograd."""
    stride, padding, dilation, groups = _geometry(problem)
    x, w, dy = tensors["x"], tensors["w"], tensors["dy"]
    backward = lambda mask: torch.ops.aten.convolution_backward(
        dy, x, w, None, stride, padding, dilation, False, [0, 0], groups, mask
    )
    if pass_name == "fprop":
        return lambda: F.conv2d(x, w, None, stride, padding, dilation, groups)
    if pass_name == "dgrad":
        return lambda: backward([True, False, False])[0]
    if pass_name == "wgrad":
        return lambda: backward([False, True, False])[1]
    return _forward_backward(lambda a, b: F.conv2d(a, b, None, stride, padding, dilation, groups), tensors)


def triton_pass(pass_name: str, problem: ConvProblem, tensors: dict) -> Callable[[], object]:
    """triton-conv's custom ops for one pass (fwd+bwd: triton_conv.conv2d with autograd)."""
    from .autograd import conv2d_op, input_grad_op, weight_grad_op
    from .functional import conv2d

    stride, _, dilation, groups = _geometry(problem)
    pads = list(problem.pads)
    x, w, dy = tensors["x"], tensors["w"], tensors["dy"]
    if pass_name == "fprop":
        return lambda: conv2d_op(x, w, None, stride, pads, dilation, groups)
    if pass_name == "dgrad":
        return lambda: input_grad_op(dy, x, w, stride, pads, dilation, groups)
    if pass_name == "wgrad":
        return lambda: weight_grad_op(dy, x, w, stride, pads, dilation, groups, False)[0]
    padding = [problem.pad_top, problem.pad_left]
    return _forward_backward(lambda a, b: conv2d(a, b, None, stride, padding, dilation, groups), tensors)


def peer_binder(pass_name: str, problem: ConvProblem, *, on_gpu: bool = True):
    """The Inductor peer: torch's pass compiled by `compile_peer` (fwd+bwd: the forward compiled,
    AOTAutograd compiles its backward), as bind(tensors) -> the call on them: one compilation serves
    every input set of the same shapes and strides. Dynamo is reset first: its cache is per code
    object, and after a few shapes of the same lambda it would stop compiling and silently run eagerly."""
    torch._dynamo.reset()
    stride, padding, dilation, groups = _geometry(problem)
    if pass_name in ("fwd+bwd", "fprop"):
        forward = compile_peer(
            lambda a, b: F.conv2d(a, b, None, stride, padding, dilation, groups), on_gpu=on_gpu
        )
        if pass_name == "fwd+bwd":
            return lambda tensors: _forward_backward(forward, tensors)
        return lambda tensors: lambda: forward(tensors["x"], tensors["w"])
    index, mask = (0, [True, False, False]) if pass_name == "dgrad" else (1, [False, True, False])
    compiled = compile_peer(
        lambda g, a, b: torch.ops.aten.convolution_backward(
            g, a, b, None, stride, padding, dilation, False, [0, 0], groups, mask
        )[index],
        on_gpu=on_gpu,
    )
    return lambda tensors: lambda: compiled(tensors["dy"], tensors["x"], tensors["w"])


def peer_pass(pass_name: str, problem: ConvProblem, tensors: dict, *, on_gpu: bool = True):
    """The Inductor peer's call on `tensors` (peer_binder)."""
    return peer_binder(pass_name, problem, on_gpu=on_gpu)(tensors)


def images_one_at_a_time(impl: str, problem: ConvProblem, tensors: dict) -> Callable[[], list]:
    """fprop of the batch as problem.batch launches of one image each, with triton-conv's op or
    torch's F.conv2d ('cudnn'); the outputs as a list (torch.cat of it compares with one batch's,
    outside the timing)."""
    stride, padding, dilation, groups = _geometry(problem)
    x, w = tensors["x"], tensors["w"]
    images = [x[i : i + 1] for i in range(problem.batch)]
    if impl == "triton-conv":
        from .autograd import conv2d_op

        pads = list(problem.pads)
        return lambda: [conv2d_op(image, w, None, stride, pads, dilation, groups) for image in images]
    if impl == "cudnn":
        return lambda: [F.conv2d(image, w, None, stride, padding, dilation, groups) for image in images]
    raise ValueError(f"impl must be triton-conv or cudnn, got {impl!r}")


def _forward_backward(forward: Callable, tensors: dict) -> Callable[[], tuple]:
    x = tensors["x"].detach().requires_grad_()
    w = tensors["w"].detach().requires_grad_()
    dy = tensors["dy"]
    return lambda: torch.autograd.grad(forward(x, w), (x, w), dy)


def pass_function(impl: str, pass_name: str, problem: ConvProblem, tensors: dict, *, on_gpu: bool = True):
    """A zero-argument callable that runs one pass with one implementation on `tensors`."""
    if impl == "triton-conv":
        return triton_pass(pass_name, problem, tensors)
    if impl == "cudnn":
        return torch_pass(pass_name, problem, tensors)
    if impl == "inductor":
        return peer_pass(pass_name, problem, tensors, on_gpu=on_gpu)
    raise ValueError(f"impl must be one of {IMPLEMENTATIONS}, got {impl!r}")


def pass_binder(impl: str, pass_name: str, problem: ConvProblem, *, on_gpu: bool = True):
    """pass_function as bind(tensors) -> call, for input sets taken in turn (timers.in_turn); the peer
    compiles once for all of them."""
    if impl == "inductor":
        return peer_binder(pass_name, problem, on_gpu=on_gpu)
    return lambda tensors: pass_function(impl, pass_name, problem, tensors, on_gpu=on_gpu)


def reference_result(pass_name: str, problem: ConvProblem, tensors: dict):
    """torch's result in fp64 (no TF32 to switch off) on the same device, to check any implementation."""
    widened = {name: t.to(torch.float64) for name, t in tensors.items()}
    with without_algorithm_search():
        return torch_pass(pass_name, problem, widened)()


@contextlib.contextmanager
def without_algorithm_search():
    """cuDNN's benchmark mode off for a reference computation: it would time fp64 algorithms per shape."""
    searching = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = searching


def relative_error(got, want) -> float:
    """The worst over the results of two errors, in fp64: ||got - want|| / ||want|| (Frobenius), and
    max |got - want| / max |want|. The norm-wise error of one wrong tile shrinks with the number of
    tiles (a 1,000-tile output with one tile wrong is about 3% off); the element-wise one does not,
    and for a correct result it is bounded by the output's rounding, as the norm-wise one is. NaN
    anywhere gives NaN, which every `error <= limit` refuses."""
    pairs = zip(got, want, strict=True) if isinstance(got, (tuple, list)) else [(got, want)]
    errors = []
    for a, b in pairs:
        if b.numel() == 0:  # an empty result is exact
            continue
        b = b.double()
        difference = a.double() - b
        errors.append((difference.norm() / b.norm().clamp_min(1e-30)).item())
        errors.append((difference.abs().max() / b.abs().max().clamp_min(1e-30)).item())
    # Python's max keeps a NaN only where it comes first
    return math.nan if any(map(math.isnan, errors)) else max(errors, default=0.0)


def tolerance(dtype_name: str, tf32: bool) -> float:
    return TOLERANCE_FP32_IEEE if dtype_name == "fp32" and not tf32 else TOLERANCE[dtype_name]


# --- the sweep as a command -------------------------------------------------------------------------------
def bench_dir() -> Path:
    """bench/ beside the package (an editable install or a checkout)."""
    return Path(__file__).resolve().parent.parent / "bench"


def sweep_command(json_path: str, pytest_args=()) -> list[str]:
    return [sys.executable, "-m", "pytest", str(bench_dir()), "--benchmark-only",
            f"--benchmark-json={json_path}", "-p", "no:cacheprovider", *pytest_args]  # fmt: skip


def default_sweep_path(notes_dir: str = "notes") -> str:
    """notes/sweeps/<gpu>.json for the GPU torch sees ('notes/sweeps/nvidia-h200.json')."""
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "no-gpu"
    return str(Path(notes_dir) / "sweeps" / f"{slug(name, 'no-gpu')}.json")


def run_sweep(json_path: str | None = None, pytest_args=(), env: dict | None = None) -> int:
    """Run the benchmark sweep on the GPU (pytest bench/ --benchmark-only) into `json_path` (default:
    `default_sweep_path()`); returns pytest's exit status. TRITON_INTERPRET is switched off for the
    child, whose kernels must compile; `env` adds the sweep's variables (bench/settings.py), e.g.
    {"TRITON_CONV_BENCH_PART": "fprop", "TRITON_CONV_BENCH_BUDGET_S": "480"}."""
    if not bench_dir().is_dir():
        raise FileNotFoundError(f"{bench_dir()} not found: the sweep runs from a checkout of triton-conv")
    json_path = json_path or default_sweep_path()
    Path(json_path).parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **(env or {}), "TRITON_INTERPRET": "0"}
    return subprocess.call(
        sweep_command(str(Path(json_path).resolve()), pytest_args), env=env, cwd=bench_dir().parent
    )
