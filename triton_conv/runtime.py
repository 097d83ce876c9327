"""Where a convolution can run: a CUDA device, or the CPU through Triton's interpreter."""

from __future__ import annotations

import contextlib
import contextvars
import sys
import warnings

import torch
from torch._prims_common import suggest_memory_format

_warned_fallback = False


def _kernels_interpreted() -> bool:
    """Whether the package's kernels run in Triton's interpreter. Triton decides that once per
    function, when @triton.jit wraps it (on import, from TRITON_INTERPRET as Triton reads it: '1',
    'true', 'on' or 'yes'), so the functions are asked, not the environment: a value Triton reads as
    false ('false', '2') or one set after the import would otherwise send CPU tensors to compiled
    kernels. Triton's own @jit functions (tl.cdiv, which the kernels call) are asked too: set after
    triton's import (by torch.compile, say) but before the package's, the variable makes our kernels
    interpreted and Triton's not, and every interpreted launch failed."""
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction

    from .kernels.fprop import fprop_kernel

    return isinstance(fprop_kernel, InterpretedFunction) and isinstance(tl.cdiv, InterpretedFunction)


# Asked once, on import: a plain value rather than a cached function, which torch.compile would trace
# through (it ignores caches, and warns that it does) every time it compiles a convolution.
_INTERPRETED = _kernels_interpreted()


def interpreter_active() -> bool:
    """Whether the package's kernels run in Triton's interpreter (see _kernels_interpreted)."""
    return _INTERPRETED


# Where torch 2.11 to 2.13 keep the two ONNX exporters' "exporting now" flags.
_ONNX_FLAGS = "torch.onnx._internal.exporter._flags"
_ONNX_TORCHSCRIPT_GLOBALS = "torch.onnx._internal.torchscript_exporter._globals"


# Dynamo calls it while tracing and keeps the answer as a constant of the graph, with no guard: traced,
# its reads of sys.modules made Dynamo guard on that dict's size, so that every later import anywhere
# in the program recompiled each compiled convolution (and after 8, fullgraph=True failed). An
# export (strict torch.export, torch.onnx's dynamo=True) traces anew and asks again.
@torch.compiler.assume_constant_result
def exporting_to_onnx() -> bool:
    """torch.onnx.export is running, by either exporter. An ONNX model runs in an ONNX runtime,
    never on these kernels: the package then calls torch's own convolution, so that the exported
    graph holds ONNX's Conv and ConvTranspose, as the torch model's would. Read from the flags
    directly (torch.onnx.is_in_onnx_export imports two modules per call: about 1.7 µs, against
    0.2 µs here); torch.onnx is imported by torch.compile, so it is not a sign of an export."""
    if "torch.onnx" not in sys.modules:
        return False
    flags, script = sys.modules.get(_ONNX_FLAGS), sys.modules.get(_ONNX_TORCHSCRIPT_GLOBALS)
    if flags is None or script is None:  # not yet imported, or another torch's layout: ask torch
        return torch.onnx.is_in_onnx_export()
    return bool(flags._is_onnx_exporting or script.GLOBALS.in_onnx_export)


def device_guard(device: torch.device):
    """torch.cuda.device(device) for a CUDA device, else nothing to do. Triton launches on the
    current device and its current stream, whatever device the pointers belong to: whatever launches
    kernels on a tensor's device (the passes, tuning, the autotune tables) makes it current first,
    as torch's own kernels do, or a model on cuda:1 while cuda:0 is current launches on cuda:0."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def kernels_run_on(device: torch.device) -> bool:
    """Whether the Triton kernels run on tensors of this device (meta tensors: the ops' shape-only
    implementations)."""
    return device.type in ("cuda", "meta") or (device.type == "cpu" and interpreter_active())


def runs_triton(tensor: torch.Tensor) -> bool:
    """True when a tensor on this device runs the Triton kernels; warns once when it cannot."""
    global _warned_fallback
    if kernels_run_on(tensor.device):
        return True
    if not _warned_fallback:
        _warned_fallback = True
        warnings.warn(
            f"triton_conv: {tensor.device.type} tensors fall back to torch's own convolutions; set "
            "TRITON_INTERPRET=1 before anything imports triton (triton_conv, torch.compile) to run "
            "the Triton kernels on the CPU (slow, for testing), or move the tensors to a CUDA device",
            RuntimeWarning,
            stacklevel=3,
        )
    return False


def _resolved_tf32(chain, legacy) -> bool:
    """torch's fp32 precision for one backend and op: the first of `chain` (the op's setting, the
    backend's, the global one) that is not 'none', TF32 only when that is 'tf32' (all 'none' is
    IEEE); `legacy()` where the new API is missing."""
    if chain[0] is None:
        return bool(legacy())
    return next((precision for precision in chain if precision not in (None, "none")), "ieee") == "tf32"


def cudnn_conv_uses_tf32() -> bool:
    """cuDNN's convolutions compute fp32 in TF32: torch (2.9 and later) resolves their precision as
    the first of cuDNN-conv's, cuDNN's and the global `fp32_precision` that is not 'none'. The legacy
    `cudnn.allow_tf32` is read only where that API is missing: reading it raises once the new API set
    conv and RNN apart."""
    conv_settings = getattr(torch.backends.cudnn, "conv", None)
    chain = (
        getattr(conv_settings, "fp32_precision", None),
        getattr(torch.backends.cudnn, "fp32_precision", None),
        getattr(torch.backends, "fp32_precision", None),
    )
    return _resolved_tf32(chain, lambda: torch.backends.cudnn.allow_tf32)


def cublas_uses_tf32() -> bool:
    """cuBLAS's fp32 matmuls compute in TF32 (torch's own convolutions without cuDNN are im2col and
    a cuBLAS GEMM): CUDA-matmul's `fp32_precision`, else the global one; by default IEEE."""
    matmul = torch.backends.cuda.matmul
    chain = (
        getattr(matmul, "fp32_precision", None),
        getattr(torch.backends.cuda, "fp32_precision", None),
        getattr(torch.backends, "fp32_precision", None),
    )
    return _resolved_tf32(chain, lambda: matmul.allow_tf32)


