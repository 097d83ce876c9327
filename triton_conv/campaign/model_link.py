"""The campaign's only call site of the batching model (triton_conv.model).

Everything the campaign asks the model goes through the functions below: the predicted time of
one pass with one config (to rank configs, and for the cost model), the model's fields of a timing
record (what the report prints beside a measurement), the predicted batching speedup, and a
training step's time and memory. When the model's API changes, re-point these functions and nothing else in
triton_conv/campaign/ (a test checks that no other campaign module imports the model).
"""

from __future__ import annotations

from ..configs import KernelConfig
from ..devices import DeviceSpec
from ..model import (
    activation_bytes,
    batching_knee,
    batching_speedup,
    network_time,
    predict,
    weight_bytes,
)
from ..problem import ConvProblem
from ..tuning_keys import dtype_name


def predicted_seconds(
    problem: ConvProblem, pass_name: str, config: KernelConfig | None, dtype: str, device: DeviceSpec
) -> float:
    """The model's time of one launch of `pass_name` with `config` (None: the model's own default);
    inf when the config cannot run on `device`."""
    try:
        return predict(problem, pass_name, config, device, _kind(dtype)).time_s
    except ValueError:
        return float("inf")


def record_fields(
    problem: ConvProblem, pass_name: str, dtype: str, device: DeviceSpec, config: KernelConfig | None
) -> dict:
    """tiles, waves and the 'model' dict of a pass record, as bench/harness.model_info writes them, so
    the report (triton_conv.report.measured) reads campaign and sweep records alike."""
    kind = _kind(dtype)
    try:
        prediction = predict(problem, pass_name, config, device, kind)
    except ValueError:  # a config the model's device cannot run: the model's own config instead
        config, prediction = None, predict(problem, pass_name, None, device, kind)
    stats = prediction.stats
    model = {
        "device": device.name,
        "config": f"{stats.block_m}x{stats.block_n} split {stats.split_k}",
        "tiles": prediction.tiles,
        "slots": prediction.slots,
        "waves": prediction.waves,
        "wave_efficiency": prediction.wave_efficiency,
        "tile_efficiency": prediction.tile_efficiency,
        "bound": prediction.bound,
        "seconds": prediction.time_s,
        "tflops": prediction.tflops,
        "knee": batching_knee(problem, pass_name, config, device, kind, max_batch=4096),
        "efficiency": prediction.efficiency,
    }
    return {"tiles": prediction.tiles, "waves": prediction.waves, "model": model}


def speedup(problem: ConvProblem, batch: int, dtype: str, device: DeviceSpec) -> float:
    """The model's S(N) = N·t(1)/t(N) of fprop with its own config."""
    return batching_speedup(problem.with_batch(1), "fprop", batch, None, device, _kind(dtype))


def training_fields(layers, batch: int, dtype: str, device: DeviceSpec) -> dict:
    """The model's view of a training step at `batch`: its convolutions' time (three passes of every
    layer), the activations it keeps and the weights' bytes."""
    seconds = network_time(layers, ("fprop", "dgrad", "wgrad"), batch, device, _kind(dtype))
    return {
        "model": {"seconds": seconds},
        "model_activation_bytes": activation_bytes(layers, batch, _kind(dtype), training=True),
        "model_weight_bytes": weight_bytes(layers, _kind(dtype)),
    }


def _kind(dtype) -> str:
    return dtype if isinstance(dtype, str) else dtype_name(dtype)
