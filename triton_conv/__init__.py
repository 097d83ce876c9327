"""triton-conv: implicit-GEMM conv2d kernels in Triton, with the batch folded into the GEMM's M."""

from ._version import __version__
from .arguments import ConvArgumentError, ConvTypeError
from .autograd import Conv2dFunction
from .configs import KernelConfig
from .functional import conv2d, conv2d_with_config
from .nn import Conv2d, convert_model
from .problem import ConvProblem, GemmShape
from .tuning import tune_model

__all__ = [
    "Conv2d",
    "Conv2dFunction",
    "ConvArgumentError",
    "ConvProblem",
    "ConvTypeError",
    "GemmShape",
    "KernelConfig",
    "conv2d",
    "conv2d_with_config",
    "convert_model",
    "tune_model",
    "__version__",
]
