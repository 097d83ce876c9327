"""What the roofline leaves out, as three named numbers with units (`Terms`).

The roofline of one call (roofline.py) is the time an ideal kernel would take: every slot of the GPU
computing at the datasheet peak, every byte moved once at the datasheet bandwidth. Real libraries and
the software stacks around them are slower in three ways the model names and nothing else:

call_floor_s (seconds per kernel call)
    The least time any call takes, however little work it has: launching the kernel, filling the
    operand pipeline before the first multiply, writing the last tile back. Added to every call's
    roofline time (a call with no work takes exactly the floor). The default, CALL_FLOOR_S = 5 µs,
    is an assumption of the order of a back-to-back kernel launch, not a measurement; DeepBench's
    cuDNN calls on a V100 never took less than 12 µs (notes/published/, table P6 of notes/batching.md).

achieved_fraction (dimensionless, 0 < η <= 1, per device and dtype)
    The fraction of the roofline a real library reaches once tiles and waves are accounted for: its
    compute and memory terms both run at η times the datasheet rates (split-K's serial sum of
    partial tiles, a latency measured as one, is not scaled: roofline.py). The model's choice of
    config (choice.py) is made once, at η = 1, so that it is the same for every calibration.

stack_overhead_s (seconds per inference, independent of the batch)
    What a software stack spends per call of the network beyond its convolution kernels' floors and
    roofline time: framework dispatch on the host, copies, and the non-convolution layers as far as
    their cost does not grow with the batch. Added once to a network's time (network.py).

A whole network on a stack then takes, with G(N) = Σ_calls (call_floor_s + roofline_i(N) /
achieved_fraction + serial_i(N)) the GPU's time (serial_i: the call's split-K serial sum),
    T(N) = stack_overhead_s + G(N)            (serial: the stack's cost adds to the GPU's), or
    T(N) = max(stack_overhead_s, G(N))        (overlapped: the host dispatches asynchronously and
                                               the GPU works while it does).
`overlapped` says which; it is a property of how a stack runs, not a fitted number. Either way two
measured batch sizes determine the two unknowns (calibration.fit_stack) and the rest of the curve is a
prediction.
"""

from __future__ import annotations

from dataclasses import dataclass

from .arguments import check_finite, check_flag

CALL_FLOOR_S = 5e-6  # seconds per kernel call: an assumed launch-and-ramp time (see above)
MOST_SECONDS = 86400.0  # a day: more than any call's floor or any stack's cost per inference
LEAST_FRACTION = 1e-6  # of the roofline: fitted fractions lie between 0.04 and 1.74 (batching.md)


@dataclass(frozen=True)
class Terms:
    """The model's three named terms (see the module docstring); the defaults are the ideal model
    with an assumed 5 µs floor per call: the datasheet roofline, no stack."""

    call_floor_s: float = CALL_FLOOR_S
    achieved_fraction: float = 1.0
    stack_overhead_s: float = 0.0
    overlapped: bool = False  # T = max(stack, GPU) instead of stack + GPU (see the module docstring)

    def __post_init__(self):  # a fitted stack overhead may be negative (calibration.py)
        object.__setattr__(self, "overlapped", check_flag(self.overlapped, "overlapped"))  # "False" was True
        # Finite, and within bounds no call or stack comes near, so that no sum or quotient of them
        # overflows (a 1e307 s floor made S(N) NaN, a fraction of 1e-320 infinite times).
        # Each kept as the checked float: a tensor, numpy scalar, Decimal or Fraction came back out of
        # every time computed with it (a tensor with a grad_fn), or failed later without a name.
        checked = {
            "call_floor_s": check_finite(self.call_floor_s, "call_floor_s", least=0, most=MOST_SECONDS),
            "achieved_fraction": check_finite(
                self.achieved_fraction, "achieved_fraction", least=LEAST_FRACTION, most=1 / LEAST_FRACTION
            ),
            "stack_overhead_s": check_finite(
                self.stack_overhead_s, "stack_overhead_s", least=-MOST_SECONDS, most=MOST_SECONDS
            ),
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    def __str__(self) -> str:
        return (
            f"floor {self.call_floor_s * 1e6:.1f} µs per call, {self.achieved_fraction:.1%} of the "
            f"roofline, stack {self.stack_overhead_s * 1e3:.2f} ms per inference"
            + (" (overlapped)" if self.overlapped else "")
        )


DEFAULT_TERMS = Terms()
NO_FLOOR = Terms(call_floor_s=0.0)  # isolates the tile and wave effects from the cost of a call
