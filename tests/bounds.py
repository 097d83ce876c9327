"""Every address a kernel loads or stores, checked under Triton's interpreter against the elements of
the launch's tensors.

The contract tests' NaN-poisoned storage shows a read outside a tensor only when the value read
reaches a stored result; a lane whose result is dropped (a column past the GEMM, a padded row) can
read anywhere and leave the output right, while on a GPU the same read can leave the allocation and
fault. `addresses_checked()` records, for each launch inside the block, every unmasked lane of every
load, store and atomic whose address is not inside an element of one of the launch's tensor
arguments (descriptor bases included): the exact element set, so a lane in a view's gap counts too.

What the hook sees (Triton 3.6 to 3.9): the interpreter's `create_masked_load` and
`create_masked_store`, through which it routes unmasked loads and stores (an all-true mask), TMA
descriptor loads and stores (the mask of the descriptor's bounds), block pointers (3.6) and atomic
loads and stores (3.9); and `create_atomic_rmw` and `create_atomic_cas`, which go to memory
directly. A descriptor's lanes past its shape are zero-filled, never read, on a GPU as here: what
must lie inside the tensor is the descriptor's whole view (shape and strides), checked at launch,
whichever tiles the kernel then loads; its in-bounds lanes are checked as loads as well.

Cheap enough for the whole suite (on by default under the interpreter, tests/conftest.py): each tensor is
its element spans in bytes (one span for a dense tensor, one per contiguous run of a view), merged
and sorted once per launch; each access is one np.searchsorted of its lanes into them.
"""

from __future__ import annotations

import contextlib
import textwrap

import numpy as np
import pytest
import torch
from triton.runtime import interpreter
from triton.tools.tensor_descriptor import TensorDescriptor


def element_starts(pointer: int, shape, strides, element_size: int) -> np.ndarray:
    """The byte address of each element of a strided view (zero strides included)."""
    offsets = np.zeros((), dtype=np.int64)
    for size, stride in zip(shape, strides):
        offsets = np.add.outer(offsets, np.arange(size, dtype=np.int64) * stride)
    return (pointer + offsets.ravel() * element_size).astype(np.uint64)


def element_spans(pointer: int, shape, strides, element_size: int) -> np.ndarray:
    """The (start, end) byte spans that the elements of a strided view cover: its innermost dims
    that are dense (stride 1, then each stride the product of the sizes inside it) make one run,
    repeated at every index of the outer dims. Size-1 and zero-stride dims add nothing."""
    if any(size == 0 for size in shape):
        return np.zeros((0, 2), dtype=np.uint64)
    dims = sorted((stride, size) for size, stride in zip(shape, strides) if size > 1 and stride)
    run = 1
    while dims and dims[0][0] == run:
        run *= dims.pop(0)[1]
    starts = element_starts(pointer, [size for _, size in dims], [stride for stride, _ in dims], element_size)
    return np.stack([starts, starts + np.uint64(run * element_size)], axis=1)


