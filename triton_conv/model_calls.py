"""The convolution calls of a model's forward, found without running a kernel: what tune_model tunes.

`conv_problems(model, input_shape)` runs one forward on meta tensors (shapes and strides, no data,
no kernels) in which every torch Conv1d, Conv2d and ConvTranspose2d computes as triton-conv's
module does (the modules convert_model converts; triton-conv's own modules compute as they always
do), and records each call of the package's ops (triton_conv::conv2d, ::conv_transpose2d) with the
tensors the op receives. From those it names, exactly as the autograd ops and passes.py will at run
time:

- the conv2d problem the kernels run, canonical, as the op builds it: conv2d's own, conv1d's
  height-one conv2d, a transposed convolution's conv2d view (ConvProblem.from_transposed);
- each kernel pass the call launches, with the layout flag its tuning key carries: for conv2d and
  conv1d, fprop (flag: input or weight channels_last), dgrad where the input needs a gradient (the
  input's layout) and wgrad where the weight does (the weight's layout); for a transposed
  convolution (TRANSPOSED_PASSES), its forward is the view's dgrad (input or weight), its input
  gradient the view's fprop (the incoming gradient, taken to have the output's layout, or the
  weight) and its weight gradient the view's wgrad (the weight's layout); and the precision each
  runs in (runtime.torch_conv_uses_tf32).

The forward runs on a copy of the model whose tensors are meta tensors (CallFinder), so the model
itself is never touched and other threads may run it meanwhile. A model the copy cannot serve
(copy.deepcopy refuses it; a forward or hook that reads the original model's tensors, through a
closure; a `__deepcopy__` that copies data) is read as before: its own forward under
torch.func.functional_call with meta tensors swapped in (its plain tensor attributes too), its
classes swapped and hooks added for the length of that call, one such call at a time in the
process; a thread running that model meanwhile would see them.
"""

from __future__ import annotations

import contextlib
import copy
import random
import sys
import threading
from typing import NamedTuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .autograd import checked_problem, checked_transposed_problem, conv2d_op, conv_transpose2d_op
from .nn import CONVERSIONS
from .passes import pass_channels_last
from .problem import TRANSPOSED_PASSES, ConvProblem
from .runtime import torch_conv_uses_tf32


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
        self.drew_on: set[str] = set()  # device types whose generators a seeded op drew from

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        output = func(*args, **(kwargs or {}))
        if func is conv2d_op:
            self.calls.append(_conv2d_call(self.names[-1], args))
        elif func is conv_transpose2d_op:
            self.calls.append(_transposed_call(self.names[-1], args, output))
        elif torch.Tag.nondeterministic_seeded in func.tags:  # rand, uniform_, dropout, ...
            results = output if isinstance(output, (tuple, list)) else (output,)
            self.drew_on |= {t.device.type for t in results if isinstance(t, torch.Tensor)}
        return output


