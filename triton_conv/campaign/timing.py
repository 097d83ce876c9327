"""How a campaign times one callable, and the timings in pytest-benchmark's form.

On a GPU a measurement has two views of the same call:
- device time: `calls` back-to-back calls captured in one CUDA graph, replayed `rounds` times, each
  replay timed with CUDA events; per call = replay / calls. No host work or launch gap is left in it,
  so triton-conv's Python launch path and cuDNN's C++ one compare on the kernels alone. These rounds
  are the record's `stats` (its 'median' is what the report reads).
- eager time: `rounds` rounds of `iterations` plain calls between two synchronisations
  (timers.median_seconds's timer, as bench/ times), and the host's own time per call
  (timers.host_seconds): what a user calling the op from Python sees.
A callable that takes turns over several input sets (timers.Rotation: the campaign's steps bind each
pass to enough sets to overflow the L2 cache) is captured in whole turns, so that every replay reads
each set once. Where a capture fails (a callable that synchronises, say) the eager rounds are the
stats, and the record says so. An item's time limit is held back while a graph is captured
(limits.py): capturing takes milliseconds, and the limit strikes as the capture ends. On the CPU
(the interpreter) one call is timed, once: the CPU run checks the campaign's machinery, not speed.
"""

from __future__ import annotations

import bisect
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..timers import host_seconds, synchronized_timer
from .limits import held_back

MAX_GRAPH_CALLS = 100  # calls in one captured graph (each keeps its outputs alive in the graph's pool)
DEVICE_TIMER = "CUDA graph replay, CUDA events"  # a Measurement's timer when its device view was taken


@dataclass
class Measurement:
    rounds: list[float] = field(default_factory=list)  # seconds per call, one per round (the stats)
    iterations: int = 1  # calls per round
    timer: str = "wall clock"
    eager_seconds: float | None = None
    host_seconds: float | None = None
    device_seconds: float | None = None
    error: str | None = None  # why the device view is missing
    input_sets: int = 1  # the sets the calls took turns over (timers.Rotation)

    @property
    def seconds(self) -> float:
        return statistics.median(self.rounds)


def _calls_per_round(seconds_per_call: float, min_round_s: float, sets: int = 1) -> int:
    """Calls enough for a round of min_round_s, in whole turns over `sets` input sets (at least one),
    at most MAX_GRAPH_CALLS where a turn fits in it."""
    wanted = max(1, min(MAX_GRAPH_CALLS, math.ceil(min_round_s / max(seconds_per_call, 1e-7))))
    return sets * max(1, min(MAX_GRAPH_CALLS // sets, math.ceil(wanted / sets)))


def graph_rounds(fn: Callable[[], object], calls: int, rounds: int) -> list[float]:
    """Seconds per call of `calls` calls captured in a CUDA graph, one value per timed replay."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm the capture stream's allocator, as torch's docs advise
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with held_back(), torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(rounds):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e-3 / calls)
    del graph
    return times


def eager_rounds(fn: Callable[[], object], iterations: int, rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        start = synchronized_timer()
        for _ in range(iterations):
            fn()
        times.append((synchronized_timer() - start) / iterations)
    return times


def measure(
    fn: Callable[[], object], *, rounds: int, min_round_s: float, on_gpu: bool, eager: bool = True
) -> Measurement:
    """Time `fn` (already called once and checked by the caller) as the module's docstring says;
    eager=False: the device view only (the candidates of a tuning)."""
    if not on_gpu:
        start = time.perf_counter()
        fn()
        seconds = time.perf_counter() - start
        return Measurement([seconds], 1, "wall clock, one call (CPU)", seconds, None, None)
    fn()
    start = synchronized_timer()
    fn()
    first = synchronized_timer() - start
    sets = getattr(fn, "sets", 1)
    iterations = _calls_per_round(first, min_round_s, sets)
    result = Measurement(iterations=iterations, input_sets=sets)
    if eager:
        eager_times = eager_rounds(fn, iterations, rounds)
        result.eager_seconds = statistics.median(eager_times)
        result.host_seconds = host_seconds(fn, calls=min(iterations, 20))
    try:
        result.rounds = graph_rounds(fn, iterations, rounds)
        result.timer = DEVICE_TIMER
        result.device_seconds = statistics.median(result.rounds)
    except Exception as error:  # noqa: BLE001 - any capture failure: fall back to the eager view
        torch.cuda.synchronize()
        result.error = f"{type(error).__name__}: {error}"[:300]
        result.rounds = eager_times if eager else eager_rounds(fn, iterations, rounds)
        result.timer = "synchronised wall clock (capture failed)"
    return result


def _quartiles(data: list[float]) -> tuple[float, float]:
    """Q1 and Q3 of sorted data as pytest-benchmark computes them (Wikipedia's methods 2 and 3)."""
    n = len(data)
    if n == 1:
        return data[0], data[0]
    if n % 2 == 0:  # method 2: medians of the halves
        return statistics.median(data[: n // 2]), statistics.median(data[n // 2 :])
    k, r = n // 4, n % 4  # method 3
    if r == 1:
        return 0.25 * data[k - 1] + 0.75 * data[k], 0.75 * data[3 * k] + 0.25 * data[3 * k + 1]
    return 0.75 * data[k] + 0.25 * data[k + 1], 0.25 * data[3 * k + 1] + 0.75 * data[3 * k + 2]


def benchmark_stats(rounds: list[float], iterations: int) -> dict:
    """The 'stats' of a pytest-benchmark JSON entry from the seconds per call of each round, with
    pytest_benchmark.stats.Stats's definitions (tests/test_campaign.py compares the two)."""
    data = sorted(rounds)
    n, mean = len(data), statistics.fmean(data)
    stddev = statistics.stdev(data) if n > 1 else 0.0
    q1, q3 = _quartiles(data)
    iqr = q3 - q1
    low, high = q1 - 1.5 * iqr, q3 + 1.5 * iqr
    iqr_outliers = sum(1 for x in data if x < low or x > high)
    stddev_outliers = sum(1 for x in data if x < mean - stddev or x > mean + stddev)
    total = sum(data)
    return {
        "min": data[0], "max": data[-1], "mean": mean, "stddev": stddev, "rounds": n,
        "median": statistics.median(data), "iqr": iqr, "q1": q1, "q3": q3,
        "iqr_outliers": iqr_outliers, "stddev_outliers": stddev_outliers,
        "outliers": f"{stddev_outliers};{iqr_outliers}",
        "ld15iqr": data[0] if n == 1 else data[bisect.bisect_left(data, low)],
        "hd15iqr": data[0] if n == 1 else data[bisect.bisect_right(data, high) - 1],
        "ops": n / total if total else 0.0, "total": total, "iterations": iterations,
    }  # fmt: skip
