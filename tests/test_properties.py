"""Property tests: random geometries through the forward kernel against the float64 reference."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import triton_conv
from triton_conv import KernelConfig
from triton_conv.problem import ConvProblem

from .reference import bound, reference_conv2d, rel_error


@st.composite
def geometries(draw):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    in_per_group = draw(st.integers(1, 5))
    out_per_group = draw(st.integers(1, 5))
    kernel_h, kernel_w = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = draw(
        st.one_of(
            st.tuples(st.integers(0, 3), st.integers(0, 3)),
            st.just("valid"),
            st.just("same") if stride == (1, 1) else st.just(0),
        )
    )
    extent_h = dilation[0] * (kernel_h - 1) + 1
    extent_w = dilation[1] * (kernel_w - 1) + 1
    height = draw(st.integers(extent_h, extent_h + 7))
    width = draw(st.integers(extent_w, extent_w + 7))
    batch = draw(st.integers(1, 3))
    config = KernelConfig(
        draw(st.sampled_from([16, 32, 64])),
        draw(st.sampled_from([16, 32])),
        16,
        group_m=draw(st.sampled_from([1, 4])),
        split_k=draw(st.sampled_from([1, 2, 3])),
    )
    return (
        (batch, in_per_group * groups, height, width),
        (out_per_group * groups, in_per_group, kernel_h, kernel_w),
        dict(stride=stride, padding=padding, dilation=dilation, groups=groups),
        config,
        draw(st.booleans()),
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(geometries())
def test_random_geometry_matches_reference(case):
    x_shape, w_shape, kwargs, config, channels_last = case
    x = torch.randn(x_shape)
    w = torch.randn(w_shape)
    b = torch.randn(w_shape[0])
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    problem = ConvProblem.from_shapes(x.shape, w.shape, **kwargs)
    y = triton_conv.conv2d_with_config(x, w, b, **kwargs, config=config)
    ref = reference_conv2d(x, w, b, problem)
    assert rel_error(y, ref) < bound(torch.float32)  # TF32's where the GPU uses it
