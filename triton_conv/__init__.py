"""triton-conv: implicit-GEMM convolution kernels in Triton (conv2d, conv1d, conv_transpose2d), with the
batch folded into the GEMM's M.

Functions conv2d, conv1d and conv_transpose2d (as torch.nn.functional's); modules Conv2d, Conv1d and
ConvTranspose2d (subclasses of torch's) and convert_model for whole models; tune_model; ConvProblem,
the geometry and its GEMM views. The model of tiles, waves and memory is triton_conv.model; the
command line is `triton-conv` (cli.py)."""

from . import model  # the model of tiles, waves and memory: triton_conv.model after `import triton_conv`
from ._version import __version__
from .arguments import ConvArgumentError, ConvDtypeError, ConvTypeError
from .autograd import Conv2dFunction, ConvTranspose2dFunction
from .configs import KernelConfig
from .convert import convert_model
from .functional import conv1d, conv2d, conv_transpose2d
from .fx_tracing import symbolic_trace
from .model_tuning import tune_model
from .nn import Conv1d, Conv2d, ConvTranspose2d
from .problem import ConvProblem, GemmShape
from .with_config import conv2d_with_config

__all__ = [
    "Conv1d",
    "Conv2d",
    "Conv2dFunction",
    "ConvArgumentError",
    "ConvDtypeError",
    "ConvProblem",
    "ConvTranspose2d",
    "ConvTranspose2dFunction",
    "ConvTypeError",
    "GemmShape",
    "KernelConfig",
    "conv1d",
    "conv2d",
    "conv2d_with_config",
    "conv_transpose2d",
    "convert_model",
    "model",
    "symbolic_trace",
    "tune_model",
    "__version__",
]
