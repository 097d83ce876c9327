"""triton_conv.conv2d, conv1d and conv_transpose2d: torch.nn.functional's signatures and semantics on
Triton kernels.

Every argument is checked here, before anything launches, as torch checks it (arguments.py,
ConvProblem.from_shapes / from_transposed); the caller's tensors are only read. conv1d runs conv2d
on height-one views of its tensors; conv_transpose2d runs the input-gradient kernel (triton_conv.autograd).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch.overrides import handle_torch_function, has_torch_function_variadic

from .arguments import (
    ConvArgumentError,
    ConvTypeError,
    check_bias,
    check_tensors,
    inference_tensor_error,
    int_tuple,
)
from .autograd import conv2d_op, conv_transpose2d_op
from .memo import BoundedMemo
from .problem import ConvProblem
from .runtime import exporting_to_onnx, runs_triton


def validate(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1) -> ConvProblem:
    """Check every argument of conv2d as torch does and return the problem (with a batch dimension).
    Raises ConvArgumentError / ConvTypeError (RuntimeError and ValueError / TypeError)."""
    shape = _batched_shape(input, weight, bias, 4)
    problem = _problem(shape, weight.shape, stride, padding, dilation, groups)
    check_bias(bias, weight.shape[0], "weight's output channels")
    return problem


def _batched_shape(input, weight, bias, rank: int):
    """Check the tensors as torch does (the weight has `rank` dimensions, the input `rank` or, with
    no batch, one fewer) and return the input's shape with a batch dimension."""
    check_tensors(input, weight, bias, (rank - 1, rank), rank)
    return input.shape if input.dim() == rank else (1, *input.shape)


def _plain(value):
    """`value` as a key for _problem's memo: an int, a str, or a tuple of the ints of a tuple or
    list; None for anything else (a bool, which equals an int but is an error, a tensor, ...)."""
    kind = type(value)
    if kind is int or kind is str:
        return value
    if (kind is tuple or kind is list) and all(type(v) is int for v in value):
        return tuple(value)
    return None


_PROBLEMS = BoundedMemo()


def _memoised(kind: str, build, *arguments) -> ConvProblem:
    """build(*arguments), memoised under `kind` on arguments that hash unambiguously (only valid
    problems are remembered: an invalid one raises anew on every call). The key holds plain values
    only: torch.compile traces this and cannot hash a function."""
    geometry = tuple(map(_plain, arguments[2:]))
    shapes = (tuple(arguments[0]), tuple(arguments[1]))
    # While torch.compile or torch.export traces, a lookup keyed on the sizes would pin each to a
    # constant (a recompile per batch size) or fail to hash a SymInt: check anew instead.
    traced = torch.compiler.is_compiling() or not all(type(d) is int for shape in shapes for d in shape)
    if None in geometry or traced:
        return build(*arguments)
    return _PROBLEMS.get((kind, *shapes, *geometry), lambda: build(*arguments))


def _problem(shape, weight_shape, stride, padding, dilation, groups) -> ConvProblem:
    """ConvProblem.from_shapes, memoised. Not canonical: the op is given the caller's geometry and
    canonicalizes each call's sizes itself, so that torch.jit.trace, which records the op's
    arguments as constants, records the caller's stride, not one capped to the example's size."""
    geometry = (stride, padding, dilation, groups)
    return _memoised("conv2d", ConvProblem.from_shapes, shape, weight_shape, *geometry)


def autocast_arguments(input, weight, bias):
    """Under torch.autocast, cast as torch's own conv2d is cast: it is on autocast's lower-precision
    list on CUDA and on the CPU, which casts every floating-point tensor on the autocast device to
    the autocast dtype, except float64 (left alone, so a float64 convolution stays float64)."""
    if not isinstance(input, torch.Tensor) or input.device.type not in ("cuda", "cpu"):
        return input, weight, bias
    device_type = input.device.type
    if not torch.is_autocast_enabled(device_type):
        return input, weight, bias
    dtype = torch.get_autocast_dtype(device_type)

    def cast(tensor):
        eligible = (
            isinstance(tensor, torch.Tensor)
            and tensor.is_floating_point()
            and tensor.dtype != torch.float64
            and tensor.device.type == device_type
        )
        return tensor.to(dtype) if eligible else tensor

    return cast(input), cast(weight), cast(bias)


def conv2d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
) -> torch.Tensor:
    """Drop-in torch.nn.functional.conv2d computed by triton-conv's implicit-GEMM kernels,
    differentiable in input, weight and bias in reverse and forward mode, to any order (the
    derivatives of each pass are the passes: see triton_conv.autograd).

    CUDA tensors, and CPU tensors under TRITON_INTERPRET=1, run the Triton kernels; other CPU
    tensors fall back to torch's conv2d with a one-time warning.
    """
    geometry = (stride, padding, dilation, groups)
    return _entry(conv2d, validate, F.conv2d, _run_conv2d, input, weight, bias, *geometry)


