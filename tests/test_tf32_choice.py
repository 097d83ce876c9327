"""fp32 in TF32 exactly when torch's own convolution of the same call would use it. cuDNN's setting
is not the whole rule: torch runs fp32 depthwise convolutions in NCHW with its own kernel (IEEE
fp32), and, with cuDNN disabled, the rest through im2col and cuBLAS (cuBLAS's setting). Our fp32
kernels took cuDNN's setting for all, TF32 by default: a MobileNet's depthwise layers in fp32 would
have had about 2,700 times torch's error on a GPU."""

from __future__ import annotations

import contextlib
import itertools

import pytest
import torch

import triton_conv
from triton_conv import choices, runtime
from triton_conv.tuning_keys import tuning_key

from .conftest import _launch_functions


@contextlib.contextmanager
def _precisions(cudnn_conv: str, cublas: str, cudnn_enabled: bool = True):
    """cuDNN's conv and cuBLAS's fp32 precisions and cuDNN on or off, all restored after (cuDNN's
    by the tf32_restored fixture)."""
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    before = matmul.fp32_precision, cudnn.enabled
    cudnn.conv.fp32_precision = cudnn_conv
    matmul.fp32_precision, cudnn.enabled = cublas, cudnn_enabled
    try:
        yield
    finally:
        matmul.fp32_precision, cudnn.enabled = before


