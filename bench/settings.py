"""This benchmark session's mode and the environment variables that shape the sweep.

Modes (decided once, at import, from the GPU and TRITON_INTERPRET):
  gpu        a CUDA device and compiled kernels: the sweep of bench/cases.py, timed.
  smoke      no GPU, the kernels in Triton's interpreter: every benchmark function runs once on a tiny
             CPU problem and checks its result against torch (CI: `pytest --benchmark-disable`).
  blocked    a GPU, but TRITON_INTERPRET=1 (tests/conftest.py sets it when tests/ is collected too):
             timing the interpreter would be meaningless, so everything is skipped with that reason.
  no-device  no GPU and no interpreter: skipped.

The default GPU sweep stops after TRITON_CONV_BENCH_BUDGET_S (1,320 s) with the most telling cases
first; it has not run on a GPU yet, so how much of it fits that budget is not known. Environment
variables widen or narrow it:
  TRITON_CONV_BENCH_SWEEP=wide        every layer of every set, N 1..256, fp16/bf16/fp32, both layouts,
                                      all implementations (hours: raise the budget too)
  TRITON_CONV_BENCH_SETS=a,b          only these layer sets (quantization_probes, resnet50,
                                      resnet50_megapixel, unet_decoder: transposed convolutions)
  TRITON_CONV_BENCH_BATCHES=1,8,32    replace every list of batch sizes
  TRITON_CONV_BENCH_DTYPES=fp16,bf16  replace every list of dtypes
  TRITON_CONV_BENCH_LAYOUTS=channels_last,nchw    replace every list of layouts
  TRITON_CONV_BENCH_IMPLS=triton-conv,cudnn,inductor    replace every list of implementations
  TRITON_CONV_BENCH_PART=fprop        one part of the default sweep (fprop, backward, peer, training,
                                      layers, dtypes, decoder; bench/cases.py PARTS), for machines that
                                      limit a command's time: one JSON per part, the report merges them
  TRITON_CONV_BENCH_BUDGET_S=1320     seconds after which the remaining benchmarks skip (0: no limit)
  TRITON_CONV_BENCH_ROUNDS=20         timed rounds per benchmark
  TRITON_CONV_BENCH_TF32=1            fp32 convolutions (all implementations) use TF32
"""

from __future__ import annotations

import os

import torch

from triton_conv.runtime import interpreter_active


def session_mode() -> tuple[str, str]:
    """(mode, the reason a skipped benchmark gives)."""
    gpu, interpreted = torch.cuda.is_available(), interpreter_active()
    if gpu and not interpreted:
        return "gpu", ""
    if gpu:
        return "blocked", (
            "TRITON_INTERPRET=1 with a GPU present (tests/conftest.py sets it when tests/ is collected): "
            "the kernels would run in the interpreter; run `pytest bench --benchmark-only` or "
            "`TRITON_INTERPRET=0 pytest --benchmark-only`"
        )
    if interpreted:
        return "smoke", (
            "no CUDA GPU: the benchmarks time GPU kernels; without one, `pytest --benchmark-disable` "
            "runs each benchmark once on a tiny CPU problem under TRITON_INTERPRET=1 as a check"
        )
    return "no-device", "no CUDA GPU, and TRITON_INTERPRET is off: nothing can run the Triton kernels"


MODE, SKIP_REASON = session_mode()
WIDE = os.environ.get("TRITON_CONV_BENCH_SWEEP", "default") == "wide"


def env_list(name: str, cast=str) -> tuple | None:
    value = os.environ.get(name, "").strip()
    return tuple(cast(item.strip()) for item in value.split(",") if item.strip()) or None


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))
