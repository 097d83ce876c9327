"""What the benchmark suite runs: the default sweep (slices of layer sets x batch sizes x dtypes x
passes x implementations, most telling first), the wide one, and the tiny problems of the CPU check.
The session's mode and the environment variables that shape the sweep: bench/settings.py."""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass, replace

from triton_conv.benchmarking import BENCH_PASSES
from triton_conv.layers import get_layer_set
from triton_conv.problem import ConvProblem

from .settings import MODE, WIDE, env_list

SETS = ("quantization_probes", "resnet50", "resnet50_megapixel")
# Layer sets of transposed convolutions (bench/bench_transposed.py: against cuDNN's conv_transpose2d).
TRANSPOSED_SETS = ("unet_decoder",)
RESNET50_LAYERS = ("conv1", "layer1.0.conv3", "layer2.0.conv2", "layer3.0.downsample.0", "layer4.0.conv3")
MEGAPIXEL_LAYERS = ("conv1", "layer1.0.conv2", "layer4.1.conv2")
# The CPU check's layer of each set (shrunk): a 3x3, the 7x7 stride-2 stem, a 3x3 stride-2 (dgrad phases).
SMOKE_LAYERS = {"quantization_probes": 0, "resnet50": 0, "resnet50_megapixel": 6}
WIDE_BATCHES = (1, 2, 4, 8, 16, 32, 33, 34, 48, 64, 128, 256)
TWO = ("triton-conv", "cudnn")
ALL_IMPLS = ("triton-conv", "cudnn", "inductor")


# --- cases ----------------------------------------------------------------------------------------
def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", text).strip("_")


@dataclass(frozen=True)
class PassCase:
    """One pass of one layer at one batch size with one implementation."""

    priority: int
    layer_set: str
    layer: str
    problem: ConvProblem  # at the benchmark's batch size
    dtype: str
    layout: str  # "channels_last" or "nchw"
    pass_name: str
    impl: str

    @property
    def group(self) -> str:
        return f"{self.layer_set} {self.pass_name} {self.dtype} {self.layout}"

    @property
    def id(self) -> str:
        return (f"{self.layer_set}-{_slug(self.layer)}-N{self.problem.batch}-{self.dtype}-{self.layout}-"
                f"{self.pass_name}-{self.impl}")  # fmt: skip


@dataclass(frozen=True)
class BatchingCase:
    """fprop of one layer over N images: one batch of N, or N launches of one image each."""

    priority: int
    layer_set: str
    layer: str
    problem: ConvProblem  # at N
    dtype: str
    impl: str
    how: str  # "batch" or "one-at-a-time"

    @property
    def id(self) -> str:
        return (
            f"{self.layer_set}-{_slug(self.layer)}-N{self.problem.batch}-{self.dtype}-{self.impl}-{self.how}"
        )


@dataclass(frozen=True)
class TrainingCase:
    """A ResNet-50 training step (forward + backward) on N images, as `micro` micro-batches whose
    gradients accumulate (micro == N: one real batch)."""

    priority: int
    batch: int
    micro: int
    dtype: str
    impl: str
    image: int = 224
    width: int = 64
    blocks: tuple[int, ...] = (3, 4, 6, 3)

    @property
    def accumulates(self) -> bool:
        return self.micro < self.batch

    @property
    def id(self) -> str:
        return f"resnet50-{self.image}px-N{self.batch}-micro{self.micro}-{self.dtype}-{self.impl}"


@dataclass(frozen=True)
class PeakCase:
    priority: int
    dtype: str
    size: int

    @property
    def id(self) -> str:
        return f"matmul-{self.size}-{self.dtype}"


@dataclass(frozen=True)
class Slice:
    """A block of the sweep: layers of one set x batch sizes x passes x dtypes x impls x layouts."""

    priority: int
    layer_set: str
    layers: tuple[str, ...] | None  # None: every layer of the set
    batches: tuple[int, ...]
    passes: tuple[str, ...] = BENCH_PASSES
    dtypes: tuple[str, ...] = ("fp16",)
    impls: tuple[str, ...] = TWO
    layouts: tuple[str, ...] = ("channels_last",)


DEFAULT_SLICES = (
    Slice(10, "quantization_probes", None, (1, 2, 4, 8, 16, 32, 33, 34, 64, 128, 256), passes=("fprop",)),
    Slice(30, "quantization_probes", None, (1, 8, 32, 128), passes=("dgrad", "wgrad", "fwd+bwd")),
    Slice(40, "quantization_probes", None, (1, 32, 128), passes=("fprop",), impls=("inductor",)),
    Slice(41, "quantization_probes", None, (32,), passes=("dgrad", "wgrad"), impls=("inductor",)),
    Slice(60, "resnet50", RESNET50_LAYERS, (1, 32, 128), passes=("fprop", "dgrad", "wgrad")),
    Slice(70, "resnet50_megapixel", MEGAPIXEL_LAYERS, (1, 4), passes=("fprop", "dgrad", "wgrad")),
    Slice(80, "quantization_probes", None, (1, 32, 128), passes=("fprop",), dtypes=("bf16", "fp32")),
)
WIDE_SLICES = tuple(
    Slice(10 * (i + 1), name, None, WIDE_BATCHES if name != "resnet50_megapixel" else WIDE_BATCHES[:6],
          dtypes=("fp16", "bf16", "fp32"), impls=ALL_IMPLS, layouts=("channels_last", "nchw"))
    for i, name in enumerate(SETS)
)  # fmt: skip


