"""TMA on the launchers' side: when an operand's memory is a plain row-major matrix that a Hopper
tensor descriptor can load, and the host descriptor for it.

The kernels take a descriptor slot per operand that may go through TMA (Plan.tma in common.py says
which); an operand that is not such a matrix keeps the pointer path.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from triton.tools.tensor_descriptor import TensorDescriptor


def matrix_row_stride(tensor: torch.Tensor, rows: tuple[int, ...], cols: tuple[int, ...]) -> int | None:
    """The row stride when the tensor's memory is a row-major matrix whose row index runs over the
    dims `rows` and whose column index runs over the dims `cols` (each listed outer to inner), with
    unit stride along the columns; None when it is not. Dims of size 1 are free."""
    extent = 1
    for dim in reversed(cols):
        if tensor.size(dim) != 1 and tensor.stride(dim) != extent:
            return None
        extent *= tensor.size(dim)
    row_stride = span = None
    for dim in reversed(rows):
        if tensor.size(dim) == 1:
            continue
        if row_stride is None:
            row_stride, span = tensor.stride(dim), tensor.stride(dim) * tensor.size(dim)
        elif tensor.stride(dim) != span:
            return None
        else:
            span *= tensor.size(dim)
    return extent if row_stride is None else row_stride


class TmaMatrix(NamedTuple):
    """One operand as TMA sees it: a (rows x cols) matrix with unit column stride, loaded in boxes
    of `block`. `descriptor(tensor)` builds the host descriptor for a call's tensor (per call: it
    holds the data pointer)."""

    rows: int
    cols: int
    row_stride: int
    block: tuple[int, int]

    def descriptor(self, tensor: torch.Tensor) -> TensorDescriptor:
        return TensorDescriptor(tensor, [self.rows, self.cols], [self.row_stride, 1], list(self.block))


def tma_available(device: torch.device) -> bool:
    """TMA on Hopper and newer GPUs, and in Triton's interpreter (CPU tensors). For older GPUs
    Triton rewrites descriptor loads into bounds-checked pointer loads, costlier in registers than
    the kernels' own pointer paths (sm_80 spilled), so those get no descriptors."""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device)[0] >= 9
    return device.type == "cpu"


def tma_matrix(tensor, rows: tuple, cols: tuple, block: tuple[int, int]) -> TmaMatrix | None:
    """The TMA view of `tensor` as matrix_row_stride describes it, or None when TMA cannot load it:
    16- and 32-bit elements only (float64 keeps the pointer path), the data and the row stride
    16-byte aligned, and rows that do not overlap. cuTensorMapEncodeTiled's documented rules say
    nothing of a row stride of 0 (an expanded grad_output) or below the row's length (an
    overlapping view); such operands keep the pointer path rather than trust an unstated rule."""
    size = tensor.element_size()
    stride = matrix_row_stride(tensor, rows, cols)
    if size not in (2, 4) or stride is None or tensor.numel() == 0:
        return None
    n_rows = n_cols = 1
    for dim in rows:
        n_rows *= tensor.size(dim)
    for dim in cols:
        n_cols *= tensor.size(dim)
    if tensor.data_ptr() % 16 or (stride * size) % 16 or (n_rows > 1 and stride < n_cols):
        return None
    return TmaMatrix(n_rows, n_cols, stride, block)
