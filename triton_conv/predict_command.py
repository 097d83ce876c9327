"""`triton-conv predict`: the model's chosen configs, tiles, waves, times and S(N) for a layer set on
a device, ideal and, with `--fit`, calibrated to a software stack from one or two measured batch
sizes. Everything it prints is a prediction, and says so; a calibration it cannot trust (measurements
no run could have made, a fit that does not give them back) is refused, not printed.
"""

from __future__ import annotations

import math

SLOWEST_BATCH_S = 86_400.0  # a measured batch time above a day is a unit slip, not a network


def cmd_predict(args) -> int:
    try:
        return _predict(args)
    except ValueError as error:  # an unknown device, layer set or dtype; measurements it cannot fit
        raise SystemExit(f"triton-conv predict: {error}") from None


def _refuse_unit_slips(measured: dict) -> None:
    for batch, seconds in sorted(measured.items()):
        if seconds > SLOWEST_BATCH_S:  # near a float's range, the tables printed inf
            raise ValueError(
                f"--fit {batch}={seconds:g}: more than a day for one batch; a measurement in other units?"
            )


def _refuse_what_no_gpu_measured(terms, measured: dict, layers, args, device) -> None:
    """fit_stack reports a fit as found (fitted to published tables, a stack's cost can come out
    below zero); a measurement given here that no run of these layers on this device could have
    made is refused instead of printed as a calibration: faster than every call at the model's
    floor with the work at the datasheet's peak, or growing with the batch more slowly than that."""
    from .model import network_cost

    for batch, seconds in sorted(measured.items()):
        cost = network_cost(layers, args.passes, batch, device, args.dtype)
        least = cost.calls * terms.call_floor_s + cost.serial_s + cost.roofline_s
        if not seconds >= least:
            raise ValueError(
                f"--fit {batch}={seconds:g}: faster than any run of these layers on {device.name} in "
                f"{args.dtype} ({least:.3g} s: every call at its floor, the work at the datasheet peak); "
                "a measurement of another network, device or dtype?"
            )
    if terms.achieved_fraction > 1:
        batches = sorted(measured)
        raise ValueError(
            f"cannot fit: the time grows from N={batches[0]} to N={batches[-1]} as if the work ran at "
            f"{terms.achieved_fraction:.0%} of the datasheet peak"
        )
    _refuse_a_fit_it_cannot_print(terms, measured, layers, args, device)


def _refuse_a_fit_it_cannot_print(terms, measured: dict, layers, args, device) -> None:
    """A calibration is printed only if it gives back what was measured within 2% (an overlapped
    fit cannot when its GPU time at the first point exceeds the measurement) and its stack cost is
    not below zero (times that grow with N faster than the model's roofline, as a server-bound
    curve's do, fit a negative one: T(N) below the model's own at small N, or below zero)."""
    from .model import network_time

    def time_at(batch: int) -> float:
        return network_time(layers, args.passes, batch, device, args.dtype, terms=terms)

    for batch, seconds in sorted(measured.items()):
        if not math.isclose(time_at(batch), seconds, rel_tol=0.02):
            raise ValueError(
                f"cannot fit: calibrated on {sorted(measured)}, the model gives {time_at(batch):.3g} s at "
                f"N={batch}, where {seconds:g} s was measured{' (overlapped)' if args.overlapped else ''}"
            )
    if terms.stack_overhead_s < 0:
        raise ValueError(
            f"cannot fit: its stack cost comes out at {terms.stack_overhead_s * 1e3:.3g} ms, below zero "
            f"(T(1) would be {time_at(1) * 1e3:.3g} ms): these times grow with N faster than the model's "
            "roofline (a server-bound curve?), and such a fit is not printed as a prediction"
        )


