"""The model's answers to the seed texts' claims, as the tables of notes/batching.md (M1..M7).

Everything here is predicted by triton_conv.model, not measured: each call in the config the model
would pick from the package's pruned space (model.choice), the ideal terms (datasheet roofline, a 5 µs
floor per call, no stack; model.terms), the datasheet figures of triton_conv.devices. The batching
knee and M3's wave steps are also shown for the design card's fixed 128x128 tile. A device without
fp16 tensor cores (the GTX 1050) is modelled in fp32, as its readers ran it; the others in fp16.
"""

from __future__ import annotations

import datetime
import math

from .. import __version__
from ..devices import DeviceSpec, get_device
from ..layers import Layer, get_layer_set
from ..model import (
    CALL_FLOOR_S,
    activation_bytes,
    activation_bytes_per_image,
    batching_knee,
    compulsory_bytes,
    max_batch_for_memory,
    network_cost,
    network_time,
    predict,
    reference_config,
    weight_bytes,
)
from .markdown import git_commit, model_fingerprint, replace_section, table

DEFAULT_DEVICES = ("H200", "T4", "GTX 1050")
TRAINING = ("fprop", "dgrad", "wgrad")
SETS = {"224x224": "resnet50", "1920x1080": "resnet50_megapixel"}
WAVE_BATCHES = (16, 17, 18, 32, 33, 34, 48, 50, 64)


def model_dtype(device: DeviceSpec) -> str:
    return "fp16" if device.fp16_tflops else "fp32"


def _predict(problem, pass_name, n, device, dtype, config=None):
    """One call at batch n, in the chosen config unless one is given."""
    return predict(problem.with_batch(n), pass_name, config, device, dtype)


def network_seconds(layers: list[Layer], passes, n: int, device: DeviceSpec, dtype: str) -> float:
    """T(N) of the layers and passes with the ideal terms (the stem's input needs no dgrad)."""
    return network_time(layers, passes, n, device, dtype)


def network_speedup(layers, passes, n, device, dtype) -> float:
    return (
        n
        * network_seconds(layers, passes, 1, device, dtype)
        / network_seconds(layers, passes, n, device, dtype)
    )


def _config_text(config) -> str:
    """BMxBN, and the split when there is one: what distinguishes the chosen configs."""
    return f"{config.block_m}x{config.block_n}" + (f" /{config.split_k}" if config.split_k > 1 else "")


def _three_by_three(layer_set: str) -> list[Layer]:
    return [layer for layer in get_layer_set(layer_set) if layer.problem.kernel_h == 3]


def fill_table(device: DeviceSpec) -> str:
    """M1: the 3x3 layers at N=1: the 128x128 tile's tiles, slots and knee; the chosen config, its
    share of the slots, and S(N) in the chosen configs."""
    dtype, rows = model_dtype(device), []
    for size, layer_set in SETS.items():
        for layer in _three_by_three(layer_set):
            reference = _predict(
                layer.problem, "fprop", 1, device, dtype, reference_config("fprop", dtype, device)
            )
            knee = batching_knee(layer.problem, "fprop", None, device, dtype, max_batch=4096)
            one = _predict(layer.problem, "fprop", 1, device, dtype)
            s8, s32 = (
                n * one.time_s / _predict(layer.problem, "fprop", n, device, dtype).time_s for n in (8, 32)
            )
            p = layer.problem
            rows.append(
                [
                    size,
                    layer.name,
                    f"{p.height}x{p.width}",
                    p.in_channels,
                    p.stride[0],
                    reference.tiles,
                    reference.slots,
                    f"{reference.stats.machine_fraction:.0%}",
                    knee,
                    _config_text(one.config),
                    one.tiles,
                    f"{one.stats.machine_fraction:.0%}",
                    s8,
                    s32,
                ]
            )
    headers = [
        "image",
        "layer",
        "H x W",
        "C=K",
        "stride",
        "128² tiles N=1",
        "128² slots",
        "128² filled",
        "128² knee N",
        "chosen N=1",
        "tiles",
        "filled",
        "S(8)",
        "S(32)",
    ]
    return table(headers, rows)