def _overridden(piece: Slice) -> Slice:
    changes = {
        field: value
        for field, value in (
            ("batches", env_list("TRITON_CONV_BENCH_BATCHES", int)),
            ("dtypes", env_list("TRITON_CONV_BENCH_DTYPES")),
            ("layouts", env_list("TRITON_CONV_BENCH_LAYOUTS")),
            ("impls", env_list("TRITON_CONV_BENCH_IMPLS")),
        )
        if value
    }
    return replace(piece, **changes)


def _wanted_sets() -> tuple[str, ...]:
    return env_list("TRITON_CONV_BENCH_SETS") or SETS + TRANSPOSED_SETS


def _shrunk(problem: ConvProblem) -> ConvProblem:
    """A CPU-sized copy of a layer (2 images, at most 8 channels and 9x9 pixels), same filter geometry."""
    c, k = min(problem.in_channels, 8), min(problem.out_channels, 8)
    h, w = min(problem.height, 9), min(problem.width, 9)
    return ConvProblem.from_shapes((2, c, h, w), (k, c, problem.kernel_h, problem.kernel_w),
                                   problem.stride, problem.pad_top, problem.dilation)  # fmt: skip


def pass_cases() -> list[PassCase]:
    if MODE != "gpu":  # the CPU check: each set's first layer, shrunk; the peer on the first set only
        cases = []
        for i, name in enumerate(SETS):
            layer = get_layer_set(name)[SMOKE_LAYERS[name]]
            impls = ALL_IMPLS if i == 0 else TWO
            cases += [PassCase(i, name, layer.name, _shrunk(layer.problem), "fp32", "channels_last", p, impl)
                      for p in BENCH_PASSES for impl in impls]  # fmt: skip
        return cases
    cases: dict[str, PassCase] = {}
    for piece in map(_overridden, WIDE_SLICES if WIDE else DEFAULT_SLICES):
        if piece.layer_set not in _wanted_sets():
            continue
        layers = [
            la for la in get_layer_set(piece.layer_set) if piece.layers is None or la.name in piece.layers
        ]
        grid = itertools.product(
            layers, piece.batches, piece.dtypes, piece.layouts, piece.passes, piece.impls
        )
        for layer, n, dtype, layout, pass_name, impl in grid:
            problem = layer.problem.with_batch(n)
            case = PassCase(
                piece.priority, piece.layer_set, layer.name, problem, dtype, layout, pass_name, impl
            )
            cases.setdefault(case.id, case)
    return list(cases.values())


def _shrunk_transposed(view: ConvProblem) -> ConvProblem:
    """A CPU-sized copy of a transposed layer's view (2 images, at most 8 channels, a 4x4 input, the
    same filter geometry)."""
    c_in, c_out = min(view.out_channels, 8), min(view.in_channels, 8)
    x_shape = (2, c_in, min(view.out_height, 4), min(view.out_width, 4))
    w_shape = (c_in, c_out, view.kernel_h, view.kernel_w)
    return ConvProblem.from_transposed(x_shape, w_shape, **view.transposed_arguments())


# The decoder's cases are PassCases whose problem is a transposed layer's conv2d view and whose
# pass_name is the transposed convolution's pass (its forward runs the view's dgrad).
DECODER_SLICES = (Slice(100, "unet_decoder", None, (1, 8, 32)),)
WIDE_DECODER_SLICES = (Slice(100, "unet_decoder", None, WIDE_BATCHES, dtypes=("fp16", "bf16", "fp32"),
                             layouts=("channels_last", "nchw")),)  # fmt: skip
SMOKE_TRANSPOSED_LAYER = -1  # LinkNet's 3x3 stride-2 output_padding-1 up-convolution (phases of 1, 2, 4 taps)


def transposed_cases() -> list[PassCase]:
    """Each pass of each transposed layer against cuDNN's ConvTranspose2d (no Inductor peer: its conv
    templates do not cover transposed convolutions)."""
    if MODE != "gpu":
        layer = get_layer_set("unet_decoder")[SMOKE_TRANSPOSED_LAYER]
        view = _shrunk_transposed(layer.problem)
        return [PassCase(0, "unet_decoder", layer.name, view, "fp32", "channels_last", p, impl)
                for p in BENCH_PASSES for impl in TWO]  # fmt: skip
    cases: dict[str, PassCase] = {}
    for piece in map(_overridden, WIDE_DECODER_SLICES if WIDE else DECODER_SLICES):
        if piece.layer_set not in _wanted_sets():
            continue
        grid = itertools.product(get_layer_set(piece.layer_set), piece.batches, piece.dtypes, piece.layouts,
                                 piece.passes, [i for i in piece.impls if i != "inductor"])  # fmt: skip
        for layer, n, dtype, layout, pass_name, impl in grid:
            problem = layer.problem.with_batch(n)
            case = PassCase(
                piece.priority, piece.layer_set, layer.name, problem, dtype, layout, pass_name, impl
            )
            cases.setdefault(case.id, case)
    return list(cases.values())


