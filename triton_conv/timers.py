"""Timers and measured peaks: a clock that waits for the GPU, the median time of a call, the host's own
time per call, peak memory of one call, and the matmul peak and copy bandwidth this GPU reaches.
Nothing here needs a GPU to import; on a CPU the timers time CPU work.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def synchronized_timer() -> float:
    """time.perf_counter() after the GPU has finished all queued work: pytest-benchmark's timer for
    GPU benchmarks (@pytest.mark.benchmark(timer=...)), so a round measures work done, not launched."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return time.perf_counter()


def median_seconds(fn: Callable[[], object], repeats: int = 5, calls: int = 1) -> float:
    """Median seconds per call of `fn` over `repeats` synchronised rounds of `calls` calls."""
    times = []
    for _ in range(repeats):
        start = synchronized_timer()
        for _ in range(calls):
            fn()
        times.append((synchronized_timer() - start) / calls)
    return statistics.median(times)


def host_seconds(fn: Callable[[], object], calls: int = 10) -> float:
    """Seconds the host spends per call (no synchronisation inside): when it exceeds the GPU time,
    the measurement is launch-bound, as small layers at N=1 can be."""
    synchronized_timer()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    elapsed = (time.perf_counter() - start) / calls
    synchronized_timer()
    return elapsed


def peak_memory_bytes(fn: Callable[[], object], device) -> int | None:
    """Bytes allocated at the peak of one call beyond what was allocated before it (None on a CPU)."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


def measure_matmul_peak(dtype: torch.dtype = torch.bfloat16, size: int = 8192, device="cuda") -> float:
    """The measured peak in FLOP/s: a size x size x size torch.matmul (cuBLAS), median of 10 runs."""
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    run = lambda: torch.matmul(a, b)
    median_seconds(run, repeats=2)  # warm-up, cuBLAS heuristics
    return 2 * size**3 / median_seconds(run, repeats=10)


def measure_copy_bandwidth(nbytes: int = 2 << 30, device="cuda") -> float:
    """The measured memory bandwidth in bytes/s: a device-to-device copy of `nbytes`, counting the
    bytes read and the bytes written, median of 10 runs (random data, never zeros)."""
    elements = nbytes // 2
    source = torch.randn(elements, dtype=torch.bfloat16, device=device)
    target = torch.empty_like(source)
    run = lambda: target.copy_(source)
    median_seconds(run, repeats=2)
    return 2 * elements * 2 / median_seconds(run, repeats=10)
