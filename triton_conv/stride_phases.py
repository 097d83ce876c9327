"""dgrad's stride-phase decomposition: the stride_h x stride_w dense sub-problems of the input
gradient, each a stride-1 convolution over the taps that reach it (see kernels/dgrad.py). No
zero-stuffing: every (input row, tap) pair of a phase is a real multiply-add.
"""

from __future__ import annotations

import math
from typing import NamedTuple


class PhaseAxis(NamedTuple):
    """One axis of a dgrad stride phase: input rows first, first + stride, ...; kernel taps tap0,
    tap0 + tap_step, ...

    Input row h = first + i * stride reads output row p = out_first + i - j * out_step for the
    j-th tap r = tap0 + j * tap_step: every (i, j) pair is a real multiply-add, none is a zero.
    """

    first: int  # first input row of the phase
    count: int  # input rows in the phase
    tap0: int  # first kernel tap that reaches this phase (taps >= kernel size when none does)
    tap_step: int
    taps: int  # number of taps that reach the phase
    out_first: int  # output row read by (i=0, tap0)
    out_step: int  # output rows between consecutive taps


def _phase_axis(phase: int, size: int, stride: int, pad: int, dilation: int, kernel: int):
    count = max(0, -(-(size - phase) // stride))
    # Tap r reaches input row h when (h + pad - r * dilation) is a multiple of the stride.
    tap0 = next((r for r in range(kernel) if (phase + pad - r * dilation) % stride == 0), kernel)
    tap_step = stride // math.gcd(stride, dilation)
    taps = 0 if tap0 >= kernel else (kernel - 1 - tap0) // tap_step + 1
    out_first = (phase + pad - tap0 * dilation) // stride if taps else 0
    out_step = tap_step * dilation // stride
    return PhaseAxis(phase, count, tap0, tap_step, taps, out_first, out_step)


class DgradPhase(NamedTuple):
    rows: PhaseAxis
    cols: PhaseAxis


def dgrad_phases(problem) -> list[DgradPhase]:
    """A ConvProblem's phases in row-major order: phase_h outer, phase_w inner. (Untyped: this module
    is below problem.py, which imports it.)"""
    phases = []
    for phase_h in range(problem.stride[0]):
        rows = _phase_axis(
            phase_h, problem.height, problem.stride[0], problem.pad_top, problem.dilation[0], problem.kernel_h
        )
        for phase_w in range(problem.stride[1]):
            cols = _phase_axis(
                phase_w,
                problem.width,
                problem.stride[1],
                problem.pad_left,
                problem.dilation[1],
                problem.kernel_w,
            )
            phases.append(DgradPhase(rows, cols))
    return phases
