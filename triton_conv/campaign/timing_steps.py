"""The timed steps: per (layer, N, pass) the candidates, then triton-conv's op with the winner and cuDNN
(and Inductor's template for the peer items), the batching curve, the 1920x1080 layer, the decoder's
transposed convolutions (the same steps on their views' kernels), and the converted ResNet-50
training step against torch's."""

from __future__ import annotations

import argparse
import time
from functools import partial

import torch

from .. import choices, training_check
from ..benchmarking import images_one_at_a_time, in_turn, input_sets, relative_error, tolerance
from ..layers import resnet50
from ..timers import l2_multiple
from .limits import ItemTimeout, time_limit
from .model_link import record_fields, speedup, training_fields
from .records import TRAINING_TIMER, add_record, layer_index, pass_info
from .runners import (
    launch_with_config,
    make_inputs,
    op_channels_last,
    op_tuning_key,
    pass_binder,
    reference_result,
)
from .spec import TF32
from .timing import DEVICE_TIMER, Measurement, measure


def _measure(run, fn, eager: bool = True) -> Measurement:
    return measure(
        fn, rounds=run.spec.rounds, min_round_s=run.spec.min_round_s, on_gpu=run.on_gpu, eager=eager
    )


def _record_name(run, item, impl: str) -> str:
    """bench/'s case names: set-layer-N-dtype-layout-pass-implementation."""
    n, dtype = item.problem.batch, run.spec.dtype
    return f"{item.layer_set}-{item.layer}-N{n}-{dtype}-channels_last-{item.pass_name}-{impl}"


def _record_group(run, item) -> str:
    return f"{item.layer_set} {item.pass_name} {run.spec.dtype} channels_last"


def _checked_call(fn, want, limit: float, what: str) -> float:
    """Call once (warm-up: compiles, tunes, cuDNN's search) and check against the reference."""
    got = fn()
    if isinstance(got, list):
        got = torch.cat(got)
    error = relative_error(got, want)
    if not error <= limit:
        raise AssertionError(f"{what}: relative error {error:.3g} > {limit:g} against torch in float64")
    return error


def _input_sets(run, item, tensors: dict) -> list[dict]:
    """`tensors` and as many fresh sets as the pass's reads need to overflow the GPU's L2
    (timers.input_sets; one on a CPU)."""
    make = lambda: make_inputs(item.problem, run.spec.torch_dtype, run.device, item.transposed)
    return input_sets(tensors, make, run.device, item.pass_name)


def nothing_to_time(run, item) -> bool:
    """True, and the item listed as skipped with the reason, when no candidate of it passed the check
    (or it was never checked): said before its inputs are made, so that it costs no time."""
    if run.checked.get(item.id):
        return False
    why = "no candidate passed the check" if item.id in run.checked else _unchecked(run, item)
    run.skip(item.id, why)
    return True


def tune_item(run, item, sets) -> tuple:
    """Time the item's checked candidates (device time); pin the winner for triton-conv's op; one row
    of the autotune tables."""
    configs = run.checked[item.id]
    timed = []
    for config in configs:
        bind = partial(
            launch_with_config, item.pass_name, item.problem, config=config, transposed=item.transposed
        )
        m = _measure(run, in_turn(bind, sets), eager=False)
        timed.append((m.timer != DEVICE_TIMER, m.seconds, config))
    # A candidate whose capture failed holds wall-clock time, its launch cost included: it ranks
    # after every device-timed one, never against it.
    timed.sort(key=lambda entry: entry[:2])
    timings = [(config, seconds) for _, seconds, config in timed]
    winner = timings[0][0]
    channels_last = op_channels_last(item.pass_name, sets[0], item.transposed)
    w = sets[0]["w"]
    choices.pin_config(item.problem, item.kernel_pass, w.dtype, channels_last, w.device, winner)
    return winner, timings


def _unchecked(run, item) -> str:
    """Why an item has no check: the check step's reason for skipping it, or the step's end."""
    skips = run.state["skipped"]
    why = next((s["why"] for s in skips if s["step"] == "check" and s["item"] == item.id), None)
    return f"never checked: {why}" if why else "never checked (the check step ended before it)"