def _case(channels, out_per_group, groups, *, transposed=False, nhwc=False, conv1d=False, device="cpu"):
    """(input, weight) of a convolution with `groups` groups."""
    spatial = (9,) if conv1d else (6, 7)
    x = torch.empty(2, channels, *spatial, device=device)
    if transposed:
        w = torch.empty(channels, out_per_group, *(3,) * len(spatial), device=device)
    else:
        w = torch.empty(out_per_group * groups, channels // groups, *(3,) * len(spatial), device=device)
    if nhwc and not conv1d:
        x = x.to(memory_format=torch.channels_last)
    return x, w


CASES = [  # (channels, out channels per group, groups, transposed, nhwc, conv1d): depthwise or not
    (8, 1, 8, False, False, False),  # depthwise NCHW: torch's own kernel
    (8, 3, 8, False, False, False),  # depthwise with a multiplier of 3: the same
    (8, 1, 8, False, True, False),  # depthwise channels_last: cuDNN
    (8, 1, 8, True, False, False),  # transposed: never torch's depthwise kernel
    (8, 1, 8, False, False, True),  # conv1d depthwise: a height-one depthwise conv2d
    (8, 2, 4, False, False, False),  # grouped, not depthwise: cuDNN
    (8, 4, 1, False, False, False),  # plain
    (1, 4, 1, False, False, False),  # one channel, one group: not depthwise
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("cudnn_enabled", [True, False])
def test_the_rule(case, cudnn_enabled, tf32_restored):
    channels, per_group, groups, transposed, nhwc, conv1d = case
    x, w = _case(channels, per_group, groups, transposed=transposed, nhwc=nhwc, conv1d=conv1d)
    depthwise = groups == channels > 1 and not transposed
    torchs_kernel = depthwise and (not nhwc or not cudnn_enabled)
    for cudnn_conv, cublas in itertools.product(("tf32", "ieee"), repeat=2):
        with _precisions(cudnn_conv, cublas, cudnn_enabled):
            expected = False if torchs_kernel else (cudnn_conv if cudnn_enabled else cublas) == "tf32"
            assert runtime.torch_conv_uses_tf32(x, w, groups, transposed) == expected, (cudnn_conv, cublas)


def test_a_depthwise_operand_too_large_for_32_bit_indexing_goes_to_cudnn(tf32_restored):
    x = torch.empty(1, 2**15, 2**8, 2**8, device="meta")  # 2**31 elements
    w = torch.empty(2**15, 1, 3, 3, device="meta")
    with _precisions("tf32", "ieee"):
        assert runtime.torch_conv_uses_tf32(x, w, 2**15, False)
        assert not runtime.torch_conv_uses_tf32(x[:, :, :16], w, 2**15, False)


_BACKEND_TF32 = {  # torch's backends for CUDA tensors -> whose fp32 precision they follow
    "Cudnn": "cudnn", "CudnnTranspose": "cudnn", "CudaDepthwise2d": "ieee",
    "Slow2d": "cublas", "SlowDilated2d": "cublas", "SlowTranspose2d": "cublas",
}  # fmt: skip


@pytest.mark.skipif(not torch.backends.cudnn.is_available(), reason="needs torch built with cuDNN")
@pytest.mark.parametrize("cudnn_enabled", [True, False])
def test_the_rule_is_torchs_own_backend_choice(cudnn_enabled, tf32_restored):
    """torch's own choice of backend, asked of fake CUDA tensors (no GPU needed; a torch built with
    cuDNN, as the GPU machine's): every case's TF32 use agrees with the backend's setting."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    layouts = [(False, False), (True, False), (False, True)]
    # Not dilated: torch asks the GPU whether cuDNN takes a dilated NCHW convolution, and without one
    # answers no (im2col and cuBLAS); an sm_90 GPU answers yes.
    dilations = [(1, 1)]
    shapes = [(8, 1, 8), (8, 2, 8), (8, 2, 4), (8, 4, 1), (1, 4, 1), (6, 1, 3)]
    with FakeTensorMode(allow_non_fake_inputs=True), _precisions("tf32", "ieee", cudnn_enabled):
        compared = 0
        for (channels, per_group, groups), transposed, (nhwc, conv1d), dilation in itertools.product(
            shapes, (False, True), layouts, dilations
        ):
            x, w = _case(channels, per_group, groups, transposed=transposed, nhwc=nhwc, conv1d=conv1d,
                         device="cuda")  # fmt: skip
            if conv1d:
                x4, w4, dilation = x.unsqueeze(2), w.unsqueeze(2), (1, dilation[0])
            else:
                x4, w4 = x, w
            backend = torch._C._select_conv_backend(
                x4, w4, None, [1, 1], [1, 1], list(dilation), transposed, [0, 0], groups, None
            ).name
            expected = _BACKEND_TF32[backend] == "cudnn"  # cuDNN's 'tf32', cuBLAS's 'ieee'
            got = runtime.torch_conv_uses_tf32(x, w, groups, transposed)
            assert got == expected, (backend, channels, per_group, groups, transposed, nhwc, conv1d, dilation)
            compared += 1
    assert compared == len(shapes) * 2 * len(layouts) * len(dilations)


def _precisions_launched(monkeypatch) -> list[str]:
    """Every kernel launch's INPUT_PRECISION, recorded as the launch runs."""
    seen = []
    for module, launch in _launch_functions().items():

        def recording(spec, launch=launch):
            seen.append(spec.constexprs["INPUT_PRECISION"])
            return launch(spec)

        monkeypatch.setattr(module, "launch", recording)
    return seen


@pytest.mark.parametrize(
    "op, groups, nhwc, cudnn_enabled, expected",
    [
        ("conv2d", 6, False, True, "ieee"),  # depthwise NCHW: torch's own kernel, all three passes
        ("conv2d", 6, True, True, "tf32"),  # depthwise channels_last: cuDNN's default
        ("conv2d", 2, False, True, "tf32"),  # grouped: cuDNN's default
        ("conv2d", 2, False, False, "ieee"),  # cuDNN off: cuBLAS's default
        ("conv1d", 6, False, True, "ieee"),
        ("conv_transpose2d", 6, False, True, None),  # forward: cuDNN's; its gradients: conv2d's ops'
    ],
)
def test_each_pass_runs_in_the_precision_of_torchs_call(
    op, groups, nhwc, cudnn_enabled, expected, monkeypatch, tf32_restored
):
    seen = _precisions_launched(monkeypatch)
    spatial = (9,) if op == "conv1d" else (5, 6)
    x = torch.randn(2, 6, *spatial)
    if nhwc:
        x = x.to(memory_format=torch.channels_last)
    w = torch.randn(6, 6 // groups, *(3,) * len(spatial))  # conv_transpose2d's (C_in, K/groups) too
    x.requires_grad_(), w.requires_grad_()
    with _precisions("tf32", "ieee", cudnn_enabled):
        out = getattr(triton_conv, op)(x, w, groups=groups)
        forward = list(seen)
        out.sum().backward()
    if op == "conv_transpose2d":  # forward transposed (cuDNN), backward as depthwise conv2d ops
        assert forward == ["tf32"] and set(seen[1:]) == {"ieee"}, seen
    else:
        assert len(seen) == 3 and set(seen) == {expected}, seen


def test_tune_model_tunes_the_keys_of_a_depthwise_model(tf32_restored):
    """A depthwise layer's fp32 key is IEEE's ('fp32'), the others' TF32's (cuDNN's default): what
    the model's step looks up."""
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3), torch.nn.Conv2d(6, 6, 3, groups=6))
    with _precisions("tf32", "ieee"):
        keys = [r.key for r in triton_conv.tune_model(model, (3, 9, 9), (2,), torch.float32, progress=False,
                                                       channels_last=False, device="cpu")]  # fmt: skip
        looked_up = []
        real = choices.select_config

        def select_config(problem, pass_name, dtype, channels_last, device=None):
            looked_up.append(tuning_key(problem, pass_name, dtype, channels_last))
            return real(problem, pass_name, dtype, channels_last, device)

        from triton_conv import passes

        passes.select_config, before = select_config, passes.select_config
        try:
            triton_conv.convert_model(model)(torch.randn(2, 3, 9, 9)).sum().backward()
        finally:
            passes.select_config = before
    assert sorted(looked_up) == sorted(keys)
    depthwise = [key for key in keys if key.endswith("g=6")]
    assert depthwise and all(key.split()[1] == "fp32" for key in depthwise), keys
    assert all(key.split()[1] == "tf32" for key in keys if key not in depthwise), keys


def test_conv2d_with_config_runs_in_the_precision_of_conv2d(monkeypatch, tf32_restored):
    seen = _precisions_launched(monkeypatch)
    x, w = torch.randn(2, 6, 5, 6), torch.randn(6, 1, 3, 3)
    with _precisions("tf32", "ieee"):
        triton_conv.conv2d_with_config(x, w, groups=6)
        triton_conv.conv2d_with_config(x, w.repeat(1, 3, 1, 1), groups=2)
    assert seen == ["ieee", "tf32"]
