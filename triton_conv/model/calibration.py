"""Calibration: the named terms (terms.py) fitted to measurements, never more than two numbers.

fit_stack — a software stack running a network: from its measured time per batch at one or two
    batch sizes N1 < N2, the stack overhead s (seconds per inference) and, with a second batch size,
    the achieved fraction η. Serial, T(N) = s + calls·floor + serial(N) + roofline(N)/η is linear in
    s and 1/η (serial(N): the calls' split-K serial sums, roofline.py, which η does not scale), so
    two points give them exactly:
        1/η = (T(N2) − T(N1) − serial(N2) + serial(N1)) / (roofline(N2) − roofline(N1)),
        s = T(N1) − calls·floor − serial(N1) − roofline(N1)/η.
    Overlapped, T(N) = max(s, calls·floor + serial(N) + roofline(N)/η): the larger batch is taken to
    be the GPU's time (1/η = (T(N2) − calls·floor − serial(N2)) / roofline(N2)) and the smaller the
    stack's (s = T(N1)).
    The floor stays what it is given (the default 5 µs): it cannot be told apart from s by a network's
    time. Every other batch size is then a prediction. A negative s or an η above 1 is returned as
    found: it says the model's curve has the wrong shape for that stack, and the report shows it
    (network_time then gives what the fitted terms say, down to negative seconds at a batch below
    the fitted ones; `triton-conv predict --fit` refuses such a fit). Overlapped, the fit reproduces
    T(N1) only where the GPU's time at N1 is at most s; where it is more, the fitted terms give
    max(s, G(N1)) > T(N1) at N1 (the stack was not host-bound there), returned as found too.
    The Terms hold the three numbers and the flag only: predict with the same passes, allow_tf32 and
    input_dgrad as the fit was made with.

fit_fraction — a library's per-call times on one device and dtype: the single achieved fraction η
    that minimises the squared log error Σ (ln t_measured − ln(floor + roofline/η))² over the calls
    given (a scale fitted to many points, not a shape).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from .arguments import check_count, check_finite, check_flag
from .network import network_cost
from .terms import CALL_FLOOR_S, Terms


def fit_stack(
    layers,
    passes,
    device,
    dtype,
    measured_s: Mapping[int, float],
    *,
    call_floor_s: float = CALL_FLOOR_S,
    overlapped: bool = False,
    allow_tf32: bool = True,
    input_dgrad: bool = False,
) -> Terms:
    """The Terms of a stack from {batch: measured seconds per batch} at one or two batch sizes (see
    the module docstring); one batch size fits the stack overhead alone (achieved fraction 1)."""
    if not isinstance(measured_s, Mapping):
        raise TypeError(f"measured_s must be a mapping of batch size to seconds, got {measured_s!r}")
    if not 1 <= len(measured_s) <= 2:
        raise ValueError(f"a stack is calibrated on one or two batch sizes, got {sorted(measured_s)}")
    measured = {check_count(n, "a batch size of measured_s"): check_finite(t, f"measured_s[{n!r}]", above=0)
                for n, t in measured_s.items()}  # fmt: skip
    if len(measured) < len(measured_s):  # two keys of one batch size (1 and tensor(1)): one time dropped
        raise ValueError(f"measured_s names one batch size twice: {list(measured_s)}")
    call_floor_s = check_finite(call_floor_s, "call_floor_s", least=0)
    overlapped = check_flag(overlapped, "overlapped")
    layers = list(layers)
    (n1, t1), *rest = sorted(measured.items())
    cost1 = network_cost(layers, passes, n1, device, dtype, allow_tf32=allow_tf32, input_dgrad=input_dgrad)
    inverse = 1.0
    if rest:
        (n2, t2) = rest[0]
        cost2 = network_cost(
            layers, passes, n2, device, dtype, allow_tf32=allow_tf32, input_dgrad=input_dgrad
        )
        if not (t2 > t1 and cost2.roofline_s > cost1.roofline_s):
            raise ValueError(
                f"cannot fit: the time must grow from N={n1} ({t1:.3g} s) to N={n2} ({t2:.3g} s)"
            )
        if overlapped:
            inverse = (t2 - cost2.calls * call_floor_s - cost2.serial_s) / cost2.roofline_s
            if not inverse > 0:
                least = cost2.calls * call_floor_s + cost2.serial_s
                raise ValueError(f"cannot fit: N={n2} ({t2:.3g} s) takes less than its {cost2.calls} calls' "
                                 f"floors and serial sums ({least:.3g} s)")  # fmt: skip
        else:
            growth = cost2.serial_s - cost1.serial_s  # the split-K serial sums: not scaled by η
            if not t2 - t1 > growth:
                raise ValueError(
                    f"cannot fit: the time grows from N={n1} to N={n2} by {t2 - t1:.3g} s, no more than the "
                    f"model's split-K serial sums alone ({growth:.3g} s): as if the work took no time"
                )
            inverse = (t2 - t1 - growth) / (cost2.roofline_s - cost1.roofline_s)
    fraction = 1.0 / inverse if inverse > 0 else math.inf
    gpu1 = cost1.calls * call_floor_s + cost1.serial_s + cost1.roofline_s * inverse
    overhead = t1 if overlapped else t1 - gpu1
    if not (math.isfinite(fraction) and math.isfinite(overhead)):  # times far apart for a float
        raise ValueError(
            f"cannot fit measured_s {sorted(measured.items())}: the achieved fraction comes out as"
            f" {fraction:g}, the stack overhead {overhead:g} s (times too far apart for a float's precision)"
        )
    try:
        return Terms(call_floor_s, fraction, overhead, overlapped)
    except ValueError as error:  # a term beyond what any call or stack takes (terms.py's bounds)
        raise ValueError(
            f"cannot fit measured_s {sorted(measured.items())}: the achieved fraction comes out as"
            f" {fraction:g}, the stack overhead {overhead:g} s ({error})"
        ) from None


def _log_error(inverse: float, points) -> float:
    # Exactly rounded: near the minimum the golden-section search compares errors that differ in the
    # last bits, and a plain sum's rounding (which Python 3.12 changed) moved the fitted fraction.
    return math.fsum(
        (math.log(t) - math.log(floor + roofline * inverse)) ** 2 for t, floor, roofline in points
    )


def _is_triple(point) -> bool:
    """Three numbers in order: a tuple, a list or a NumPy row (not a Sequence to collections.abc),
    never a string or a mapping."""
    if isinstance(point, (str, bytes, Mapping)) or not hasattr(point, "__getitem__"):
        return False
    try:
        return len(point) == 3
    except TypeError:  # a 0-d array
        return False


def fit_fraction(points: Sequence[tuple[float, float, float]]) -> float:
    """η minimising Σ (ln t − ln(floor + roofline/η))² over (measured t, floor, roofline) in seconds:
    a log-spaced scan of 1/η over [0.01, 1000], refined by golden-section search. Each t and roofline
    must be finite and above 0, each floor finite and at least 0. The answer lies in [0.001, 100]:
    one at either end says the best η lies beyond it (times below their floors give 100; a library
    slower than a thousandth of its roofline gives 0.001), not that η is that value."""
    try:
        points = list(points)  # a generator is read once
    except TypeError:
        raise TypeError(
            f"points must be a sequence of (measured s, floor s, roofline s), got {points!r}"
        ) from None
    for i, point in enumerate(points):
        if not _is_triple(point):
            raise TypeError(f"points[{i}] must be (measured s, floor s, roofline s), got {point!r}")
    points = [
        (check_finite(t, f"points[{i}]'s measured seconds", above=0),
         check_finite(floor, f"points[{i}]'s floor seconds", least=0),
         check_finite(roofline, f"points[{i}]'s roofline seconds", above=0))
        for i, (t, floor, roofline) in enumerate(points)
    ]  # fmt: skip
    if not points:
        raise ValueError("no measured times to fit")
    grid = [10 ** (-2 + 5 * i / 500) for i in range(501)]
    best = min(range(len(grid)), key=lambda i: _log_error(grid[i], points))
    lo, hi = math.log(grid[max(best - 1, 0)]), math.log(grid[min(best + 1, len(grid) - 1)])
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(60):
        a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        if _log_error(math.exp(a), points) <= _log_error(math.exp(b), points):
            hi = b
        else:
            lo = a
    return 1.0 / math.exp((lo + hi) / 2)