def merged(spans: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Spans sorted and merged where they touch or overlap: (starts, ends), both increasing."""
    spans = np.concatenate([np.zeros((0, 2), np.uint64), *spans])
    if not len(spans):
        return spans[:, 0], spans[:, 1]
    spans = spans[np.argsort(spans[:, 0], kind="stable")]
    reach = np.maximum.accumulate(spans[:, 1])
    new = np.ones(len(spans), dtype=bool)
    new[1:] = spans[1:, 0] > reach[:-1]
    first = np.flatnonzero(new)
    last = np.append(first[1:] - 1, len(spans) - 1)
    return spans[first, 0], reach[last]


def uncovered(lo: np.ndarray, hi: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Which of the byte ranges [lo, hi) no single merged span (starts, ends) covers."""
    if not len(starts):
        return np.ones(lo.shape, dtype=bool)
    which = np.searchsorted(starts, lo, side="right") - 1
    return (which < 0) | (hi > ends[np.maximum(which, 0)])


def tensor_spans(tensor: torch.Tensor) -> np.ndarray:
    return element_spans(tensor.data_ptr(), tensor.shape, tensor.stride(), tensor.element_size())


class Outside:
    """What a checked block saw: (kernel, what, lanes outside, program id) per access, `what` one
    of 'load', 'store', 'atomic' or 'descriptor' (a TMA view reaching past its tensor: its elements
    outside, at launch)."""

    def __init__(self):
        self.accesses: list[tuple] = []
        self._kernel = None
        self._spans = None

    def _launch(self, kernel_name: str, args) -> None:
        self._kernel = kernel_name
        spans = []
        for arg in args:
            tensor = arg.base if isinstance(arg, TensorDescriptor) else arg
            if isinstance(tensor, torch.Tensor):
                spans.append(tensor_spans(tensor))
            if isinstance(arg, TensorDescriptor):
                self._check_descriptor(arg)
        self._spans = merged(spans)

    def _check_descriptor(self, descriptor: TensorDescriptor) -> None:
        base, size = descriptor.base, descriptor.base.element_size()
        view = element_spans(base.data_ptr(), descriptor.shape, descriptor.strides, size)
        inside = merged([tensor_spans(base)])
        if not uncovered(view[:, 0], view[:, 1], *inside).any():
            return
        # Rare: count the view's elements outside, one by one.
        elements = element_starts(base.data_ptr(), descriptor.shape, descriptor.strides, size)
        outside = uncovered(elements, elements + np.uint64(size), *inside)
        self.accesses.append((self._kernel, "descriptor", int(outside.sum()), None))

    def _check(self, kind: str, ptrs, mask) -> None:
        if self._spans is None:
            return
        addresses = np.asarray(ptrs.data).astype(np.uint64)
        # Triton 3.6's descriptors pass their mask as a bare array, not a TensorHandle.
        lanes = mask if isinstance(mask, np.ndarray) else np.asarray(mask.data, dtype=bool)
        lanes = np.broadcast_to(lanes, addresses.shape)
        addresses = addresses[lanes]
        outside = int(uncovered(addresses, addresses + np.uint64(1), *self._spans).sum())
        if outside:
            program = tuple(int(i) for i in interpreter.interpreter_builder.grid_idx)
            self.accesses.append((self._kernel, kind, outside, program))

    def report(self, limit: int = 5) -> str:
        """The first `limit` accesses, one a line, and how many there were in all."""
        lines = [
            f"{kernel}: {kind}, {lanes} lane(s) outside, program {program}"
            for kernel, kind, lanes, program in self.accesses[:limit]
        ]
        if len(self.accesses) > limit:
            lines.append(f"... {len(self.accesses)} accesses outside in all")
        return "\n".join(lines)


@contextlib.contextmanager
def addresses_checked():
    """`with addresses_checked() as outside: ...; assert not outside.accesses`. Interpreter only.
    An inner block takes the accesses made inside it from an outer one (the whole-suite check of
    tests/conftest.py): a test that provokes accesses outside asserts on them itself."""
    from .program_order import require_interpreter

    require_interpreter("addresses_checked")
    outside = Outside()
    builder, executor = interpreter.InterpreterBuilder, interpreter.GridExecutor
    names = ("create_masked_load", "create_masked_store", "create_atomic_rmw", "create_atomic_cas")
    saved = {name: getattr(builder, name) for name in names}
    saved_call = executor.__call__
    # The interpreter's own functions, not an outer block's checks of them.
    original = {name: getattr(function, "__wrapped__", function) for name, function in saved.items()}
    call = getattr(saved_call, "__wrapped__", saved_call)

    # *rest, **options: the cache and eviction arguments differ between Triton 3.6 and 3.9.
    def checked_load(self, ptrs, mask, *rest, **options):
        outside._check("load", ptrs, mask)
        return original["create_masked_load"](self, ptrs, mask, *rest, **options)

    def checked_store(self, ptrs, value, mask, *rest, **options):
        outside._check("store", ptrs, mask)
        return original["create_masked_store"](self, ptrs, value, mask, *rest, **options)

    def checked_rmw(self, op, ptr, value, mask, *rest):
        outside._check("atomic", ptr, mask)
        return original["create_atomic_rmw"](self, op, ptr, value, mask, *rest)

    def checked_cas(self, ptr, *rest):
        outside._check("atomic", ptr, np.ones(np.shape(ptr.data), dtype=bool))
        return original["create_atomic_cas"](self, ptr, *rest)

    def checked_call(self, *args, **kwargs):
        outside._launch(self.fn.__name__, (*args, *kwargs.values()))
        try:
            return call(self, *args, **kwargs)
        finally:
            outside._spans = None

    checks = zip(names, (checked_load, checked_store, checked_rmw, checked_cas))
    for (name, check), function in zip(checks, original.values()):
        check.__wrapped__ = function
        setattr(builder, name, check)
    checked_call.__wrapped__ = call
    executor.__call__ = checked_call
    try:
        yield outside
    finally:
        for name, function in saved.items():
            setattr(builder, name, function)
        executor.__call__ = saved_call


class SuiteCheck:
    """The whole-suite check (tests/conftest.py registers it as a plugin under the interpreter unless
    TRITON_CONV_CHECK_ADDRESSES=0): every test of the session inside `addresses_checked()`, and each
    phase of a test (setup, call, teardown) failed if a kernel launched in it touched a lane outside
    its tensors."""

    def __init__(self):
        self._check = addresses_checked()
        self.outside = self._check.__enter__()

    def pytest_unconfigure(self, config):
        self._check.__exit__(None, None, None)

    def _phase(self, item, phase: str):
        self.outside.accesses.clear()
        try:
            return (yield)
        finally:
            if self.outside.accesses:
                found = self.outside.report()
                self.outside.accesses.clear()
                raise AssertionError(f"{item.nodeid} ({phase}): lanes outside the launch's tensors\n{found}")

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_setup(self, item):
        return (yield from self._phase(item, "setup"))

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item):
        return (yield from self._phase(item, "call"))

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_teardown(self, item):
        return (yield from self._phase(item, "teardown"))


def checked_script(script: str, check: bool) -> str:
    """`script` (a child process's code) inside `addresses_checked()` when `check` (the whole-suite
    check, tests/conftest.py's CHECK_ADDRESSES): an access outside ends the child with its report.
    Needs the repository on the child's PYTHONPATH."""
    if not check:
        return script
    body = textwrap.indent(textwrap.dedent(script), "    ")
    return (
        "from tests.bounds import addresses_checked\n"
        f"with addresses_checked() as outside:\n{body}\n"
        'assert not outside.accesses, "lanes outside the launch\'s tensors\\n" + outside.report()\n'
    )
