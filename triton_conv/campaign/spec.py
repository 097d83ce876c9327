"""What a campaign measures, item by item, in the order it times them.

`CampaignSpec` names the layers, batch sizes and candidates; `plan_items(spec)` expands it into the
timing steps' items. `h200()` is the headline campaign of one H200 lease; `tiny()` the same steps on
CPU-sized shapes for the interpreter (the CPU test). The configs each item times are chosen here,
before anything runs, so that the compile step knows every kernel variant: pruning's survivors
(pruning.pruned_space) ranked by the model's predicted time, one per tile shape first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..benchmarking import DTYPES
from ..configs import KernelConfig
from ..devices import DeviceSpec, get_device
from ..layers import get_layer_set, network_needs
from ..problem import PASSES, TRANSPOSED_PASSES, ConvProblem
from ..pruning import pruned_space
from .model_link import predicted_seconds

TIMING_STEPS = ("fprop", "dgrad", "wgrad", "batching", "megapixel", "decoder", "training")
# The steps whose items are checked against torch before anything is timed (all but training's).
CHECKED_STEPS = ("fprop", "dgrad", "wgrad", "batching", "megapixel", "decoder")


@dataclass(frozen=True)
class TrainingSpec:
    """A ResNet-50 training step (triton_conv.resnet50), converted against torch's."""

    batch: int = 32
    steps: int = 8  # timed steps of each implementation
    warmup: int = 3  # steps before those (autotuned configs come from the cache; cuDNN searches)
    width: int = 64
    blocks: tuple[int, ...] = (3, 4, 6, 3)
    image: int = 224
    classes: int = 1000


@dataclass(frozen=True)
class CampaignSpec:
    name: str
    dtype: str = "bf16"
    layer_set: str = "resnet50"
    batches: tuple[int, ...] = (1, 8, 32, 128)
    layers: tuple[str, ...] | None = None  # None: every distinct layer of the set
    candidates: int = 3  # configs timed per (layer, N, pass)
    # Inductor's template, fprop: (layer, N), most telling first (its compile is the costly part).
    peer: tuple[tuple[str, int], ...] = ()
    batching_set: str = "quantization_probes"
    batching_layers: tuple[str, ...] = ()
    batching_batches: tuple[int, ...] = ()
    one_at_a_time: tuple[int, ...] = ()  # N launches of one image against one batch of N, at these N
    megapixel_set: str = "resnet50_megapixel"
    megapixel_layer: str = "layer1.0.conv2"
    megapixel_batches: tuple[int, ...] = (1, 8)
    # A transposed layer set (layers.TransposedLayer): its forward, input and weight gradients.
    decoder_set: str = "unet_decoder"
    decoder_layers: tuple[str, ...] | None = None  # None: every layer of the set
    decoder_batches: tuple[int, ...] = (1, 8)
    training: TrainingSpec = field(default_factory=TrainingSpec)
    rounds: int = 10  # timed rounds per measurement
    min_round_s: float = 1e-3  # a round repeats the call until it lasts this long
    model_device: str = "H200"  # the GPU that pruning and the model plan for
    shrink: bool = False  # every layer cut to CPU size (the interpreter)

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def device(self) -> DeviceSpec:
        return get_device(self.model_device)


# The session's TF32 setting (benchmarking.use_comparable_settings): fp32 convolutions run TF32 on a
# GPU, as cuDNN's default. The campaigns time 16-bit dtypes, where it changes nothing; the records
# and the checks' tolerances say it all the same.
TF32 = True


def h200() -> CampaignSpec:
    """The headline measurements of one H200 lease (issue 13)."""
    stride_one_3x3 = ("layer1.0.conv2", "layer2.1.conv2", "layer3.1.conv2", "layer4.1.conv2")
    return CampaignSpec(
        name="h200",
        peer=tuple((layer, 32) for layer in stride_one_3x3)
        + (("conv1", 32), ("layer3.1.conv2", 1), ("layer3.1.conv2", 128), ("layer3.0.conv3", 32)),
        batching_layers=(
            "resnet50.layer1.conv2 (56x56, 64)",
            "resnet50.layer3.conv2 (14x14, 256)",
            "wave probe (22x24, 128)",
        ),
        batching_batches=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 33, 34, 40, 48, 56, 64),
        one_at_a_time=(8, 32),
    )


