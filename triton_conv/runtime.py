"""Where a convolution can run: a CUDA device, or the CPU through Triton's interpreter."""

from __future__ import annotations

import contextlib
import warnings

import torch

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


def device_guard(device: torch.device):
    """torch.cuda.device(device) for a CUDA device, else nothing to do. Triton launches on the
    current device and its current stream, whatever device the pointers belong to: whatever launches
    kernels on a tensor's device (the passes, tuning, the autotune tables) makes it current first,
    as torch's own kernels do, or a model on cuda:1 while cuda:0 is current launches on cuda:0."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def runs_triton(tensor: torch.Tensor) -> bool:
    """True when a tensor on this device runs the Triton kernels (meta tensors: the ops' shape-only
    implementations); warns once when it cannot."""
    global _warned_fallback
    if tensor.device.type in ("cuda", "meta") or (tensor.device.type == "cpu" and interpreter_active()):
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


def fp32_uses_tf32() -> bool:
    """fp32 convolutions use TF32 exactly when cuDNN's would.

    torch (2.9 and later) resolves cuDNN's conv precision as the first of cuDNN-conv's, cuDNN's and
    the global `fp32_precision` that is not 'none', and uses TF32 only when that is 'tf32' (all
    'none', as `allow_tf32 = False` leaves them, is IEEE). The legacy `cudnn.allow_tf32` is read
    only where that API is missing: reading it raises once the new API set conv and RNN apart.
    """
    conv_settings = getattr(torch.backends.cudnn, "conv", None)
    chain = (
        getattr(conv_settings, "fp32_precision", None),
        getattr(torch.backends.cudnn, "fp32_precision", None),
        getattr(torch.backends, "fp32_precision", None),
    )
    if chain[0] is None:
        return bool(torch.backends.cudnn.allow_tf32)
    return next((precision for precision in chain if precision not in (None, "none")), "ieee") == "tf32"