def network_table(devices) -> str:
    """M2: whole ResNet-50 (convolutions only): time of one image, and S(N) for inference and training."""
    rows = []
    for device in devices:
        dtype = model_dtype(device)
        for size, layer_set in SETS.items():
            layers = get_layer_set(layer_set)
            for kind, passes in (("inference", ("fprop",)), ("training", TRAINING)):
                one = network_seconds(layers, passes, 1, device, dtype)
                calls = network_cost(layers, passes, 1, device, dtype).calls
                batch32 = network_seconds(layers, passes, 32, device, dtype)
                speedups = [network_speedup(layers, passes, n, device, dtype) for n in (2, 8, 32, 128)]
                share = calls * CALL_FLOOR_S / one
                rows.append([device.name, dtype, size, kind, one * 1e3, share, batch32 * 1e3, *speedups])
    headers = ["device", "dtype", "image", "step", "t(1) ms", "floor share t(1)", "t(32) ms", "S(2)", "S(8)",
               "S(32)", "S(128)"]  # fmt: skip
    return table(headers, rows)


def wave_table(devices) -> str:
    """M3: wave quantization of the wave probe (22x24, 128 channels): per-image time around one wave,
    in the 128x128 tile and in the chosen config."""
    probe = get_layer_set("quantization_probes")[3]
    rows = []
    for device in devices:
        dtype = model_dtype(device)
        best = chosen_best = None
        for n in WAVE_BATCHES:
            p = _predict(probe.problem, "fprop", n, device, dtype, reference_config("fprop", dtype, device))
            chosen = _predict(probe.problem, "fprop", n, device, dtype)
            per_image, chosen_per_image = p.time_per_image_s * 1e6, chosen.time_per_image_s * 1e6
            best = per_image if best is None else min(best, per_image)
            chosen_best = chosen_per_image if chosen_best is None else min(chosen_best, chosen_per_image)
            rows.append(
                [
                    device.name,
                    n,
                    p.tiles,
                    p.slots,
                    p.waves,
                    p.wave_efficiency,
                    per_image,
                    per_image / best,
                    _config_text(chosen.config),
                    chosen_per_image,
                    chosen_per_image / chosen_best,
                ]
            )
    headers = [
        "device",
        "N",
        "128² tiles",
        "slots",
        "waves",
        "wave eff.",
        "µs per image",
        "vs best so far",
        "chosen",
        "µs per image",
        "vs best so far",
    ]
    return table(headers, rows)


def _elements(layers: list[Layer]) -> dict:
    one = [layer.problem.with_batch(1) for layer in layers]
    return {
        "largest": max(max(math.prod(p.input_shape), math.prod(p.output_shape)) for p in one),
        "in+out": activation_bytes_per_image(layers, "fp16", training=False) // 2,
        "all outputs": activation_bytes_per_image(layers, "fp16", training=True) // 2,
        "weights": weight_bytes(layers, "fp16") // 2,
        "input image": math.prod(one[0].input_shape),
    }


def activation_table() -> str:
    """M4: activation sizes per image (elements; MB at 1 byte per element, as seed 002 counts, and fp16)."""
    rows = []
    for size, layer_set in SETS.items():
        for what, count in _elements(get_layer_set(layer_set)).items():
            rows.append([size, what, count, count / 1e6, 2 * count / 1e6, 10 * count / 1e6])
    return table(["image", "tensor", "elements", "MB (1 byte)", "MB (fp16)", "x10 images MB (1 byte)"], rows)


def memory_table(devices) -> str:
    """M5: activation memory per image and the largest N that fits each device (fp16)."""
    rows = []
    for device in devices:
        for size, layer_set in SETS.items():
            layers = get_layer_set(layer_set)
            rows.append([device.name, device.mem_bytes / 1e9, size,
                         activation_bytes_per_image(layers, "fp16", True) / 1e6,
                         max_batch_for_memory(layers, device.mem_bytes, True, "fp16"),
                         max_batch_for_memory(layers, device.mem_bytes, False, "fp16")])  # fmt: skip
    headers = [
        "device",
        "memory GB",
        "image",
        "training MB per image",
        "largest N training",
        "largest N inference",
    ]
    return table(headers, rows)


