"""The callables a campaign times besides benchmarking's: one pass launched with a chosen config, and
for each item its inputs, its float64 reference and triton-conv's or cuDNN's op.

`launch_with_config` makes exactly the launch that triton-conv's custom op makes for the same
tensors (triton_conv.autograd: fprop without bias, dgrad's output in the input's layout, wgrad's in the
weight's; a transposed convolution's forward is its view's dgrad with the bias, its input gradient
the view's fprop, its weight gradient the view's wgrad with x in dy's place), with `config` in place
of the tuned choice. So a candidate's compiled kernel is the very binary the op runs once that
candidate is its winner, and the compile step can compile both at once.

Tensors: a conv2d problem's are benchmarking.make_inputs's (x, w, dy); a transposed convolution's
are its layer's (benchmarking_transposed.make_inputs: x, w, dy and the bias b), whose x is the
view's output and dy the view's input. All channels_last, as the campaign times.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .. import benchmarking, benchmarking_transposed
from ..configs import KernelConfig
from ..launchers import pass_launch
from ..passes import pass_channels_last
from ..problem import TRANSPOSED_PASSES, ConvProblem
from ..tuning_keys import tuning_key


def make_inputs(problem: ConvProblem, dtype: torch.dtype, device, transposed: bool = False) -> dict:
    """Fresh random channels_last tensors of one item (the module docstring)."""
    module = benchmarking_transposed if transposed else benchmarking
    return module.make_inputs(problem, dtype, True, device)


def _kernel_tensors(pass_name: str, tensors: dict, transposed: bool) -> tuple[str, dict]:
    """(the kernel pass, the tensors in its conv2d view's roles: x, w, dy) of one pass."""
    if not transposed:
        return pass_name, tensors
    return TRANSPOSED_PASSES[pass_name], {"x": tensors["dy"], "w": tensors["w"], "dy": tensors["x"]}


def op_channels_last(pass_name: str, tensors: dict, transposed: bool = False) -> bool:
    """The channels_last flag the custom op passes for this pass (and keys its tuning on), as
    triton_conv.autograd and passes.py compute it. A tensor whose two layouts coincide (a 1x1 weight) counts
    as contiguous."""
    return pass_channels_last(pass_name, tensors["x"], tensors["w"], tensors["dy"], transposed)


def op_tuning_key(problem: ConvProblem, pass_name: str, tensors: dict, transposed: bool = False) -> str:
    kernel = TRANSPOSED_PASSES[pass_name] if transposed else pass_name
    flag = op_channels_last(pass_name, tensors, transposed)
    return tuning_key(problem, kernel, tensors["w"].dtype, flag)


def launch_with_config(
    pass_name: str, problem: ConvProblem, tensors: dict, config: KernelConfig, *, transposed: bool = False
) -> Callable[[], torch.Tensor]:
    """The custom op's launch of `pass_name` on `tensors` (make_inputs) with `config`; returns the
    pass's result (y, dx or dw; a transposed convolution's y, dx or dw)."""
    kernel, view = _kernel_tensors(pass_name, tensors, transposed)
    return pass_launch(
        kernel, problem, config, x=view["x"], weight=view["w"], dy=view["dy"],
        channels_last=op_channels_last(pass_name, tensors, transposed),
        bias=tensors["b"] if transposed and kernel == "dgrad" else None,
    )  # fmt: skip


def reference_result(pass_name: str, problem: ConvProblem, tensors: dict, transposed: bool = False):
    """torch's result of the pass in float64, to check any implementation against."""
    module = benchmarking_transposed if transposed else benchmarking
    return module.reference_result(pass_name, problem, tensors)


def pass_function(
    impl: str, pass_name: str, problem: ConvProblem, tensors: dict, *, on_gpu: bool, transposed: bool = False
) -> Callable[[], object]:
    """One implementation of the pass: benchmarking.pass_function, or for a transposed convolution
    triton-conv's ops or cuDNN's (benchmarking_transposed)."""
    if not transposed:
        return benchmarking.pass_function(impl, pass_name, problem, tensors, on_gpu=on_gpu)
    runners = {
        "triton-conv": benchmarking_transposed.triton_pass,
        "cudnn": benchmarking_transposed.torch_pass,
    }
    return runners[impl](pass_name, problem, tensors)


def pass_binder(
    impl: str, pass_name: str, problem: ConvProblem, *, on_gpu: bool, transposed: bool = False
) -> Callable[[dict], Callable[[], object]]:
    """pass_function as bind(tensors) -> call (input sets in turn: timers.in_turn); the Inductor peer
    compiles once for every set (benchmarking.pass_binder)."""
    if not transposed:
        return benchmarking.pass_binder(impl, pass_name, problem, on_gpu=on_gpu)
    return lambda tensors: pass_function(impl, pass_name, problem, tensors, on_gpu=on_gpu, transposed=True)
