"""The benchmark session: where the kernels run, what is skipped and why, the order, the timer, the
provenance in the JSON, and the summary table at the end.

Without a GPU the kernels run in Triton's interpreter, which must be switched on before triton_conv
is imported (tests/conftest.py does the same for tests/).
"""

import os
import time

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from triton_conv.benchmarking import synchronized_timer, use_comparable_settings  # noqa: E402

from .cases import CASES  # noqa: E402
from .harness import RECORDS, measured_peaks_tflops  # noqa: E402
from .settings import MODE, SKIP_REASON, WIDE, env_float  # noqa: E402

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
BUDGET_S = env_float("TRITON_CONV_BENCH_BUDGET_S", 1320)
TF32 = os.environ.get("TRITON_CONV_BENCH_TF32", "1") != "0"
_STARTED = time.monotonic()

if MODE == "gpu":
    use_comparable_settings(tf32=TF32)


def _case(item):
    callspec = getattr(item, "callspec", None)
    return CASES.get(callspec.params.get("case_id")) if callspec else None


def _is_bench(item) -> bool:
    return str(item.path).startswith(BENCH_DIR + os.sep)


def pytest_collection_modifyitems(config, items):
    """Bench items run most telling first (the cases' priorities), each timed with the synchronising
    timer; items of tests/ keep their order, ahead of them."""
    bench = [item for item in items if _is_bench(item)]
    others = [item for item in items if not _is_bench(item)]
    bench.sort(key=lambda item: getattr(_case(item), "priority", 1000))
    for item in bench:
        group = getattr(_case(item), "group", item.originalname)
        item.add_marker(pytest.mark.benchmark(timer=synchronized_timer, group=group))
    items[:] = others + bench


@pytest.fixture(autouse=True)
def _gate(request):
    """Skip with the session's reason; on the GPU also once the time budget is spent."""
    config = request.config
    if MODE == "smoke" and config.getoption("benchmark_only", False):
        pytest.skip(SKIP_REASON)
    if MODE in ("blocked", "no-device"):
        pytest.skip(SKIP_REASON)
    if MODE == "gpu" and BUDGET_S and time.monotonic() - _STARTED > BUDGET_S:
        pytest.skip(f"the sweep's time budget ({BUDGET_S:.0f} s, TRITON_CONV_BENCH_BUDGET_S) is spent")
    yield
    if MODE == "gpu":
        torch.cuda.empty_cache()


def pytest_benchmark_update_machine_info(config, machine_info):
    """Provenance of every number: GPU, torch, Triton, CUDA, cuDNN, the model's device, TF32, peaks."""
    import triton

    import triton_conv
    from triton_conv.devices import live_device

    spec = live_device() if MODE == "gpu" else None
    machine_info["triton_conv"] = {
        "version": triton_conv.__version__,
        "mode": MODE,
        "sweep": "wide" if WIDE else "default",
        "sweep_env": {k: v for k, v in os.environ.items() if k.startswith("TRITON_CONV_BENCH_")},
        "gpu": spec.name if spec else None,
        "sm_count": spec.sm_count if spec else None,
        "gpu_memory_bytes": spec.mem_bytes if spec else None,
        "model_device_source": spec.source if spec else None,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if MODE == "gpu" else None,
        "tf32": TF32,
        "measured_peak_tflops": measured_peaks_tflops(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "budget_s": BUDGET_S,
        "elapsed_s": round(time.monotonic() - _STARTED, 1),
    }


def pytest_terminal_summary(terminalreporter):
    """Speedup of triton-conv over cuDNN per layer and N, and the batching speedups, as tables."""
    if not RECORDS:
        return
    from triton_conv.report import batching_table, speedup_table

    terminalreporter.write_sep("=", "triton-conv against cuDNN (t_cuDNN / t_triton-conv, median)")
    terminalreporter.write_line(speedup_table(RECORDS))
    batching = batching_table(RECORDS)
    if batching:
        terminalreporter.write_sep("-", "one batch of N against N launches of one image")
        terminalreporter.write_line(batching)