def tiny() -> CampaignSpec:
    """Every step on CPU-sized shapes, for Triton's interpreter (tests/test_campaign.py)."""
    # Batch sizes 2 and 3 specialise the kernels alike (N=1 would be a third variant of each): six
    # variants to compile, which keeps the CPU test within its minute. fp16, not bf16: Triton 3.6's
    # interpreter cannot build a bf16 constant (wgrad's `tl.full(..., bf16)`); a GPU has no such gap.
    return CampaignSpec(
        name="tiny",
        dtype="fp16",
        batches=(2, 3),
        layers=("layer1.0.conv2",),
        candidates=2,
        peer=(("layer1.0.conv2", 2),),
        batching_layers=("resnet50.layer3.conv2 (14x14, 256)",),  # shrunk, the same shape as above
        batching_batches=(2, 3),
        one_at_a_time=(2,),
        megapixel_batches=(2,),
        decoder_layers=("linknet.up (128->64, 64->128, 3x3 op1)",),  # output_padding: a cropped view
        decoder_batches=(2,),
        training=TrainingSpec(batch=2, steps=1, warmup=1, width=4, blocks=(1,), image=16, classes=10),
        rounds=1,
        min_round_s=0.0,
        shrink=True,
    )


SPECS = {"h200": h200, "tiny": tiny}


# --- items ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PassItem:
    """One pass of one layer at one batch size: the candidates, triton-conv's op, cuDNN, maybe the peer.

    A transposed convolution's item (`transposed`): `problem` is its conv2d view, `pass_name` the
    transposed convolution's pass and `kernel_pass` the view's pass that runs it (its forward is
    the view's dgrad), which the candidates are configs of."""

    step: str
    layer_set: str
    layer: str
    problem: ConvProblem  # at the item's batch size
    pass_name: str
    candidates: tuple[KernelConfig, ...]
    peer: bool = False
    transposed: bool = False

    @property
    def kernel_pass(self) -> str:
        return TRANSPOSED_PASSES[self.pass_name] if self.transposed else self.pass_name

    @property
    def id(self) -> str:
        return f"{self.step}:{self.layer_set}:{self.layer}:N{self.problem.batch}:{self.pass_name}"


@dataclass(frozen=True)
class CurveItem:
    """One point of the batching curve (fprop); with one_at_a_time also N launches of one image."""

    layer_set: str
    layer: str
    problem: ConvProblem
    candidates: tuple[KernelConfig, ...]
    one_at_a_time: bool = False

    step = "batching"
    pass_name = kernel_pass = "fprop"
    peer = transposed = False

    @property
    def id(self) -> str:
        return f"batching:{self.layer}:N{self.problem.batch}"


@dataclass(frozen=True)
class TrainingItem:
    training: TrainingSpec

    step = "training"

    @property
    def id(self) -> str:
        return f"training:resnet50:N{self.training.batch}"


def shrunk(problem: ConvProblem) -> ConvProblem:
    """A CPU-sized copy of a layer: at most 8 channels and 9x9 pixels, the same filter geometry."""
    c, k = min(problem.in_channels, 8), min(problem.out_channels, 8)
    h, w = min(problem.height, 9), min(problem.width, 9)
    return ConvProblem.from_shapes(
        (problem.batch, c, h, w), (k, c, problem.kernel_h, problem.kernel_w), problem.stride,
        problem.pad_top, problem.dilation,
    )  # fmt: skip


def candidates(problem: ConvProblem, pass_name: str, spec: CampaignSpec) -> tuple[KernelConfig, ...]:
    """spec.candidates configs: pruning's survivors ranked by the model's predicted time, taking one
    config per tile shape (BM, BN, split-K) before a second of any shape, since the model cannot tell
    warps and stages apart."""
    space = pruned_space(problem, pass_name, spec.torch_dtype, spec.device)
    ranked = sorted(
        space,
        key=lambda c: (predicted_seconds(problem, pass_name, c, spec.dtype, spec.device), space.index(c)),
    )
    picked: list[KernelConfig] = []
    shapes = set()
    for config in ranked:
        shape = (config.block_m, config.block_n, config.split_k)
        if shape not in shapes and len(picked) < spec.candidates:
            picked.append(config)
            shapes.add(shape)
    picked += [c for c in ranked if c not in picked][: spec.candidates - len(picked)]
    return tuple(picked)


