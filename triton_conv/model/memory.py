"""Activation and weight memory, and the largest batch that fits a budget.

Memory per image (activation_bytes_per_image; weights, gradients and workspaces are apart):
  training: each convolution's output, once per convolution (count times), at the element size:
    the tensors autograd keeps for the backward pass (the next layer's input, which its wgrad reads).
    A lower bound: eager BatchNorm and ReLU keep their own copies, the input image is not counted.
  inference: the largest input + output of one convolution, the two activations live at once when
    each layer's output replaces its input (residual branches would keep a third alive: not counted).
  max_batch_for_memory: floor((budget - fixed) / per image), fixed = the weights (inference) or
    weights and their gradients (training); optimizer state is the caller's to subtract.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from ..problem import ConvProblem
from .arguments import check_count, check_finite, check_flag, check_layers
from .resources import dtype_kind


def _elements(problem: ConvProblem, transposed: bool = False) -> tuple[int, int, int]:
    """Input, weight and output elements of one image (batch 1); a transposed layer's problem is its
    conv2d view, whose output is the layer's input and whose input is the layer's output."""
    one = problem.with_batch(1)
    shapes = (one.output_shape, one.weight_shape, one.input_shape) if transposed else (
        one.input_shape, one.weight_shape, one.output_shape)  # fmt: skip
    return tuple(math.prod(s) for s in shapes)


def _layer_elements(layers) -> list[tuple[tuple[int, int, int], int]]:
    """((input, weight, output) elements per image, count) of each layer (transposed ones too)."""
    return [(_elements(problem, transposed), count) for _, problem, count, transposed in check_layers(layers)]


def activation_bytes_per_image(
    layers: Iterable[tuple[str, ConvProblem, int]], dtype="fp16", training: bool = True
) -> int:
    """Training: Σ count · output (kept for backward); inference: max over layers of input + output."""
    _, size = dtype_kind(dtype)
    elements = _layer_elements(layers)
    if check_flag(training, "training"):
        return size * sum(count * e[2] for e, count in elements)
    return size * max((e[0] + e[2] for e, _ in elements), default=0)


def activation_bytes(layers, batch: int, dtype="fp16", training: bool = True) -> int:
    """Activation memory of a batch: linear in N (batch x per image)."""
    return check_count(batch, "batch") * activation_bytes_per_image(layers, dtype, training)


def weight_bytes(layers: Iterable[tuple[str, ConvProblem, int]], dtype="fp16") -> int:
    _, size = dtype_kind(dtype)
    return size * sum(count * e[1] for e, count in _layer_elements(layers))


def max_batch_for_memory(
    layers,
    budget_bytes: int,
    training: bool = True,
    dtype="fp16",
    *,
    include_weights: bool = True,
) -> int:
    """The largest N whose activations (and weights, and in training their gradients) fit the budget
    (bytes, finite and at least 0; a fraction of a byte holds nothing); 0 when not even one image fits."""
    budget = check_finite(budget_bytes, "budget_bytes", least=0)
    include_weights = check_flag(include_weights, "include_weights")
    budget_bytes = budget_bytes if type(budget_bytes) is int else math.floor(budget)
    layers = list(layers)
    per_image = activation_bytes_per_image(layers, dtype, training)
    fixed = weight_bytes(layers, dtype) * (2 if training else 1) if include_weights else 0
    if per_image <= 0:
        raise ValueError("the layers have no activations")
    return max(0, (budget_bytes - fixed) // per_image)
