"""Time of one layer, of a whole layer set (a network), and what batching buys.

A layer set is a list of (name, problem at N=1, count) (triton_conv.layers). Its GPU time at batch N is

    G(N) = Σ_layers Σ_passes count · (call_floor_s + roofline(N) / achieved_fraction + serial(N))

with each call in the config choice.best_config picks for that N, and its time on a stack
T(N) = stack_overhead_s + G(N), or max(stack_overhead_s, G(N)) when the stack overlaps (terms.py).
Without a stack's calibration the terms are the defaults: a 5 µs floor, the full roofline, no stack.
In a training step (passes fprop, dgrad, wgrad) the first layer's dgrad is not run: its input is the
network's input, which needs no gradient (`input_dgrad=True` runs it); a first entry that counts
several layers of one shape skips one of their calls. A transposed layer
(layers.TransposedLayer) runs each pass as its conv2d view's pass (ConvProblem's TRANSPOSED_PASSES):
its forward is predicted as that view's dgrad, and batches as dgrad does.

Batching: S(N) = N · T(1) / T(N), how much faster per image a batch of N is than N calls of one
image. The knee is the smallest N whose tiles fill one wave (tiles >= slots) for a given config (the
design card's 128x128 reference tile by default: with the chosen config, split-K fills the slots at
N=1 and the knee says little); None when no N does (wgrad without enough split-K).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import NamedTuple

from ..configs import KernelConfig
from ..devices import DeviceSpec, get_device
from ..problem import TRANSPOSED_PASSES, ConvProblem
from .arguments import check_config, check_count, check_flag, check_layers, check_problem
from .choice import predict
from .resources import check_pass, dtype_kind
from .roofline import reference_config
from .terms import DEFAULT_TERMS, Terms
from .tiles import tile_stats


def layer_time(
    problem: ConvProblem,
    pass_name: str,
    device: DeviceSpec | str,
    dtype="fp16",
    *,
    batch: int | None = None,
    terms: Terms = DEFAULT_TERMS,
    config: KernelConfig | None = None,
    allow_tf32: bool = True,
) -> float:
    """Seconds for one call of `pass_name` on `problem` (at `batch` images if given), in the chosen
    config unless one is given, with the floor and achieved fraction of `terms`."""
    if batch is not None:
        problem = check_problem(problem, batch=False).with_batch(check_count(batch, "batch"))
    return predict(problem, pass_name, config, device, dtype, allow_tf32=allow_tf32, terms=terms).time_s


def _passes(passes) -> tuple[str, ...]:
    try:
        names = (passes,) if isinstance(passes, str) else tuple(passes)
    except TypeError:
        raise TypeError(
            f"passes must be a pass name or a list of them (fprop, dgrad, wgrad), got {passes!r}"
        ) from None
    if not names:
        raise ValueError("passes is empty: name at least one of fprop, dgrad, wgrad")
    for name in names:
        check_pass(name)
    if len(set(names)) < len(names):
        raise ValueError(f"passes names a pass twice, which would count its time twice: {names}")
    return names


class NetworkCost(NamedTuple):
    """What T(N) is made of: kernel calls per step, the sum of their roofline times and the sum of
    their split-K serial sums (seconds; roofline.py)."""

    calls: int
    roofline_s: float
    serial_s: float = 0.0

    def gpu_s(self, terms: Terms = DEFAULT_TERMS) -> float:
        """G = calls · call_floor_s + roofline_s / achieved_fraction + serial_s."""
        return self.calls * terms.call_floor_s + self.roofline_s / terms.achieved_fraction + self.serial_s

    def time_s(self, terms: Terms = DEFAULT_TERMS) -> float:
        """T = stack_overhead_s + G, or max(stack_overhead_s, G) when the stack overlaps."""
        gpu = self.gpu_s(terms)
        return max(terms.stack_overhead_s, gpu) if terms.overlapped else terms.stack_overhead_s + gpu


@functools.lru_cache(maxsize=4096)
def _cost(layers: tuple, passes: tuple, batch: int, device: DeviceSpec, kind: str, allow_tf32: bool,
          input_dgrad: bool, config: KernelConfig | None) -> NetworkCost:  # fmt: skip
    calls, seconds, serial = 0, 0.0, 0.0
    for index, (_, problem, count, transposed) in enumerate(layers):
        for name in passes:
            # Only the network's input needs no gradient: one call of a first entry that counts
            # several layers of its shape (all of them were skipped).
            runs = count - 1 if name == "dgrad" and index == 0 and not input_dgrad else count
            if not runs:
                continue
            name = TRANSPOSED_PASSES[name] if transposed else name
            p = predict(problem.with_batch(batch), name, config, device, kind, allow_tf32=allow_tf32)
            calls += runs
            seconds += runs * p.roofline_s
            serial += runs * p.serial_s
    return NetworkCost(calls, seconds, serial)


def network_cost(
    layers: Iterable[tuple[str, ConvProblem, int]],
    passes,
    batch: int,
    device: DeviceSpec | str,
    dtype="fp16",
    *,
    allow_tf32: bool = True,
    input_dgrad: bool = False,
    config: KernelConfig | None = None,
) -> NetworkCost:
    """The calls, summed roofline and summed serial sums of the layers' passes at `batch` (one pass
    name or several)."""
    kind, _ = dtype_kind(dtype)
    layers, batch, config = tuple(check_layers(layers)), check_count(batch, "batch"), check_config(config)
    allow_tf32, input_dgrad = check_flag(allow_tf32, "allow_tf32"), check_flag(input_dgrad, "input_dgrad")
    cost = _cost(layers, _passes(passes), batch, get_device(device), kind, allow_tf32, input_dgrad, config)
    if not cost.calls:  # a time of 0 s, and S(N) a division by it
        raise ValueError(
            "layers and passes make no kernel call: the only pass is the input gradient of the first "
            "layer, which a network does not compute (input_dgrad=True counts it)"
        )
    return cost


def network_time(layers, passes, batch: int, device, dtype="fp16", *, terms: Terms = DEFAULT_TERMS,
                 allow_tf32: bool = True, input_dgrad: bool = False, config=None) -> float:  # fmt: skip
    """T(N) in seconds (module docstring): `terms` is a stack's calibration or the default terms."""
    if not isinstance(terms, Terms):
        raise TypeError(f"terms must be a Terms, got {terms!r}")
    cost = network_cost(layers, passes, batch, device, dtype, allow_tf32=allow_tf32, input_dgrad=input_dgrad,
                        config=config)  # fmt: skip
    return cost.time_s(terms)