def _fits_int32_indexing(tensor: torch.Tensor) -> bool:
    """torch's canUse32BitIndexMath: fewer than 2**31 - 1 elements, and so is the farthest offset
    (torch's own limit, one below launchers.common.reaches_int32_limit's, which is the kernels')."""
    limit = 2**31 - 1
    reach = sum((size - 1) * abs(step) for size, step in zip(tensor.shape, tensor.stride()))
    return tensor.numel() < limit and (tensor.numel() == 0 or reach < limit)


def torch_conv_uses_tf32(input: torch.Tensor, weight: torch.Tensor, groups: int, transposed: bool) -> bool:
    """Whether torch's CUDA convolution of these operands computes fp32 in TF32 (its forward and both
    gradients pick one backend). Not every one runs cuDNN: a depthwise convolution (groups equal to
    the input's channels, more than one, output channels a multiple of them; not transposed) in NCHW
    runs torch's own depthwise kernel, in IEEE fp32, unless an operand is too large for 32-bit
    indexing (then cuDNN); with cuDNN disabled, depthwise ones run that kernel and the rest im2col and
    cuBLAS, whose setting then counts. Otherwise cuDNN's setting."""
    channels = input.shape[1]
    depthwise = not transposed and 1 < groups == channels and weight.shape[0] % channels == 0
    if not torch.backends.cudnn.enabled:
        return False if depthwise else cublas_uses_tf32()
    # cuDNN's layout choice: channels_last where torch suggests it for either operand, a conv1d's seen
    # as torch sees it, with a height of one
    operands = [t.unsqueeze(2) if t.dim() == 3 else t for t in (input, weight)]
    nhwc = any(suggest_memory_format(t) == torch.channels_last for t in operands)
    if depthwise and not nhwc and _fits_int32_indexing(input) and _fits_int32_indexing(weight):
        return False  # torch's own depthwise kernel
    return cudnn_conv_uses_tf32()


# One convolution op's answer while its passes run (call_tf32): the tuning key, the memo and the
# kernels' precision all read it through fp32_uses_tf32.
_CALL_TF32: contextvars.ContextVar[bool | None] = contextvars.ContextVar("call_tf32", default=None)


@contextlib.contextmanager
def call_tf32(tf32: bool | None):
    """Within: fp32_uses_tf32() answers `tf32` (None: the cuDNN setting, as outside any call)."""
    token = _CALL_TF32.set(tf32)
    try:
        yield
    finally:
        _CALL_TF32.reset(token)


def fp32_uses_tf32() -> bool:
    """fp32 convolutions use TF32 when torch's would: inside a convolution op, that call's answer
    (torch_conv_uses_tf32, through call_tf32; a depthwise-shaped transposed convolution's gradients
    are conv2d's depthwise ops here, so IEEE where torch's cuDNN would use TF32: README); elsewhere
    (a pass run directly, a tuning without a call) cuDNN's setting."""
    in_call = _CALL_TF32.get()
    return cudnn_conv_uses_tf32() if in_call is None else in_call


def deterministic_convolutions() -> bool:
    """torch's convolutions must give the same bits run after run: torch.use_deterministic_algorithms
    (warn-only too) or cuDNN's own torch.backends.cudnn.deterministic, either of which holds torch's
    CUDA convolutions to deterministic algorithms. The package stands in for cuDNN, so it honours
    both, as it honours cuDNN's TF32 setting (choices.untimed_config)."""
    return torch.are_deterministic_algorithms_enabled() or bool(torch.backends.cudnn.deterministic)


_NO_TF32_TO_CHOOSE = contextlib.nullcontext()


def torchs_precision(input: torch.Tensor, weight: torch.Tensor, groups: int, transposed: bool = False):
    """call_tf32 for a convolution op's passes: fp32 in TF32 exactly when torch's convolution of the
    same operands would use it (torch_conv_uses_tf32). Other dtypes have no TF32 to choose, and
    nothing of their passes asks fp32_uses_tf32 (every caller tests for float32 first): no context
    to enter, a few µs of each call's host time saved."""
    if input.dtype != torch.float32:
        return _NO_TF32_TO_CHOOSE
    return call_tf32(torch_conv_uses_tf32(input, weight, groups, transposed))