def batching_cases() -> list[BatchingCase]:
    probes = get_layer_set("quantization_probes")
    if MODE != "gpu":
        layer = probes[0]
        return [BatchingCase(0, "quantization_probes", layer.name, _shrunk(layer.problem), "fp32", impl, how)
                for impl in TWO for how in ("batch", "one-at-a-time")]  # fmt: skip
    if "quantization_probes" not in _wanted_sets():
        return []
    batches = env_list("TRITON_CONV_BENCH_BATCHES", int) or ((8, 32, 128) if WIDE else (8, 32))
    grid = itertools.product(probes, batches, _eager_impls(), ("batch", "one-at-a-time"))
    return [
        BatchingCase(20, "quantization_probes", layer.name, layer.problem.with_batch(n), "fp16", impl, how)
        for layer, n, impl, how in grid
    ]


TINY_NETWORK = {"image": 16, "width": 4, "blocks": (1,)}  # the CPU check's one-block ResNet


def _eager_impls() -> list[str]:
    """The implementations a whole network runs with (the peer compiles layers, not networks here)."""
    return [i for i in (env_list("TRITON_CONV_BENCH_IMPLS") or TWO) if i != "inductor"]


def training_cases() -> list[TrainingCase]:
    """Plain training steps at several N: time and peak memory against the batch size."""
    if MODE != "gpu":
        return [TrainingCase(0, 2, 2, "fp32", impl, **TINY_NETWORK) for impl in TWO]
    if "resnet50" not in _wanted_sets():
        return []
    impls = _eager_impls()
    dtypes = env_list("TRITON_CONV_BENCH_DTYPES") or (("fp16", "bf16", "fp32") if WIDE else ("fp16",))
    steps = (1, 2, 4, 8, 16, 32, 64, 128, 256) if WIDE else (1, 8, 32, 64, 128)
    return [TrainingCase(50, n, n, d, i) for d in dtypes for i in impls for n in steps]


def accumulation_cases() -> list[TrainingCase]:
    """One optimizer step's gradients over 32 images: one real batch, or micro-batches accumulated."""
    if MODE != "gpu":
        return [TrainingCase(0, 2, m, "fp32", impl, **TINY_NETWORK) for impl in TWO for m in (2, 1)]
    if "resnet50" not in _wanted_sets():
        return []
    return [TrainingCase(55, 32, m, "fp16", i) for i in _eager_impls() for m in (32, 8, 1)]


def peak_cases() -> list[PeakCase]:
    if MODE != "gpu":
        return [PeakCase(0, "fp32", 64)]
    return [PeakCase(0, d, 8192) for d in ("bf16", "fp16", "fp32")]


# Parts of the default sweep by priority, so that it can run as several commands of under 10 minutes
# (TRITON_CONV_BENCH_PART=fprop, then backward, peer, training, layers, dtypes: one JSON each; the report
# merges a GPU's JSONs). Unset: the whole sweep.
PARTS = {
    "fprop": (0, 29),  # the matmul peak, the probes' fprop over N = 1..256, one batch against N images
    "backward": (30, 39),  # the probes' dgrad, wgrad and fwd+bwd
    "peer": (40, 49),  # Inductor's Triton template on the probes
    "training": (50, 59),  # ResNet-50 training steps and gradient accumulation
    "layers": (60, 79),  # ResNet-50 layers at 224x224 and 1920x1080
    "dtypes": (80, 99),  # the probes in bf16 and fp32
    "decoder": (100, 109),  # the U-Net-style decoder's transposed convolutions against cuDNN's
}


def in_part(cases_: list) -> list:
    part = os.environ.get("TRITON_CONV_BENCH_PART", "").strip()
    if not part or MODE != "gpu":
        return cases_
    if part not in PARTS:
        raise ValueError(f"TRITON_CONV_BENCH_PART must be one of {', '.join(PARTS)}, got {part!r}")
    low, high = PARTS[part]
    return [case for case in cases_ if low <= case.priority <= high]


PASS_CASES = in_part(pass_cases())
TRANSPOSED_CASES = in_part(transposed_cases())
BATCHING_CASES = in_part(batching_cases())
TRAINING_CASES = in_part(training_cases())
ACCUMULATION_CASES = in_part(accumulation_cases())
PEAK_CASES = in_part(peak_cases())
CASES = {
    f"{kind}-{case.id}": case
    for kind, cases in (("pass", PASS_CASES), ("transposed", TRANSPOSED_CASES), ("batching", BATCHING_CASES),
                        ("train", TRAINING_CASES), ("accumulate", ACCUMULATION_CASES), ("peak", PEAK_CASES))
    for case in cases
}  # fmt: skip


def ids(kind: str, cases) -> list[str]:
    """The parameter values of a bench function: keys of CASES (strings keep the JSON readable)."""
    return [f"{kind}-{case.id}" for case in cases]
