"""A timer for tuning tests that does not run the pass it is given: it scores the config instead,
so that which config wins, and how many were timed, are known in advance."""

from __future__ import annotations

from triton_conv.configs import KernelConfig


def score(c: KernelConfig) -> float:
    """FakeTimer's milliseconds: small tiles, then few warps and small splits, win."""
    return 1.0 + c.block_m * c.block_n / 1e4 + c.block_k / 1e6 + c.num_warps / 1e8 + c.split_k / 1e10


class FakeTimer:
    """Does not run the pass: `score(config)` milliseconds, and a count of the configs timed."""

    def __init__(self):
        self.calls = 0

    def __call__(self, fn):
        if not hasattr(fn, "config"):  # the cuDNN baseline (torch's convolution here): run it
            fn()
            return 1.0
        self.calls += 1
        return score(fn.config)