def _predict(args) -> int:
    from tabulate import tabulate

    from .devices import get_device
    from .layers import get_layer_set
    from .model import DEFAULT_TERMS, batching_knee, fit_stack, network_time, predict

    device, layers = get_device(args.device), get_layer_set(args.layers)
    calibrations = {"ideal": DEFAULT_TERMS}
    if args.overlapped and not args.fit:
        raise ValueError("--overlapped says how a calibrated stack composes: give it with --fit")
    if args.fit:  # fitted first: measurements it cannot use stop the command before any table
        measured = dict(args.fit)
        if len(measured) < len(args.fit):
            raise ValueError(f"--fit gives a batch size twice: {[f'{n}={t}' for n, t in args.fit]}")
        _refuse_unit_slips(measured)
        try:
            calibrations["calibrated"] = fit_stack(layers, args.passes, device, args.dtype, measured,
                                                   overlapped=args.overlapped)  # fmt: skip
        except (ZeroDivisionError, OverflowError):  # times too far apart for a float's precision
            raise ValueError(f"cannot fit {sorted(measured.items())}: the times are too far apart") from None
        _refuse_what_no_gpu_measured(calibrations["calibrated"], measured, layers, args, device)
    rows = []
    for layer in layers:
        for pass_name in args.passes:
            kernel = layer.kernel_pass(pass_name)  # a transposed layer's passes run its view's kernels
            label = f"{pass_name} (view's {kernel})" if layer.transposed else pass_name
            knee = batching_knee(layer.problem, kernel, None, device, args.dtype)
            one = predict(layer.problem, kernel, None, device, args.dtype)
            for batch in args.batch:
                p = predict(layer.problem.with_batch(batch), kernel, None, device, args.dtype)
                rows.append(
                    [
                        layer.name,
                        label,
                        batch,
                        str(p.config),
                        p.tiles,
                        p.waves,
                        f"{p.time_s * 1e6:.1f}",
                        f"{p.tflops:.1f}",
                        f"{batch * one.time_s / p.time_s:.2f}",
                        knee,
                    ]
                )
    print(f"PREDICTED by the model (not measured): {', '.join(args.passes)}, {args.dtype}, {device.name}; "
          f"each call in the config the model picks; {DEFAULT_TERMS}"
          + ("; a transposed layer's pass runs the kernel of its conv2d view named in brackets"
             if any(layer.transposed for layer in layers) else ""))  # fmt: skip
    headers = ["layer", "pass", "N", "config", "tiles", "waves", "µs", "TFLOP/s", "S(N)", "knee N (128²)"]
    print(tabulate(rows, headers=headers))
    if args.fit:
        print(f"\ncalibrated on {sorted(dict(args.fit))}: {calibrations['calibrated']}")
    training = set(args.passes) != {"fprop"}  # a gradient pass: every activation kept for backward
    gigabytes = lambda batch: _memory_bytes(layers, batch, args.dtype, training) / 1e9
    table = []
    for name, terms in calibrations.items():
        one = network_time(layers, args.passes, 1, device, args.dtype, terms=terms)
        for batch in args.batch:
            seconds = network_time(layers, args.passes, batch, device, args.dtype, terms=terms)
            table.append(
                [
                    name,
                    batch,
                    f"{seconds * 1e3:.3f}",
                    f"{batch / seconds:.0f}",
                    f"{batch * one / seconds:.2f}",
                    f"{gigabytes(batch):.3g}",
                ]
            )
    print(f"\nwhole {args.layers} ({', '.join(args.passes)}), PREDICTED:")
    print(tabulate(table, headers=["terms", "N", "T(N) ms", "images/s", "S(N)", "memory GB"]))
    print(f"memory: {'training' if training else 'inference'}, the model's lower bound (model/memory.py: "
          "the activations a pass keeps, the weights and in training their gradients; no optimizer "
          "state, workspaces or framework)")  # fmt: skip
    too_big = [
        batch for batch in args.batch if _memory_bytes(layers, batch, args.dtype, training) > device.mem_bytes
    ]
    if too_big:
        print(f"N = {', '.join(map(str, too_big))}: more than the {device.mem_bytes / 1e9:.3g} GB of "
              f"{device.name} even at that bound; no run of that batch fits (its times are the "
              "model's arithmetic only)")  # fmt: skip
    return 0


def _memory_bytes(layers, batch: int, dtype: str, training: bool) -> int:
    """model/memory.py's bound for one batch: activations, weights, and in training their gradients."""
    from .model import activation_bytes, weight_bytes

    return activation_bytes(layers, batch, dtype, training) + weight_bytes(layers, dtype) * (1 + training)