def _entry(public, check, torch_conv, run, input, weight, bias, *geometry) -> torch.Tensor:
    """What conv2d, conv1d and conv_transpose2d (`public`) do alike: hand a call on tensor-likes
    with __torch_function__ (torch.fx's Proxy, subclasses, TorchFunctionModes) to that protocol as
    torch's own functions do; cast as autocast casts torch's own, check every argument (`check`:
    validate, validate1d or validate_transposed), fall back to `torch_conv` where the Triton
    kernels cannot run or while torch.onnx exports (runtime.exporting_to_onnx), else run(input
    with a batch dimension, weight, bias, problem) and drop the batch dimension again for an
    unbatched input."""
    if has_torch_function_variadic(input, weight, bias):
        return handle_torch_function(public, (input, weight, bias), input, weight, bias, *geometry)
    input, weight, bias = autocast_arguments(input, weight, bias)
    if torch.jit.is_tracing():  # the checks read sizes that the trace records as tensors
        problem = _checked_quietly(check, input, weight, bias, *geometry)
    else:
        problem = check(input, weight, bias, *geometry)
    if exporting_to_onnx() or not runs_triton(input):
        return torch_conv(input, weight, bias, *geometry)
    if _padded_by_a_copy(geometry[1], problem) and (_recorded(input, weight, bias) or torch.jit.is_tracing()):
        # torch pads an even kernel's 'same' by a zero-padded copy of the input, which its autograd
        # saves: the caller may then change its input in place before backward. The kernels pad
        # in their loads, so a copy is saved here instead, where autograd will keep one. Traced,
        # always: torch.jit.trace checks its graph by tracing again without grad, and the two
        # graphs must agree.
        input = input.clone()
    batched = input.dim() == weight.dim()
    y = run(input if batched else input.unsqueeze(0), weight, bias, problem)
    return y if batched else y.squeeze(0)


def _recorded(*tensors) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _padded_by_a_copy(padding, problem: ConvProblem) -> bool:
    """Whether torch runs this call on a padded copy of its input: 'same' with uneven pads."""
    top, left, bottom, right = problem.pads
    return isinstance(padding, str) and padding == "same" and (top != bottom or left != right)


def _checked_quietly(check, *arguments) -> ConvProblem:
    """check(*arguments) under torch.jit.trace with the tracer paused: traced, the sizes the checks
    read are tensors, whose conversion to ints the trace would warn makes constants; only the checks
    use those ints, and the traced op checks the sizes of every later call again itself. (Paused,
    not silenced by warnings.catch_warnings: leaving that resets the record of warnings shown for
    the whole process, and it swaps the filters of every thread.) One of them does become a
    constant, and that is said: the pads that padding='same' makes of the weight's size."""
    tracing = torch._C._get_tracing_state()
    torch._C._set_tracing_state(None)
    try:
        problem = check(*arguments)
    finally:
        torch._C._set_tracing_state(tracing)
    if arguments[4] == "same" and any(problem.pads):  # conv2d's and conv1d's (transposed: no strings)
        warnings.warn(
            f"triton_conv: padding='same' is traced as this call's pads {problem.pads} (top, left, "
            "bottom, right), from its weight's size: a traced call with a weight of another size gets these "
            "pads, where torch's trace keeps 'same'",
            torch.jit.TracerWarning,
            stacklevel=4,
        )
    return problem


def _run_conv2d(x, weight, bias, problem: ConvProblem) -> torch.Tensor:
    return conv2d_op(x, weight, bias, problem.stride, problem.pads, problem.dilation, problem.groups)


# --- conv1d: conv2d of height one -----------------------------------------------------------------
def validate1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1) -> ConvProblem:
    """Check every argument of conv1d as torch does; the problem is its conv2d of height one (with a
    batch dimension). Errors give conv1d's values, not its conv2d view's."""
    shape = _batched_shape(input, weight, bias, 3)
    (stride,), (dilation,) = int_tuple(stride, "stride", 1), int_tuple(dilation, "dilation", 1)
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise ConvArgumentError(f"padding must be 'same', 'valid' or an int, got {padding!r}")
        if padding == "same" and stride != 1:
            raise ConvArgumentError(f"padding='same' needs stride 1, got stride={stride}")
    else:
        (padding,) = int_tuple(padding, "padding", 1)
    for name, value, least in (("stride", stride, 1), ("dilation", dilation, 1), ("padding", padding, 0)):
        if not isinstance(value, str) and value < least:
            raise ConvArgumentError(f"{name} must be {'positive' if least else 'non-negative'}, got {value}")
    view_input, view_weight = (shape[0], shape[1], 1, shape[2]), (*weight.shape[:2], 1, weight.shape[2])
    try:
        problem = _problem(
            view_input, view_weight, (1, stride), padding if isinstance(padding, str) else (0, padding),
            (1, dilation), groups,
        )  # fmt: skip
    except ConvArgumentError as error:  # a shape error, given in the view's sizes: say which they are
        raise ConvArgumentError(
            f"{error} (conv1d's input {tuple(input.shape)} and weight {tuple(weight.shape)}, seen as "
            f"conv2d's of height one: {view_input} and {view_weight})"
        ) from None
    check_bias(bias, weight.shape[0], "weight's output channels")
    return problem