def accumulation_table(devices, images: int = 32) -> str:
    """M6: one update over 32 images, ResNet-50 224, as one batch or as micro-batches accumulated."""
    layers = get_layer_set("resnet50")
    rows = []
    for device in devices:
        dtype = model_dtype(device)
        real = network_seconds(layers, TRAINING, images, device, dtype)
        for micro in (images, 8, 1):
            seconds = images // micro * network_seconds(layers, TRAINING, micro, device, dtype)
            memory = activation_bytes(layers, micro, dtype) + 2 * weight_bytes(layers, dtype)
            rows.append(
                [device.name, dtype, micro, images // micro, seconds * 1e3, seconds / real, memory / 1e6]
            )
    headers = [
        "device",
        "dtype",
        "micro-batch",
        "steps",
        "ms per update",
        "time vs one batch",
        "activations+weights+grads MB",
    ]
    return table(headers, rows)


def bytes_table(devices) -> str:
    """M7: ResNet-50 224 inference: the weights' share of compulsory bytes, and what bounds each layer."""
    layers = get_layer_set("resnet50")
    total = sum(layer.count for layer in layers)
    rows = []
    for device in devices:
        dtype = model_dtype(device)
        for n in (1, 32):
            moved = sum(
                la.count * compulsory_bytes(la.problem.with_batch(n), "fprop", dtype) for la in layers
            )
            bound = [(la.count, _predict(la.problem, "fprop", n, device, dtype)) for la in layers]
            memory = sum(count for count, p in bound if p.bound == "memory")
            rows.append([device.name, n, weight_bytes(layers, dtype) / moved, f"{memory} of {total}",
                         sum(count * p.waves for count, p in bound) / total])  # fmt: skip
    return table(["device", "N", "weights' share of bytes", "memory-bound convs", "mean waves"], rows)


def model_tables(devices=DEFAULT_DEVICES) -> str:
    """Every model table of notes/batching.md, headed M1..M7; a pure function of the model's sources."""
    devices = [get_device(d) for d in devices]
    parts = [f"#### M1. {d.name} ({model_dtype(d)}): the 3x3 layers of ResNet-50 at N=1, and the knee\n\n"
             f"{fill_table(d)}" for d in devices]  # fmt: skip
    parts += [
        "#### M2. Whole ResNet-50 (its 53 convolutions): time and S(N) = N·t(1)/t(N)\n\n"
        + network_table(devices),
        f"#### M3. Wave quantization: the wave probe around a full wave\n\n{wave_table(devices)}",
        f"#### M4. Activation and weight sizes of ResNet-50 (per image)\n\n{activation_table()}",
        f"#### M5. Memory against the batch (fp16; activations a lower bound)\n\n{memory_table(devices)}",
        f"#### M6. Gradient accumulation: one update over 32 images\n\n{accumulation_table(devices)}",
        f"#### M7. What bounds ResNet-50's convolutions (inference)\n\n{bytes_table(devices)}",
    ]
    return "\n\n".join(parts)


def model_provenance(devices=DEFAULT_DEVICES) -> str:
    names = ", ".join(get_device(d).name for d in devices)
    today = datetime.date.today().isoformat()
    return (
        f"**Predicted by the model, not measured.** triton-conv {__version__}, commit {git_commit()}, "
        f"model sources (model/ and report.markdown.MODEL_SOURCES) sha256 {model_fingerprint()}; "
        f"generated {today} by `triton_conv.report.make_model_report`; devices: {names} "
        "(triton_conv.devices, datasheet figures); each call in the config the model picks from the "
        "pruned space, the ideal terms (datasheet roofline, 5 µs floor per call, no stack)."
    )


def make_model_report(devices=DEFAULT_DEVICES, out_path: str = "notes/batching.md") -> str:
    """Write the model's provenance and tables (sections 'model-provenance' and 'model') into
    `out_path`, leaving the hand-written text around them; returns out_path."""
    replace_section(out_path, "model-provenance", model_provenance(devices))
    return replace_section(out_path, "model", model_tables(devices))