def network_speedup(layers, passes, batch: int, device, dtype="fp16", *, terms: Terms = DEFAULT_TERMS,
                    allow_tf32: bool = True, input_dgrad: bool = False, config=None) -> float:  # fmt: skip
    """S(N) = N · T(1) / T(N) for a whole layer set, with or without a stack's calibration."""
    layers, batch = list(layers), check_count(batch, "batch")
    one, many = (
        network_time(
            layers,
            passes,
            n,
            device,
            dtype,
            terms=terms,
            allow_tf32=allow_tf32,
            input_dgrad=input_dgrad,
            config=config,
        )  # fmt: skip
        for n in (1, batch)
    )
    return batch * one / many


def batching_speedup(
    problem: ConvProblem,
    pass_name: str,
    batch: int,
    config: KernelConfig | None,
    device: DeviceSpec | str,
    dtype="fp16",
    *,
    terms: Terms = DEFAULT_TERMS,
) -> float:
    """S(N) = N · t(1) / t(N) of one layer; config None: each batch in its chosen config."""
    problem, batch = check_problem(problem, batch=False), check_count(batch, "batch")
    one, many = (
        predict(problem.with_batch(n), pass_name, config, device, dtype, terms=terms) for n in (1, batch)
    )
    return batch * one.time_s / many.time_s


def batching_knee(
    problem: ConvProblem,
    pass_name: str,
    config: KernelConfig | None,
    device: DeviceSpec | str,
    dtype="fp16",
    *,
    max_batch: int = 1 << 20,
) -> int | None:
    """The smallest batch whose tiles fill one wave (tiles >= slots) in `config` (None: the reference
    tile); None if none up to max_batch. `problem`'s own batch is ignored. Tiles never shrink as N
    grows, so a bisection finds it."""
    problem, max_batch = check_problem(problem, batch=False), check_count(max_batch, "max_batch")
    device = get_device(device)
    if check_config(config) is None:
        config = reference_config(pass_name, dtype, device)

    def fills(n: int) -> bool:
        return tile_stats(problem.with_batch(n), pass_name, config, device, dtype).fills_wave

    if fills(1):
        return 1
    if not fills(max_batch):
        return None
    lo, hi = 1, max_batch  # fills(lo) is False, fills(hi) is True
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fills(mid) else (mid, hi)
    return hi
