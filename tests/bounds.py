"""Every address a kernel loads or stores, checked under Triton's interpreter against the elements of
the launch's tensors.

The contract tests' NaN-poisoned storage shows a read outside a tensor only when the value read
reaches a stored result; a lane whose result is dropped (a column past the GEMM, a padded row) can
read anywhere and leave the output right, while on a GPU the same read can leave the allocation and
fault. `addresses_checked()` records, for each launch inside the block, every unmasked lane of every
load and store whose address is not an element of one of the launch's tensor arguments (descriptor
bases included): the exact element set, so a lane in a view's gap counts too.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from triton.runtime import interpreter
from triton.tools.tensor_descriptor import TensorDescriptor


def element_addresses(tensor: torch.Tensor) -> np.ndarray:
    """The byte address of each element of `tensor` (a view's strides, zero strides included)."""
    offsets = np.zeros((), dtype=np.int64)
    for size, stride in zip(tensor.shape, tensor.stride()):
        offsets = np.add.outer(offsets, np.arange(size, dtype=np.int64) * stride)
    return (tensor.data_ptr() + offsets.ravel() * tensor.element_size()).astype(np.uint64)


class Outside:
    """What a checked block saw: (kernel, 'load' or 'store', lanes outside, program id) per access."""

    def __init__(self):
        self.accesses: list[tuple] = []
        self._kernel = None
        self._allowed = None

    def _launch(self, kernel_name: str, args) -> None:
        tensors = [arg.base if isinstance(arg, TensorDescriptor) else arg for arg in args]
        spans = [element_addresses(t) for t in tensors if isinstance(t, torch.Tensor) and t.numel()]
        self._kernel = kernel_name
        self._allowed = np.unique(np.concatenate(spans)) if spans else np.zeros(0, np.uint64)

    def _check(self, kind: str, ptrs, mask) -> None:
        if self._allowed is None:
            return
        addresses = np.asarray(ptrs.data).astype(np.uint64)
        lanes = np.broadcast_to(np.asarray(mask.data, dtype=bool), addresses.shape)
        outside = int((~np.isin(addresses[lanes], self._allowed)).sum())
        if outside:
            program = interpreter.interpreter_builder.grid_idx
            self.accesses.append((self._kernel, kind, outside, program))


@contextlib.contextmanager
def addresses_checked():
    """`with addresses_checked() as outside: ...; assert not outside.accesses`. Interpreter only."""
    outside = Outside()
    builder = interpreter.InterpreterBuilder
    load, store = builder.create_masked_load, builder.create_masked_store
    call = interpreter.GridExecutor.__call__

    # *rest, **options: the cache and eviction arguments differ between Triton 3.6 and 3.9.
    def checked_load(self, ptrs, mask, *rest, **options):
        outside._check("load", ptrs, mask)
        return load(self, ptrs, mask, *rest, **options)

    def checked_store(self, ptrs, value, mask, *rest, **options):
        outside._check("store", ptrs, mask)
        return store(self, ptrs, value, mask, *rest, **options)

    def checked_call(self, *args, **kwargs):
        outside._launch(self.fn.__name__, args)
        try:
            return call(self, *args, **kwargs)
        finally:
            outside._allowed = None

    builder.create_masked_load, builder.create_masked_store = checked_load, checked_store
    interpreter.GridExecutor.__call__ = checked_call
    try:
        yield outside
    finally:
        builder.create_masked_load, builder.create_masked_store = load, store
        interpreter.GridExecutor.__call__ = call
