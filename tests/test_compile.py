"""The kernels compile for GPUs that are not here: sm_90 (wgmma, no spills) and sm_80 (mma.sync).

The whole config space of each pass is compiled for sm_90 by tests/test_static_report.py; this file
covers the configs the CPU tests run, both capabilities, every dtype and the int64 variant.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from triton_conv import KernelConfig
from triton_conv.compile_check import compile_specs, example_spec
from triton_conv.configs import wgmma_eligible
from triton_conv.problem import ConvProblem

from .test_fprop import CONFIGS

# ResNet-like layers: channel counts divisible by 16, as a real network's are, so the compiler sees
# the same divisibility a GPU launch would give it. dgrad's is strided (four stride phases).
PROBLEMS = {
    "fprop": ConvProblem.from_shapes((8, 64, 56, 56), (64, 64, 3, 3), padding=1),
    "dgrad": ConvProblem.from_shapes((8, 64, 28, 28), (64, 64, 3, 3), stride=2, padding=1),
    "wgrad": ConvProblem.from_shapes((4, 64, 28, 28), (128, 64, 3, 3), padding=1),
}
PROBLEMS["dgrad_masked"] = PROBLEMS["dgrad"]
PRODUCTION = [
    KernelConfig(128, 128, 64, num_warps=8, num_stages=3),
    KernelConfig(128, 64, 64, num_warps=4, num_stages=4),
    KernelConfig(64, 64, 32, num_warps=4, num_stages=3),
]
DTYPES = [torch.float16, torch.bfloat16, torch.float32]


def _fit_fp32(config, dtype):
    if dtype == torch.float32 and config.block_k > 32:
        # fp32 elements take twice the bytes: BLOCK_K 64 spills on sm_80 at 128x64 (the config
        # space's register_budget rule prunes these too).
        return KernelConfig(**{**config.as_dict(), "block_k": 32})
    return config


# (pass, config, dtype, capability, force_int64)
CASES = [
    ("fprop", _fit_fp32(c, d), d, cap, False)
    for c in PRODUCTION + CONFIGS
    for d in DTYPES
    for cap in (90, 80)
] + [
    ("fprop", KernelConfig(128, 128, 64, num_warps=8), torch.float16, 90, True),
    ("dgrad", KernelConfig(128, 128, 64, num_warps=8), torch.float16, 90, False),
    ("dgrad", KernelConfig(64, 128, 64, num_warps=4), torch.bfloat16, 90, False),
    ("dgrad", KernelConfig(64, 64, 32, num_warps=4, split_k=2), torch.float16, 90, False),
    ("dgrad", KernelConfig(64, 64, 32, num_warps=4), torch.float32, 90, False),
    ("dgrad", KernelConfig(64, 64, 32, num_warps=4, split_k=2), torch.float16, 90, True),
    ("dgrad", KernelConfig(128, 128, 64, num_warps=8), torch.bfloat16, 80, False),
    ("dgrad", KernelConfig(64, 128, 32, num_warps=4), torch.float32, 80, False),
    ("wgrad", KernelConfig(128, 128, 64, num_warps=8), torch.float16, 90, False),
    ("wgrad", KernelConfig(128, 64, 64, split_k=4, num_warps=4), torch.bfloat16, 90, False),
    ("wgrad", KernelConfig(128, 64, 32, split_k=4, num_warps=4), torch.float32, 90, False),
    ("wgrad", KernelConfig(128, 128, 64, num_warps=8), torch.float16, 90, True),
    ("wgrad", KernelConfig(64, 64, 32, split_k=2, num_warps=4), torch.bfloat16, 90, True),
    ("wgrad", KernelConfig(64, 64, 32, num_warps=4), torch.bfloat16, 80, False),
    ("wgrad", KernelConfig(128, 128, 64, num_warps=8), torch.float16, 80, False),
    # Hopper's one-warpgroup defaults: a 128x128 fp32 accumulator in 4 warps, wgrad 256 rows tall.
    ("fprop", KernelConfig(128, 128, 64, num_warps=4), torch.bfloat16, 90, False),
    ("fprop", KernelConfig(128, 128, 64, num_warps=4), torch.float16, 90, True),
    ("dgrad", KernelConfig(128, 128, 64, num_warps=4), torch.bfloat16, 90, False),
    ("wgrad", KernelConfig(256, 64, 64, split_k=3, num_warps=4), torch.bfloat16, 90, False),
    ("wgrad", KernelConfig(256, 64, 64, split_k=3, num_warps=4), torch.float16, 90, True),
    ("dgrad_masked", KernelConfig(128, 128, 64, num_warps=8), torch.bfloat16, 90, False),
    ("dgrad_masked", KernelConfig(64, 64, 32, num_warps=4), torch.float16, 80, False),
]


@pytest.fixture(scope="module")
def reports():
    """Every case compiled in one batch per capability (a child process under the interpreter). The
    two batches compile at once: this process only waits on its children, so both cores work."""
    batches = {}
    for capability in (90, 80):
        cases = [case for case in CASES if case[3] == capability]
        specs = [
            example_spec(
                pass_name, dtype, config, PROBLEMS[pass_name], force_int64=int64, capability=capability
            )
            for pass_name, config, dtype, _, int64 in cases
        ]
        batches[capability] = cases, specs
    with ThreadPoolExecutor(len(batches)) as pool:
        compiled = {cap: pool.submit(compile_specs, specs, cap) for cap, (_, specs) in batches.items()}
        return {
            case: report
            for cap, (cases, _) in batches.items()
            for case, report in zip(cases, compiled[cap].result(), strict=True)
        }


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(v).replace("torch.", "") for v in c))
def test_compiles(case, reports):
    pass_name, config, dtype, capability, _ = case
    report = reports[case]
    assert report.kernel == f"{pass_name}_kernel" and report.capability == capability
    assert not report.spills, report
    eligible = wgmma_eligible(dtype, config.block_m, config.num_warps)
    if capability == 90 and dtype != torch.float32 and eligible:
        assert report.wgmma, f"{config} {dtype} fell off wgmma: {report}"
    if capability == 80:
        assert not report.wgmma and report.mma_sync
