"""Where the kernels run and which fp32 precision they use: the same as cuDNN's convolution."""

import itertools
import os
import subprocess
import sys

import torch

from triton_conv.runtime import fp32_uses_tf32

LEVELS = ("none", "tf32", "ieee")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_tf32_resolves_like_cudnn_conv_for_every_setting(tf32_restored):
    """torch resolves cuDNN conv's fp32 precision from the most specific of its three levels that is
    not 'none'. The legacy getter answers only where conv, RNN and the legacy flag agree, and then
    its answer is cuDNN's: every such setting must agree with ours, and so must the legacy setter's
    two states (which leave all levels 'none' for False)."""
    cudnn = torch.backends.cudnn
    compared = 0
    for generic, backend, op in itertools.product(LEVELS, LEVELS, LEVELS):
        torch.backends.fp32_precision = generic
        cudnn.fp32_precision = backend
        cudnn.conv.fp32_precision = cudnn.rnn.fp32_precision = op
        try:
            cudnn_conv = torch._C._get_cudnn_allow_tf32()
        except RuntimeError:  # conv and RNN agree, but not with the legacy flag: no answer to compare
            continue
        assert fp32_uses_tf32() == cudnn_conv, (generic, backend, op)
        compared += 1
    assert compared >= 9
    for allow in (False, True):
        cudnn.allow_tf32 = allow
        assert fp32_uses_tf32() == allow


def test_a_mixed_new_api_setting_never_raises(tf32_restored):
    """conv 'none', cuDNN 'tf32' and RNN 'ieee': the legacy getter raises, our choice still resolves."""
    cudnn = torch.backends.cudnn
    cudnn.conv.fp32_precision = "none"
    cudnn.fp32_precision = "tf32"
    cudnn.rnn.fp32_precision = "ieee"
    assert fp32_uses_tf32() is True
    cudnn.fp32_precision = "ieee"
    assert fp32_uses_tf32() is False


_FALSE_INTERPRET = """
import os, warnings
import torch, torch.nn.functional as F
import triton_conv
from triton_conv.launchers.common import launch_counts

x, w = torch.randn(2, 3, 6, 5, dtype=torch.float64), torch.randn(4, 3, 3, 3, dtype=torch.float64)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    first = triton_conv.conv2d(x, w, padding=1)
    os.environ["TRITON_INTERPRET"] = "1"  # too late: @triton.jit has wrapped the kernels already
    second = triton_conv.conv2d(x, w, padding=1)
expected = F.conv2d(x, w, padding=1)
assert torch.equal(first, expected) and torch.equal(second, expected)
assert not launch_counts, launch_counts
assert any("TRITON_INTERPRET=1" in str(c.message) for c in caught), [str(c.message) for c in caught]
"""


def test_the_interpreter_is_on_exactly_when_triton_wrapped_the_kernels_in_it():
    """Triton reads TRITON_INTERPRET=false (or 2, or ' 1') as off, and reads it once, as @triton.jit
    wraps the kernels: CPU tensors must then fall back to torch's conv2d with the warning, even if
    the variable says 1 by the time of the call, not go to compiled kernels that cannot take them
    (which raised "0 active drivers" on a machine without a GPU)."""
    env = {**os.environ, "TRITON_INTERPRET": "false", "PYTHONPATH": ROOT}
    run = subprocess.run(
        [sys.executable, "-c", _FALSE_INTERPRET], env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]


_SET_AFTER_TRITON = """
import os, warnings
import torch, torch.nn.functional as F
import triton  # as torch.compile's first call imports it: Triton's own @jit functions are made now
os.environ["TRITON_INTERPRET"] = "1"
import triton_conv
from triton_conv.launchers.common import launch_counts
from triton_conv.runtime import interpreter_active

assert not interpreter_active()
x, w = torch.randn(2, 3, 6, 5, dtype=torch.float64), torch.randn(4, 3, 3, 3, dtype=torch.float64)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    out = triton_conv.conv2d(x, w, padding=1)
assert torch.equal(out, F.conv2d(x, w, padding=1)) and not launch_counts, launch_counts
assert any("before anything imports triton" in str(c.message) for c in caught), caught
"""


def test_interpret_set_after_tritons_import_falls_back_to_torch():
    """TRITON_INTERPRET=1 set after triton was imported but before the package: the package's
    kernels were made interpreted and Triton's own jit functions (tl.cdiv) were not, and every CPU
    convolution raised the interpreter's "Cannot call @triton.jit'd outside of the scope of a
    kernel". It is now the fallback to torch, with the warning that says where to set the variable."""
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    run = subprocess.run(
        [sys.executable, "-c", _SET_AFTER_TRITON], env={**env, "PYTHONPATH": ROOT},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