def autotune_row(run, item, tensors, timings, cudnn_s: float | None) -> dict:
    """The fields autotune_markdown.render prints (winner, runner-up, cuDNN, the model's tiles and
    efficiency), and every candidate's time."""
    spec, problem = run.spec, item.problem
    (best, best_s), runner = timings[0], (timings[1] if len(timings) > 1 else (None, None))
    model = record_fields(problem, item.kernel_pass, spec.dtype, spec.device, best)
    index, count = layer_index(item.layer_set, item.layer)
    m, n, k = problem.gemm(item.kernel_pass)
    tflops = problem.flops(item.pass_name) / best_s / 1e12
    peak_tflops = spec.device.peak_flops(spec.dtype) / 1e12
    cudnn_ms = cudnn_s * 1e3 if cudnn_s else None
    return {
        "layer_set": item.layer_set, "layer": item.layer, "layer_index": index, "count": count,
        "batch": problem.batch, "pass": item.pass_name, "dtype": spec.dtype, "layout": "nhwc",
        "gemm": f"{m}×{n}×{k}", "winner": str(best), "winner_split_k": best.split_k,
        "winner_ms": best_s * 1e3, "winner_tflops": tflops, "winner_peak_fraction": tflops / peak_tflops,
        "runner_up": str(runner[0]) if runner[0] else None,
        "runner_up_ms": runner[1] * 1e3 if runner[1] is not None else None,
        "cudnn_ms": cudnn_ms, "cudnn_ratio": cudnn_s / best_s if cudnn_s else None,
        "tiles": model["tiles"], "waves": model["waves"],
        "predicted_efficiency": model["model"]["efficiency"],
        "candidates": len(timings), "timings": [[str(c), s * 1e3] for c, s in timings],
        "key": op_tuning_key(problem, item.pass_name, tensors, item.transposed),
        **({"transposed": True, "kernel_pass": item.kernel_pass} if item.transposed else {}),
        "device": (run.state.get("provenance", {}).get("gpu") or {}).get("name") or str(run.device),
        "model_device": spec.device.name, "timed_on": run.device.type, "step": item.step,
    }  # fmt: skip


def pass_item(run, item) -> bool:
    """One (layer, N, pass): candidates, then triton-conv's op and cuDNN, each checked and timed.
    False when there was nothing to time (no candidate passed the check: listed as skipped)."""
    if nothing_to_time(run, item):
        return False
    spec = run.spec
    tensors = make_inputs(item.problem, spec.torch_dtype, run.device, item.transposed)
    sets = _input_sets(run, item, tensors)
    winner, timings = tune_item(run, item, sets)
    want = reference_result(item.pass_name, item.problem, tensors, item.transposed)
    limit = tolerance(spec.dtype, tf32=TF32)
    seconds = {}
    rotation = {"l2_multiple": l2_multiple(sets, item.pass_name, run.device)}
    for impl in ("triton-conv", "cudnn"):
        bind = pass_binder(impl, item.pass_name, item.problem, on_gpu=run.on_gpu, transposed=item.transposed)
        fn = in_turn(bind, sets)  # the first call runs on `tensors`, whose result is checked
        error = _checked_call(fn, want, limit, f"{item.id} {impl}")
        m = _measure(run, fn)
        config = winner if impl == "triton-conv" else None
        info = {**pass_info(run, item, impl, config, error, limit), **rotation}
        add_record(run, _record_name(run, item, impl), _record_group(run, item), info, m)
        seconds[impl] = (m, config, error)
    run.autotune_rows.append(autotune_row(run, item, tensors, timings, seconds["cudnn"][0].seconds))
    if getattr(item, "one_at_a_time", False):
        _one_at_a_time(run, item, sets, want, limit, seconds, rotation)
    return True


def _one_at_a_time(run, item, sets, want, limit, batch_runs, rotation) -> None:
    """The batch of N against N launches of one image, for triton-conv and cuDNN (kind 'batching'):
    each record with its own config (the pinned winner for triton-conv) and its own check's error."""
    spec, problem = run.spec, item.problem
    model_speedup = speedup(problem, problem.batch, spec.dtype, spec.device)
    for impl in ("triton-conv", "cudnn"):
        if impl == "triton-conv" and run.on_gpu and not _one_image_pinned(run, item, sets[0]):
            run.skip(f"{item.id} one-at-a-time", "triton-conv's N=1 config was never checked and pinned")
            continue
        fn = in_turn(partial(images_one_at_a_time, impl, problem), sets)
        error = _checked_call(fn, want, limit, f"{item.id} {impl} one at a time")
        single = _measure(run, fn)
        batch, config, batch_error = batch_runs[impl]
        for how, m, checked in (("batch", batch, batch_error), ("one-at-a-time", single, error)):
            info = {
                **pass_info(run, item, impl, config, checked, limit), **rotation, "kind": "batching",
                "how": how, "launches": 1 if how == "batch" else problem.batch,
                "model_speedup": model_speedup,
            }  # fmt: skip
            name = f"{item.layer_set}-{item.layer}-N{problem.batch}-{spec.dtype}-{impl}-{how}"
            add_record(run, name, f"batching {spec.dtype}", info, m)


def _one_image_pinned(run, item, tensors: dict) -> bool:
    """Whether the N=1 batching item pinned a checked config for one image of this problem: the
    op would otherwise launch its default config, which no check ran, in the campaign's process (on
    a GPU, where a fault would cost every later step; the tiny CPU spec has no N=1 item)."""
    one = item.problem.with_batch(1)
    channels_last = op_channels_last(item.pass_name, tensors, item.transposed)
    w = tensors["w"]
    return choices.remembered_config(one, item.kernel_pass, w.dtype, channels_last, w.device) is not None


