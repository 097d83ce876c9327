"""The four torch.library ops' schemas, and the op handles the rest of the package calls. Their
implementations and autograd formulas are registered by registration.py (imported by the package's
__init__, so that importing any of triton_conv.autograd registers them all)."""

from __future__ import annotations

import torch

LIBRARY = torch.library.Library("triton_conv", "DEF")


def _declare(schema: str):
    name = schema.split("(", 1)[0]
    LIBRARY.define(schema, tags=(torch.Tag.pt2_compliant_tag,))
    return getattr(torch.ops.triton_conv, name).default


_GEOMETRY = "SymInt[] stride, SymInt[] padding, SymInt[] dilation, SymInt groups"
conv2d_op = _declare(f"conv2d(Tensor input, Tensor weight, Tensor? bias, {_GEOMETRY}) -> Tensor")
input_grad_op = _declare(
    f"conv2d_input_grad(Tensor grad_output, Tensor input, Tensor weight, {_GEOMETRY}) -> Tensor"
)
weight_grad_op = _declare(
    f"conv2d_weight_grad(Tensor grad_output, Tensor input, Tensor weight, {_GEOMETRY}, bool with_bias)"
    " -> (Tensor, Tensor)"
)
conv_transpose2d_op = _declare(
    "conv_transpose2d(Tensor input, Tensor weight, Tensor? bias, SymInt[] stride, SymInt[] padding, "
    "SymInt[] output_padding, SymInt groups, SymInt[] dilation) -> Tensor"
)
