"""Tests run the Triton kernels on CPU tensors through Triton's interpreter.

TRITON_INTERPRET must be set before @triton.jit runs, so before triton_conv is imported.
"""

import os
import sys

import torch

# `pytest --benchmark-only` on a GPU machine times the real kernels: no interpreter there.
if not ("--benchmark-only" in sys.argv and torch.cuda.is_available()):
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

import pytest  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from triton_conv.launchers.common import launch_counts  # noqa: E402

_TORCH_CONVOLUTIONS = {
    "convolution",
    "convolution_backward",
    "_convolution",
    "conv2d",
    "cudnn_convolution",
    "mkldnn_convolution",
    "_slow_conv2d_forward",
    "_slow_conv2d_backward",
    "thnn_conv2d",
    "_nnpack_spatial_convolution",
}


class NoTorchConvolution(TorchDispatchMode):
    """Fails any test in which torch's own convolution runs: the Triton kernels must do the work."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "aten" and func.overloadpacket.__name__ in _TORCH_CONVOLUTIONS:
            raise AssertionError(f"torch's {func} ran where triton-conv's kernels should have")
        return func(*args, **(kwargs or {}))


class TritonProof:
    """Counts triton-conv's kernel launches inside a `with` block, with torch's convolutions barred."""

    def __enter__(self):
        self._before = dict(launch_counts)
        self._mode = NoTorchConvolution()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        self._mode.__exit__(*exc)
        self.launches = {k: v - self._before.get(k, 0) for k, v in launch_counts.items()}
        self.launches = {k: v for k, v in self.launches.items() if v}
        return False


@pytest.fixture
def triton_only():
    """`with triton_only() as proof: ...; assert proof.launches[...]`."""
    return TritonProof


@pytest.fixture(autouse=True)
def _fresh_seed():
    # Fresh random data every run; the seed is printed on failure so a case can be replayed.
    seed = int.from_bytes(os.urandom(4), "little")
    torch.manual_seed(seed)
    print(f"torch.manual_seed({seed})")
    yield seed