def conv1d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
) -> torch.Tensor:
    """Drop-in torch.nn.functional.conv1d: conv2d's kernels and derivatives on (N, C, 1, L) views.
    The input is made contiguous first, as torch's conv1d does on every backend but mkldnn's, so the
    output's memory format is torch's: (N, K, L) contiguous, channels innermost only where the
    weight's are (and not in float64 on a GPU)."""
    geometry = (stride, padding, dilation, groups)
    return _entry(conv1d, validate1d, F.conv1d, _run_conv1d, input, weight, bias, *geometry)


def _contiguous_strides(shape) -> tuple[int, ...]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


def _run_conv1d(x, weight, bias, problem: ConvProblem) -> torch.Tensor:
    # torch copies a permuted (N, L, C).transpose(1, 2) input too, so that its output is (N, K, L)
    # contiguous: code written for F.conv1d may .view() it
    # A statement of its own: inline, a trace names the result after the input where the example is
    # already contiguous, and jit.trace's check, which traces a dense copy of a sliced example again,
    # finds the two graphs differ.
    caller, x = x, x.contiguous()
    if x is not caller and caller.is_inference() and _recorded(caller, weight, bias):
        # torch's conv1d saves the caller's tensor, and refuses an inference tensor before computing
        raise inference_tensor_error("conv1d", "input")
    if problem.pad_left != problem.pad_right and x.stride() != _contiguous_strides(x.shape):
        # An even kernel's 'same': torch convolves a padded copy, laid out (N, C, L) contiguous
        # whatever strides the input's size-1 dimensions had ((7, 1, 1) for one channel: its output
        # would have been channels-innermost). The same elements with those strides, no copy. Only
        # then: the flat view's backward makes the input gradient contiguous, where torch's follows
        # a channels-innermost weight.
        x = x.reshape(-1).view(x.shape)
    y = _run_conv2d(x.unsqueeze(2), weight.unsqueeze(2), bias, problem)
    if x is not caller and y.grad_fn is not None and not torch.compiler.is_compiling():
        _check_version_at_backward(y.grad_fn, caller)
    if torch.jit.is_tracing():  # the trace would record _unsafe_view's sizes as constants
        return y.squeeze(2)
    # Not a view, as torch's conv1d output is not: a view made under no_grad cannot be modified in
    # place where grad mode is on, nor detach_()ed. _unsafe_view is view's data, without the link
    # (and strides of its own for a dimension of size 1, which addresses nothing).
    return torch.ops.aten._unsafe_view(y, (y.shape[0], y.shape[1], y.shape[3]))


def _check_version_at_backward(node, caller: torch.Tensor) -> None:
    """torch makes conv1d's input contiguous below autograd and saves the caller's tensor, so a
    change of it in place before backward raises there; ours saves the contiguous copy, which no
    change of the caller's reaches. The check torch's saved tensor makes, on the caller's tensor,
    when the convolution's node runs (every time it runs: a second backward, a double backward)."""
    version = caller._version

    def check(grad_outputs):
        if caller._version != version:
            raise RuntimeError(
                "one of the variables needed for gradient computation has been modified by an "
                f"inplace operation: conv1d's input {list(caller.shape)} is at version "
                f"{caller._version}; expected version {version} instead"
            )

    node.register_prehook(check)


# --- conv_transpose2d: the input-gradient kernel, with a bias -------------------------------------
def validate_transposed(
    input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1
) -> ConvProblem:
    """Check every argument of conv_transpose2d as torch does and return its conv2d view (with a
    batch dimension; not canonical: its arguments are those the caller gave)."""
    shape = _batched_shape(input, weight, bias, 4)
    if isinstance(padding, str):
        raise ConvTypeError(
            f"conv_transpose2d's padding must be an int or a pair, got the string {padding!r}"
        )
    problem = _memoised(
        "transposed",
        ConvProblem.from_transposed,
        shape,
        weight.shape,
        stride,
        padding,
        output_padding,
        dilation,
        groups,
    )
    check_bias(bias, problem.in_channels, "weight's output channels x groups")
    return problem


def conv_transpose2d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride=1,
    padding=0,
    output_padding=0,
    groups: int = 1,
    dilation=1,
) -> torch.Tensor:
    """Drop-in torch.nn.functional.conv_transpose2d (the same argument order: groups before dilation):
    the input-gradient kernel of its conv2d view with the bias in its epilogue; its input gradient is
    conv2d's forward kernel, its weight gradient the weight-gradient kernel with x and dy exchanged.
    The output follows the input's (or weight's) memory format, as cuDNN's does."""
    geometry = (stride, padding, output_padding, groups, dilation)
    check, run = validate_transposed, _run_transposed
    return _entry(conv_transpose2d, check, F.conv_transpose2d, run, input, weight, bias, *geometry)


def _run_transposed(x, weight, bias, problem: ConvProblem) -> torch.Tensor:
    padding = (problem.pad_top, problem.pad_left)
    output_padding = (problem.pad_top - problem.pad_bottom, problem.pad_left - problem.pad_right)
    return conv_transpose2d_op(
        x, weight, bias, problem.stride, padding, output_padding, problem.groups, problem.dilation
    )