def shrunk_view(view: ConvProblem) -> ConvProblem:
    """The conv2d view of a CPU-sized copy of a transposed layer: at most 8 channels in and out and a
    5x5 input, the same filter, stride, padding and output_padding."""
    arguments = view.transposed_arguments()
    groups = arguments["groups"]
    fewer = lambda channels: max(groups, min(channels, 8) // groups * groups)
    c_in, c_out = fewer(view.out_channels), fewer(view.in_channels)  # the layer's input and output
    h, w = min(view.out_height, 5), min(view.out_width, 5)
    return ConvProblem.from_transposed(
        (view.batch, c_in, h, w), (c_in, c_out // groups, view.kernel_h, view.kernel_w), **arguments
    )


def _layers(layer_set: str, names, spec: CampaignSpec):
    layers = get_layer_set(layer_set)
    if names is not None:
        known = {layer.name: layer for layer in layers}
        missing = [n for n in names if n not in known]
        if missing:
            raise ValueError(f"{layer_set} has no layer {missing}; it has {list(known)}")
        layers = [known[n] for n in names]
    shrink = lambda layer: (shrunk_view if layer.transposed else shrunk)(layer.problem)
    return [(layer.name, shrink(layer) if spec.shrink else layer.problem) for layer in layers]


def pass_items(spec: CampaignSpec, step: str) -> list[PassItem]:
    if step == "megapixel":
        layer_set, names, batches, passes = spec.megapixel_set, (spec.megapixel_layer,), None, None
        batches, passes = spec.megapixel_batches, ("fprop", "dgrad", "wgrad")
    else:
        layer_set, names, batches, passes = spec.layer_set, spec.layers, spec.batches, (step,)
    peer = set(spec.peer) if step == "fprop" else set()
    items = []
    for name, problem in _layers(layer_set, names, spec):
        for n in batches:
            for pass_name in passes:
                if not network_needs(problem, pass_name):
                    continue
                sized = problem.with_batch(n)
                items.append(PassItem(step, layer_set, name, sized, pass_name,
                                      candidates(sized, pass_name, spec), (name, n) in peer))  # fmt: skip
    return items


def curve_items(spec: CampaignSpec) -> list[CurveItem]:
    items = []
    for name, problem in _layers(spec.batching_set, spec.batching_layers, spec):
        for n in spec.batching_batches:
            sized = problem.with_batch(n)
            items.append(CurveItem(spec.batching_set, name, sized, candidates(sized, "fprop", spec),
                                   n in spec.one_at_a_time))  # fmt: skip
    return items


def decoder_items(spec: CampaignSpec) -> list[PassItem]:
    """The transposed layers' three passes at each batch size; candidates are configs of the kernel
    pass of the view that runs each."""
    items = []
    for name, view in _layers(spec.decoder_set, spec.decoder_layers, spec):
        for n in spec.decoder_batches:
            sized = view.with_batch(n)
            for pass_name in PASSES:
                configs = candidates(sized, TRANSPOSED_PASSES[pass_name], spec)
                items.append(PassItem("decoder", spec.decoder_set, name, sized, pass_name, configs,
                                      transposed=True))  # fmt: skip
    return items


def check_order(items: dict[str, list]) -> list:
    """The check step's items: one of each CHECKED_STEPS step in turn, each step's in its own order.
    A check cut short by the budget then leaves every timed step its first items checked, where
    checking step by step would leave the last steps (the batching curve, the megapixel layer, the
    decoder) nothing to time."""
    queues = [list(items[step]) for step in CHECKED_STEPS]
    return [queue[i] for i in range(max(map(len, queues), default=0)) for queue in queues if i < len(queue)]


def plan_items(spec: CampaignSpec) -> dict[str, list]:
    """The timing steps' items, in the order they run (TIMING_STEPS)."""
    items = {
        "fprop": pass_items(spec, "fprop"),
        "dgrad": pass_items(spec, "dgrad"),
        "wgrad": pass_items(spec, "wgrad"),
        "batching": curve_items(spec),
        "megapixel": pass_items(spec, "megapixel"),
        "decoder": decoder_items(spec),
        "training": [TrainingItem(spec.training)],
    }
    return {step: items[step] for step in TIMING_STEPS}
