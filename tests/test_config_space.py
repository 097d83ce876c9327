"""Every config of every pass's search space against the float64 reference, under the interpreter.

A compiler can miscompile one config and not its neighbours, so the tuner may only choose among
configs that are each checked here. The problem is small and odd-shaped (no dimension a multiple of
any block; stride 2 on one axis so dgrad has two stride phases; asymmetric padding), so the large
tiles are mostly masked and the big split-K counts leave some splits empty: both are edges too.
num_warps and num_stages do nothing under the interpreter; the sm_90 compile of every config is in
test_static_report.py.
"""

from __future__ import annotations

import os

import pytest
import torch

from triton_conv.launchers.dgrad import conv2d_dgrad
from triton_conv.launchers.fprop import conv2d_fprop
from triton_conv.launchers.wgrad import conv2d_wgrad
from triton_conv.problem import ConvProblem
from triton_conv.search_space import config_space

from .reference import bound, make_tensor, reference_conv2d, rel_error

# GEMMs: fprop 80 x 21 x 19·9, dgrad 2 phases of 40 x 19 x 21·(2 or 1)·3, wgrad 21 x 171 x 80.
PROBLEM = ConvProblem.from_shapes((2, 19, 7, 10), (21, 19, 3, 3), stride=(2, 1), padding=(1, 1))


@pytest.fixture(scope="module")
def tensors():
    seed = int.from_bytes(os.urandom(4), "little")  # one fresh draw shared by the module's tests
    torch.manual_seed(seed)
    print(f"test_config_space tensors: torch.manual_seed({seed})")
    x = make_tensor(PROBLEM.input_shape, torch.float32, "nhwc")
    w = make_tensor(PROBLEM.weight_shape, torch.float32, "nhwc")
    b = make_tensor((PROBLEM.out_channels,), torch.float32)
    dy = make_tensor(PROBLEM.output_shape, torch.float32, "nhwc")
    x64 = x.double().requires_grad_()
    w64 = w.double().requires_grad_()
    b64 = b.double().requires_grad_()
    y64 = reference_conv2d(x64, w64, b64, PROBLEM)
    dx64, dw64, db64 = torch.autograd.grad(y64, (x64, w64, b64), dy.double())
    # A bias per input channel: dgrad's epilogue as the transposed convolution's forward runs it.
    c_bias = make_tensor((PROBLEM.in_channels,), torch.float32)
    dx_biased = dx64 + c_bias.double().view(1, -1, 1, 1)
    return dict(
        x=x, w=w, b=b, dy=dy, y=y64.detach(), dx=dx64, dw=dw64, db=db64, c_bias=c_bias, dx_biased=dx_biased
    )


def _skip_unless_launchable(config, pass_name, tensors):
    """Under the interpreter every config runs. On a GPU, fp32's largest tiles need more shared
    memory per block than it has (240 KiB on sm_90, of 227: notes/autotune/sm90_static-triton3.6.md),
    and Triton refuses to launch them; the tuner never picks them (pruning's shared_memory rule)."""
    device = tensors["x"].device
    if device.type != "cuda":
        return
    from triton_conv.tuning import device_identity, launchable

    if not launchable(config, PROBLEM, pass_name, torch.float32, device_identity(device)[1]):
        pytest.skip(f"fp32 {config} needs more shared memory per block than this GPU has")


def _check(out, ref, what):
    err = rel_error(out, ref)
    assert err < bound(torch.float32), f"{what}: relative error {err:.2e}"  # TF32's on a GPU


@pytest.mark.parametrize("config", config_space("fprop"), ids=str)
def test_fprop_config(config, tensors, triton_only):
    _skip_unless_launchable(config, "fprop", tensors)
    with triton_only() as proof:
        y = conv2d_fprop(tensors["x"], tensors["w"], tensors["b"], PROBLEM, config)
    assert proof.launches == {"fprop_kernel": 1}
    _check(y, tensors["y"], "y")


@pytest.mark.parametrize("config", config_space("dgrad"), ids=str)
def test_dgrad_config(config, tensors, triton_only):
    _skip_unless_launchable(config, "dgrad", tensors)
    with triton_only() as proof:
        dx = conv2d_dgrad(tensors["dy"], tensors["w"], PROBLEM, config, channels_last=True)
    assert proof.launches == {"dgrad_kernel": 1}
    assert dx.is_contiguous(memory_format=torch.channels_last)
    _check(dx, tensors["dx"], "dx")


@pytest.mark.parametrize("config", config_space("dgrad"), ids=str)
def test_dgrad_config_with_the_bias_epilogue(config, tensors, triton_only):
    """Every dgrad config with a bias (the transposed forward's), split-K's included: added once."""
    _skip_unless_launchable(config, "dgrad", tensors)
    with triton_only() as proof:
        dx = conv2d_dgrad(
            tensors["dy"], tensors["w"], PROBLEM, config, channels_last=False, bias=tensors["c_bias"]
        )
    assert proof.launches == {"dgrad_kernel": 1}
    _check(dx, tensors["dx_biased"], "dx + bias")


@pytest.mark.parametrize("config", config_space("wgrad"), ids=str)
def test_wgrad_config(config, tensors, triton_only):
    _skip_unless_launchable(config, "wgrad", tensors)
    with triton_only() as proof:
        dw, db = conv2d_wgrad(
            tensors["dy"], tensors["x"], PROBLEM, config,
            weight_dtype=torch.float32, channels_last=True, need_bias=True,
        )  # fmt: skip
    assert proof.launches == {"wgrad_kernel": 1}
    _check(dw, tensors["dw"], "dw")
    _check(db, tensors["db"], "db")


def test_problem_is_off_every_block():
    """The problem's GEMM dimensions are no multiple of any block size in the spaces."""
    blocks = {c.block_m for p in ("fprop", "dgrad", "wgrad") for c in config_space(p)}
    blocks |= {c.block_n for p in ("fprop", "dgrad", "wgrad") for c in config_space(p)}
    dims = [*PROBLEM.gemm("fprop"), *PROBLEM.gemm("wgrad"), PROBLEM.in_channels]
    assert all(d % b for d in dims for b in blocks)
    assert len(PROBLEM.dgrad_phases()) == 2