def peer_item(run, item) -> None:
    """Inductor's Triton conv template on one (layer, N), fprop: compile (timed), check, time."""
    spec = run.spec
    tensors = make_inputs(item.problem, spec.torch_dtype, run.device)
    want = reference_result(item.pass_name, item.problem, tensors)
    limit = tolerance(spec.dtype, tf32=TF32)
    started = time.perf_counter()
    bind = pass_binder("inductor", item.pass_name, item.problem, on_gpu=run.on_gpu)
    sets = _input_sets(run, item, tensors)
    fn = in_turn(bind, sets)  # compiled on the first call, the checked one
    error = _checked_call(fn, want, limit, f"{item.id} inductor")
    compile_s = time.perf_counter() - started
    m = _measure(run, fn)
    info = {
        **pass_info(run, item, "inductor", None, error, limit), "compile_seconds": compile_s,
        "l2_multiple": l2_multiple(sets, item.pass_name, run.device),
    }  # fmt: skip
    add_record(run, _record_name(run, item, "inductor"), _record_group(run, item), info, m)
    run.out.log(f"inductor {item.id}: compiled and checked in {compile_s:.1f} s, {m.seconds * 1e6:.1f} µs")


def training_item(run, item) -> None:
    """training_check's comparison at the item's scale: the same weights and data, SGD, bf16 autocast,
    channels_last; triton-conv's configs are those the pass steps pinned (N=32 at full scale); a shape
    they did not tune gets the default config (the campaign runs with TRITON_CONV_AUTOTUNE=0)."""
    t, spec = item.training, run.spec
    args = argparse.Namespace(
        steps=t.warmup + t.steps, batch=t.batch, dtype=spec.dtype, width=t.width, image=t.image,
        blocks=",".join(map(str, t.blocks)), classes=t.classes, lr=0.01, warmup=t.warmup,
        data_batches=2, seed=0, device=run.device.type,
    )  # fmt: skip
    result = training_check.run(args)
    run.out.set("training", result)
    layers = resnet50(t.image, t.image)
    if t.width != 64 or t.blocks != (3, 4, 6, 3):
        layers = []  # a shrunk network: the model's ResNet-50 figures do not apply
    # Three passes of every layer but the stem's input gradient (the images need none), as the model.
    per_layer = [la.count * la.problem.with_batch(t.batch).flops() for la in layers]
    flops = 3 * sum(per_layer) - per_layer[0] if layers else None
    for impl, key in (("cudnn", "torch"), ("triton-conv", "triton-conv")):
        steps = result["runs"][key]["step_seconds"][t.warmup :]
        m = Measurement(steps, 1, TRAINING_TIMER)
        info = {
            "kind": "training_step", "implementation": impl, "layer_set": "resnet50",
            "layer": f"ResNet-50 {t.image}x{t.image}", "N": t.batch, "micro_batch": t.batch,
            "dtype": spec.dtype, "layout": "channels_last", "flops": flops,
            "peak_memory_bytes": result["runs"][key]["peak_step_memory_bytes"],
            **(training_fields(layers, t.batch, spec.dtype, spec.device) if layers else {}),
        }  # fmt: skip
        add_record(
            run, f"resnet50-{t.image}px-N{t.batch}-{spec.dtype}-{impl}", f"training {spec.dtype}", info, m
        )
    run.out.log(f"training: {result['comparison']}")


STOP_WORKERS_S = 20.0  # Inductor's own shutdown waits up to 300 s for its pool's process


def stop_inductor_workers() -> None:
    """Inductor's compile workers (a pool of processes, one per core) outlive the peer step, and one
    that an item's time limit cut short may still be compiling: stopped, they take no core from the
    host-side times (eager, launch overhead) of the steps after. Inductor's shutdown waits for its
    pool's process to end (torch 2.11: up to 300 s, a compile in flight first): past STOP_WORKERS_S
    the process is killed, and the step says so. A private API of torch: a torch without it has
    nothing to stop here."""
    try:
        from torch._inductor import async_compile
    except ImportError:
        return
    shutdown_compile_workers = getattr(async_compile, "shutdown_compile_workers", None)
    if shutdown_compile_workers is None:
        return
    pools = list(getattr(async_compile, "_pool_set", ()))  # to kill, should the shutdown hang
    try:
        with time_limit(STOP_WORKERS_S):
            shutdown_compile_workers()
    except ItemTimeout:
        for pool in pools:
            process = getattr(pool, "process", None)
            if process is not None and process.poll() is None:
                process.kill()
        raise RuntimeError(
            f"Inductor's compile workers had not stopped after {STOP_WORKERS_S:g} s: killed"
        ) from None


def run_all(run) -> None:
    est = run.estimator
    peers = [item for item in run.items["fprop"] if item.peer]
    run.run_step("fprop", run.items["fprop"], pass_item, est.pass_item)
    peers_begun = []  # Inductor's first compile (its worker pool) falls on the first item begun

    def begin_peer(run, item):
        peers_begun.append(item.id)
        return peer_item(run, item)

    run.run_step("peer", peers, begin_peer, lambda item: est.peer_item(item, first=not peers_begun))
    if peers:
        run.guarded("peer", stop_inductor_workers)
    for step in ("dgrad", "wgrad", "batching", "megapixel", "decoder"):
        run.run_step(step, run.items[step], pass_item, est.pass_item)
    run.run_step("training", run.items["training"], training_item, est.training)
