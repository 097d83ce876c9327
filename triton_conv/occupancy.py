"""The model's former single module, kept so that `from triton_conv.occupancy import predict` still
works; the model now lives in the package triton_conv.model (one module per part: resources, tiles,
roofline, choice, terms, network, calibration, memory). New code imports triton_conv.model."""

from .model import *  # noqa: F403
from .model import __all__  # noqa: F401
