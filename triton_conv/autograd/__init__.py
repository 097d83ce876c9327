"""The convolution as differentiable PyTorch ops: one torch.library op per pass.

    triton_conv::conv2d              y  = conv(x, w) + b                      (fprop)
    triton_conv::conv2d_input_grad   dx = conv_input(dy, w)                   (dgrad)
    triton_conv::conv2d_weight_grad  dw, db = conv_weight(dy, x), sum(dy)     (wgrad)
    triton_conv::conv_transpose2d    y  = conv_input(x, w) + b                (dgrad, bias epilogue)

Each op has a real implementation (the Triton passes), a fake one (shapes only, for torch.compile)
and, at the dispatcher's Autograd key, an autograd.Function with a backward and a jvp. All three
passes are bilinear, so the derivatives of each are again the three passes: backward and forward-mode
AD, double backward (gradient penalties), torch.func.grad/vjp/jvp, gradcheck and gradgradcheck all
run on this package's kernels, and torch.compile still sees one opaque op per pass.

The transposed convolution is the input-gradient pass of its conv2d view (ConvProblem.from_transposed)
applied to x, with a bias: its derivatives are the input-gradient pass's (dx = fprop of dy, dw = wgrad
with x in dy's place), on that view's geometry, whose bottom/right padding is negative (a crop) when
output_padding exceeds padding: the ops accept such a crop. conv1d is conv2d on height-one views.

The Autograd-key registration is done by hand: torch.library.custom_op's register_autograd (torch
2.11 to 2.13) has no forward-mode formula, and its generated autograd.Function fails under
torch.func.grad. The kernel here enters the autograd.Function only when a gradient can be asked
for, and otherwise runs the op below autograd, as custom_op does. Padding reaches the ops as four
ints (top, left, bottom, right): strings are resolved before. The ops check their arguments with
the same checks as triton_conv.conv2d (Conv2dFunction is exported and may be called directly).

Under torch.func.vmap each op has a batching rule (batching.py) that folds the vmapped dimension
into one problem and launches once, instead of torch's loop over the samples.

The parts: ops.py declares the ops' schemas; checks.py checks their arguments; implementations.py
runs the passes (and the fake, shape-only versions); functions.py holds the autograd.Functions;
batching.py the vmap rules; registration.py binds them all to each op at the dispatcher; flops.py
gives torch.utils.flop_counter torch's FLOP counts for them.
"""

from . import flops, registration  # noqa: F401 (binds the ops' kernels and FLOP counts)
from .checks import checked_problem, checked_transposed_problem, transposed_geometry
from .functions import (
    Conv2dFunction,
    ConvTranspose2dFunction,
    InputGradFunction,
    WeightGradFunction,
)
from .ops import conv2d_op, conv_transpose2d_op, input_grad_op, weight_grad_op

__all__ = [
    "Conv2dFunction",
    "ConvTranspose2dFunction",
    "InputGradFunction",
    "WeightGradFunction",
    "checked_problem",
    "checked_transposed_problem",
    "conv2d_op",
    "conv_transpose2d_op",
    "input_grad_op",
    "transposed_geometry",
    "weight_grad_op",
]
