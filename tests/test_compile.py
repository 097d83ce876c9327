"""The kernels compile for GPUs that are not here: sm_90 (wgmma, no spills) and sm_80."""

from __future__ import annotations

import pytest
import torch

from triton_conv import KernelConfig
from triton_conv.compile_check import compile_specs, wgmma_eligible
from triton_conv.launchers.fprop import fprop_spec
from triton_conv.problem import ConvProblem

from .test_fprop import CONFIGS

# A ResNet-like layer: channel counts divisible by 16, as a real network's are, so the compiler
# sees the same divisibility a GPU launch would give it.
PROBLEM = ConvProblem.from_shapes((8, 64, 56, 56), (64, 64, 3, 3), padding=1)
PRODUCTION = [
    KernelConfig(128, 128, 64, num_warps=8, num_stages=3),
    KernelConfig(128, 64, 64, num_warps=4, num_stages=4),
    KernelConfig(64, 64, 32, num_warps=4, num_stages=3),
]
DTYPES = [torch.float16, torch.bfloat16, torch.float32]
CAPABILITIES = [90, 80]


def _fprop(dtype, config):
    def make(shape):
        return torch.empty(shape, dtype=dtype).to(memory_format=torch.channels_last)

    x, w, y = make(PROBLEM.input_shape), make(PROBLEM.weight_shape), make(PROBLEM.output_shape)
    return fprop_spec(x, w, torch.empty(PROBLEM.out_channels, dtype=dtype), y, PROBLEM, config)


def _fit_fp32(config, dtype):
    if dtype == torch.float32 and config.block_k > 32:
        # fp32 elements take twice the bytes: BLOCK_K 64 spills on sm_80 at 128x64 (8 bytes seen).
        return KernelConfig(**{**config.as_dict(), "block_k": 32})
    return config


CASES = [(_fit_fp32(c, d), d, cap) for c in PRODUCTION + CONFIGS for d in DTYPES for cap in CAPABILITIES]


@pytest.fixture(scope="module")
def reports():
    """Every case compiled in one batch per capability (a child process under the interpreter)."""
    found = {}
    for capability in CAPABILITIES:
        cases = [(c, d) for c, d, cap in CASES if cap == capability]
        compiled = compile_specs([_fprop(d, c) for c, d in cases], capability)
        found.update({(c, d, capability): r for (c, d), r in zip(cases, compiled)})
    return found


@pytest.mark.parametrize("config,dtype,capability", CASES, ids=lambda v: str(v).replace("torch.", ""))
def test_fprop_compiles(config, dtype, capability, reports):
    report = reports[(config, dtype, capability)]
    assert report.kernel == "fprop_kernel" and report.capability == capability
    assert not report.spills, report
    if (
        capability == 90
        and dtype != torch.float32
        and wgmma_eligible(dtype, config.block_m, config.num_warps)
    ):
        assert report.wgmma, f"{config} {dtype} fell off wgmma: {report}"
    if capability == 80:
        assert not report.wgmma and report.mma_sync