def _meta_like(tensor: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """A meta tensor of `tensor`'s shape in the layout the model runs in: 4-D tensors channels_last
    or contiguous, as model.to(memory_format=...) leaves them; others contiguous."""
    layout = torch.channels_last if channels_last and tensor.dim() == 4 else torch.contiguous_format
    meta = torch.empty(tensor.shape, dtype=tensor.dtype, device="meta", memory_format=layout)
    return meta.requires_grad_(tensor.requires_grad)


def _held_tensors(module: torch.nn.Module) -> list[torch.Tensor]:
    """A module's own parameters, buffers and tensor attributes (not its children's)."""
    held = [*module._parameters.values(), *module._buffers.values(), *vars(module).values()]
    return [value for value in held if isinstance(value, torch.Tensor)]


def _meta_twins(model: torch.nn.Module, channels_last: bool) -> dict[int, torch.Tensor]:
    """deepcopy's memo for a meta copy: each parameter, buffer and tensor attribute of the model's
    modules (legacy weight_norm's computed `weight`, which deepcopy refuses, a mask kept as a plain
    attribute) mapped to a meta tensor of its shape, a parameter to a parameter."""
    twins = {}
    for module in model.modules():
        for tensor in _held_tensors(module):
            if id(tensor) not in twins:
                meta = _meta_like(tensor, channels_last)
                is_parameter = isinstance(tensor, torch.nn.Parameter)
                twins[id(tensor)] = torch.nn.Parameter(meta, tensor.requires_grad) if is_parameter else meta
    return twins


def _meta_copy(model: torch.nn.Module, channels_last: bool) -> torch.nn.Module | None:
    """A copy of `model` holding meta tensors only (no data is copied), or None where copying fails
    or leaves a real tensor behind (a `__deepcopy__` that copies data)."""
    try:
        twin = copy.deepcopy(model, _meta_twins(model, channels_last))
    except Exception:  # a lock, a process group, an open file ...
        return None
    for module in twin.modules():
        if any(tensor.device.type != "meta" for tensor in _held_tensors(module)):
            return None
    return twin


@contextlib.contextmanager
def _random_states_kept(recorder: _OpRecorder):
    """The global generators a forward draws from as they were before it: a forward that drops
    layers at random (LayerDrop's torch.rand([])) would otherwise make a seeded run's later draws
    depend on having tuned. torch's CPU and CUDA generators are restored only where this thread's
    forward drew from them (`recorder` sees its seeded ops), so another thread's draws meanwhile
    stand; Python's and numpy's (if numpy.random is in use) cannot be told apart by thread and are
    restored whenever the forward ran (README says so)."""
    saved = [(random.setstate, random.getstate())]
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        saved.append((numpy_random.set_state, numpy_random.get_state()))
    torch_cpu = torch.get_rng_state()
    # Reading a CUDA generator's state is refused while a stream captures a graph.
    cuda_kept = torch.cuda.is_initialized() and not torch.cuda.is_current_stream_capturing()
    torch_cuda = torch.cuda.get_rng_state_all() if cuda_kept else None
    try:
        yield
    finally:
        for restore, state in saved:
            restore(state)
        if "cpu" in recorder.drew_on:
            torch.set_rng_state(torch_cpu)
        if "cuda" in recorder.drew_on and torch_cuda is not None:
            torch.cuda.set_rng_state_all(torch_cuda)


def _record(model: torch.nn.Module, input_shape, channels_last: bool, run) -> list[ConvCall]:
    """The calls of `run(model, x)` on a meta input of one image's shape, each named by the
    innermost module running (hooks added for the call) and computed as triton-conv's modules do
    (torch's classes swapped for the call)."""
    shape = tuple(input_shape)
    shape = (1, *(shape[1:] if len(shape) == 4 else shape))
    names = {module: name for name, module in model.named_modules()}
    names[model] = names[model] or type(model).__name__
    stack: list[str] = []

    def enter(module, args):
        stack.append(names[module])

    def leave(module, args, output):  # returns None: the output stays the module's
        stack.pop()

    state = [*model.parameters(), *model.buffers()]
    dtype = next((t.dtype for t in state if t.is_floating_point()), torch.get_default_dtype())
    x = _meta_like(torch.empty(shape, dtype=dtype, device="meta"), channels_last)
    swapped = {module: type(module) for module in names if type(module) in CONVERSIONS}
    recorder = _OpRecorder(stack)
    handles = []
    try:  # everything added to the model inside: a shape no tensor can have left the hooks behind
        for module in names:
            handles += [
                module.register_forward_pre_hook(enter),
                module.register_forward_hook(leave, always_call=True),
            ]
        for module in swapped:  # torch's class -> triton-conv's, whose forward calls the ops
            module.__class__ = CONVERSIONS[type(module)]
        with torch.enable_grad(), recorder, _random_states_kept(recorder):
            run(model, x)
    finally:
        for module, kind in swapped.items():
            module.__class__ = kind
        for handle in handles:
            handle.remove()
    return [call for call in recorder.calls if call is not None]


_LIVE = threading.Lock()  # one forward at a time on a live model: each restores what it swapped


class CallFinder:
    """conv_problems for one model and layout, at any number of input shapes: on one meta copy of
    the model, else (the module docstring) on the model itself."""

    def __init__(self, model: torch.nn.Module, channels_last: bool = True):
        self.model, self.channels_last = model, channels_last
        self.meta_model = _meta_copy(model, channels_last)

    def calls(self, input_shape) -> list[ConvCall]:
        if self.meta_model is not None:
            try:
                return _record(self.meta_model, input_shape, self.channels_last, lambda m, x: m(x))
            except Exception:  # e.g. a forward that reads the original's tensors: read it live
                self.meta_model = None
        tensors = {
            name: _meta_like(tensor, self.channels_last)
            for name, tensor in (*self.model.named_parameters(), *self.model.named_buffers())
        }
        with _LIVE, _attributes_on_meta(self.model, self.channels_last):
            return _record(self.model, input_shape, self.channels_last,
                           lambda m, x: torch.func.functional_call(m, tensors, (x,)))  # fmt: skip


@contextlib.contextmanager
def _attributes_on_meta(model: torch.nn.Module, channels_last: bool):
    """Each module's plain tensor attributes (not parameters or buffers, which functional_call
    swaps) as meta tensors for the length of a live forward, then the originals again: a forward
    that computes with one (`y * self.scale`) would otherwise mix meta and real tensors."""
    twins = _meta_twins(model, channels_last)  # the meta copy's twins: one per tensor, shared as it is
    swapped = [
        (module, name, value)
        for module in model.modules()
        for name, value in list(vars(module).items())
        if isinstance(value, torch.Tensor)
    ]
    try:
        for module, name, value in swapped:
            module.__dict__[name] = twins[id(value)]
        yield
    finally:
        for module, name, value in swapped:
            module.__dict__[name] = value


def conv_problems(model: torch.nn.Module, input_shape, *, channels_last: bool = True) -> list[ConvCall]:
    """Each convolution call of one forward of `model` (the module docstring), in order, as ConvCall
    (name, problem at batch 1, kernel passes with their layout flags, transposed, precisions).

    `input_shape`: one image's (C, H, W), or (C, L) for a 1-D model; (N, C, H, W) has N ignored.
    `channels_last`: the model's 4-D parameters and 4-D input are channels_last at run time (as
    model.to(memory_format=torch.channels_last) and x.to(memory_format=...) make them), else
    contiguous; the layouts inside the model follow from those, as on the GPU. Parameters' and
    buffers' requires_grad say which gradients a training step asks for. The model's
    parameters, buffers, classes and hooks are left as they were, and so are the global random
    generators (the forward's draws are undone). The forward and its hooks (the model's and global
    ones) do run, on meta tensors, on a copy of the model where one can be made: a hook that keeps
    its output keeps a meta tensor, one that reads values (.item()) makes the model unreadable
    here, and a forward read live (the module docstring) sets its attributes on the model itself.
    """
    return CallFinder(model, channels_last).calls(input_shape)
