"""Timers and measured peaks: a clock that waits for the GPU, the median time of a call, the host's own
time per call, peak memory of one call, the matmul peak and copy bandwidth this GPU reaches, and input
sets that take turns so that repeated calls do not time the L2 cache.
Nothing here needs a GPU to import; on a CPU the timers time CPU work.
"""

from __future__ import annotations

import math
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


WARMUP_S = 0.3  # of back-to-back calls before a ceiling is timed: an idle GPU's clocks ramp first


def warm_up(fn: Callable[[], object], seconds: float = WARMUP_S) -> None:
    """Call `fn` until `seconds` have passed (at least twice: cuBLAS picks its kernel on the first),
    so that the timed calls that follow run at the clocks a sustained load gets, not an idle GPU's."""
    start = synchronized_timer()
    calls = 0
    while calls < 2 or synchronized_timer() - start < seconds:
        fn()
        calls += 1


def measure_matmul_peak(dtype: torch.dtype = torch.bfloat16, size: int = 8192, device="cuda") -> float:
    """The measured peak in FLOP/s: a size x size x size torch.matmul (cuBLAS), median of 10 rounds
    of 5 calls, after WARMUP_S of calls (the first GPU work of a run meets idle clocks)."""
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    run = lambda: torch.matmul(a, b)
    warm_up(run)
    return 2 * size**3 / median_seconds(run, repeats=10, calls=5)


def measure_copy_bandwidth(nbytes: int = 2 << 30, device="cuda") -> float:
    """The measured memory bandwidth in bytes/s: a device-to-device copy of `nbytes`, counting the
    bytes read and the bytes written, median of 10 runs (random data, never zeros)."""
    elements = nbytes // 2
    source = torch.randn(elements, dtype=torch.bfloat16, device=device)
    target = torch.empty_like(source)
    run = lambda: target.copy_(source)
    warm_up(run)
    return 2 * elements * 2 / median_seconds(run, repeats=10, calls=5)


# --- input sets in turn: timed calls that read memory, not the L2 cache -------------------------------
# A small layer's inputs at a small batch fit in an H200's L2 (tens of MB): calls repeated on one set
# would time the cache. In a model a layer's weights come from memory and its input at best partly
# from the layer before. The timed calls take turns over sets that together are EVICTING_MULTIPLE
# times the L2, so each set's lines are gone by its turn: every implementation is timed reading memory.
EVICTING_MULTIPLE = 2
MAX_INPUT_SETS = 50  # a captured graph (100 calls at most) holds two turns or more


def l2_cache_bytes(device) -> int:
    """The L2 size of a CUDA device; 0 elsewhere (no rotation: the CPU has no GPU cache to defeat)."""
    device = torch.device(device)
    if device.type != "cuda":
        return 0
    return torch.cuda.get_device_properties(device).L2_cache_size


def input_sets_needed(set_bytes: int, cache_bytes: int) -> int:
    """How many sets of `set_bytes` make EVICTING_MULTIPLE times `cache_bytes` (1 to MAX_INPUT_SETS)."""
    if cache_bytes <= 0 or set_bytes <= 0:
        return 1
    return max(1, min(MAX_INPUT_SETS, math.ceil(EVICTING_MULTIPLE * cache_bytes / set_bytes)))


# What each pass of a convolution reads, in the op's own roles (conv2d's or conv_transpose2d's x, w
# and dy): the bytes that must come from memory. The output is written; its freed block is reused
# by the next call's output, so it does not grow what a turn moves through the L2.
PASS_READS = {"fprop": ("x", "w"), "dgrad": ("dy", "w"), "wgrad": ("x", "dy")}


def read_bytes(tensors: dict, pass_name: str | None = None) -> int:
    """The bytes of the tensors `pass_name` reads (PASS_READS); every tensor for another name."""
    names = PASS_READS.get(pass_name, tuple(tensors))
    return sum(tensors[name].nbytes for name in names if isinstance(tensors.get(name), torch.Tensor))


def input_sets(
    tensors: dict, make_set: Callable[[], dict], device, pass_name: str | None = None
) -> list[dict]:
    """`tensors` first (the set a caller checks the first call's result on), then as many fresh sets
    from `make_set()` as input_sets_needed asks for on `device`, counting what `pass_name` reads."""
    count = input_sets_needed(read_bytes(tensors, pass_name), l2_cache_bytes(device))
    return [tensors] + [make_set() for _ in range(count - 1)]


def l2_multiple(sets: list[dict], pass_name: str | None, device) -> float | None:
    """The bytes a whole turn over `sets` reads, in units of the L2 (None without a GPU cache): at
    EVICTING_MULTIPLE or more each call reads memory; below 1 (a small layer at N=1, where the
    MAX_INPUT_SETS cap binds) its inputs may still sit in the L2 from the last turn."""
    cache = l2_cache_bytes(device)
    return len(sets) * read_bytes(sets[0], pass_name) / cache if cache else None


class Rotation:
    """One operation bound to each of several input sets, called on each in turn, starting with the
    first. `sets` tells a timer how many calls make a turn (a captured graph holds whole turns)."""

    def __init__(self, calls: list[Callable[[], object]]):
        self.calls, self.sets, self.turn = list(calls), len(calls), 0

    def __call__(self):
        call = self.calls[self.turn]
        self.turn = (self.turn + 1) % self.sets
        return call()


def in_turn(bind: Callable[[dict], Callable[[], object]], sets: list[dict]) -> Callable[[], object]:
    """`bind(tensors)` (the operation's call on those tensors) for each set, called in turn; with one
    set, that set's call itself."""
    return bind(sets[0]) if len(sets) == 1 else Rotation([bind(tensors) for tensors in sets])
