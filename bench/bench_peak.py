"""The measured peak: a large torch.matmul (cuBLAS) per dtype, the denominator of every benchmark's
fraction_of_peak (fp32 with the session's TF32 setting). Runs first (bench/cases.py priorities)."""

import pytest
import torch

from triton_conv.benchmarking import DTYPES
from triton_conv.runtime import fp32_uses_tf32

from .cases import CASES, PEAK_CASES, ids
from .harness import accuracy_check, device, record_peak, run_benchmark
from .settings import MODE


@pytest.mark.parametrize("case_id", ids("peak", PEAK_CASES))
def test_matmul_peak(case_id, benchmark):
    case = CASES[case_id]
    a, b = (torch.randn(case.size, case.size, dtype=DTYPES[case.dtype], device=device()) for _ in range(2))
    corner = min(case.size, 256)
    want = a[:corner].double() @ b[:, :corner].double()
    tf32 = MODE == "gpu" and fp32_uses_tf32()
    check = accuracy_check(want, case.dtype, tf32, f"matmul {case.dtype}", view=lambda r: r[:corner, :corner])

    flops = 2 * case.size**3
    info = {
        "kind": "matmul_peak",
        "implementation": "cublas",
        "dtype": case.dtype,
        "N": case.size,
        "flops": flops,
    }
    run_benchmark(
        benchmark, lambda: torch.matmul(a, b), info=info, flops=flops, check=check, dtype=case.dtype
    )
    if MODE == "gpu":
        record_peak(case.dtype, flops / benchmark.stats.stats.median)
