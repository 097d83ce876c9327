"""triton-conv: implicit-GEMM conv2d kernels in Triton, with the batch folded into the GEMM's M."""

from .configs import KernelConfig
from .functional import conv2d, conv2d_with_config
from .problem import ConvProblem, GemmShape

__version__ = "0.1.0"

__all__ = ["ConvProblem", "GemmShape", "KernelConfig", "conv2d", "conv2d_with_config", "__version__"]
