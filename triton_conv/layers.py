"""Named sets of convolution layers for the model and the benchmarks.

A layer set is a list of `Layer(name, problem, count)`: `problem` is a ConvProblem at batch 1 (use
`problem.with_batch(n)`), `count` how many convolutions of exactly that shape the network runs, and
`name` the torchvision name of the first of them. Identical shapes are merged, in order of first use.
A `TransposedLayer` is a ConvTranspose2d: its problem is the conv2d view (ConvProblem.from_transposed)
and its passes run that view's (`kernel_pass`: its forward is the view's dgrad).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

from .problem import TRANSPOSED_PASSES, ConvProblem


class Layer(NamedTuple):
    name: str
    problem: ConvProblem  # at batch 1
    count: int  # convolutions of this shape in the network

    transposed = False  # a class attribute, not a field: a layer unpacks as (name, problem, count)

    def kernel_pass(self, pass_name: str) -> str:
        """The conv2d pass of `problem` that runs the layer's `pass_name`."""
        return TRANSPOSED_PASSES[pass_name] if self.transposed else pass_name


class TransposedLayer(Layer):
    """A ConvTranspose2d layer: `problem` is its conv2d view, whose dgrad is the layer's forward."""

    __slots__ = ()
    transposed = True


def network_needs(problem: ConvProblem, pass_name: str) -> bool:
    """Whether a network runs this pass of this layer: every pass but the input gradient of a layer
    whose input is an image (4 channels or fewer), which no network asks for."""
    return not (pass_name == "dgrad" and problem.in_channels <= 4)


def _conv(c: int, h: int, w: int, k: int, r: int, stride: int = 1, pad: int = 0) -> ConvProblem:
    return ConvProblem.from_shapes((1, c, h, w), (k, c, r, r), stride=stride, padding=pad)


def _merge(convs: list[tuple[str, ConvProblem]]) -> list[Layer]:
    counts: dict[ConvProblem, int] = {}
    names: dict[ConvProblem, str] = {}
    for name, problem in convs:
        names.setdefault(problem, name)
        counts[problem] = counts.get(problem, 0) + 1
    return [Layer(names[p], p, n) for p, n in counts.items()]


def resnet50_convs(height: int = 224, width: int = 224) -> list[tuple[str, ConvProblem]]:
    """All 53 convolutions of ResNet-50 v1.5 (torchvision's resnet50), in order, unmerged.

    Stem: 7x7 stride 2 pad 3, 3 -> 64, then a 3x3 stride-2 pad-1 max pool. Four stages of
    (3, 4, 6, 3) bottlenecks of width (64, 128, 256, 512): 1x1 -> 3x3 (pad 1) -> 1x1 with 4x expansion.
    v1.5 puts the stride 2 of stages 2-4 on the 3x3 of the first block (v1 had it on the first 1x1);
    the first block of each stage has a 1x1 projection shortcut ('downsample') with the stage's stride.
    """
    convs = []
    stem = _conv(3, height, width, 64, 7, stride=2, pad=3)
    convs.append(("conv1", stem))
    h = (stem.out_height + 2 - 3) // 2 + 1  # max pool 3x3, stride 2, pad 1
    w = (stem.out_width + 2 - 3) // 2 + 1
    channels = 64
    for stage, (planes, blocks, stage_stride) in enumerate(
        ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)), start=1
    ):
        for block in range(blocks):
            stride = stage_stride if block == 0 else 1
            prefix = f"layer{stage}.{block}"
            conv1 = _conv(channels, h, w, planes, 1)
            conv2 = _conv(planes, h, w, planes, 3, stride=stride, pad=1)
            out_h, out_w = conv2.out_height, conv2.out_width
            conv3 = _conv(planes, out_h, out_w, planes * 4, 1)
            convs += [(f"{prefix}.conv1", conv1), (f"{prefix}.conv2", conv2), (f"{prefix}.conv3", conv3)]
            if block == 0:
                downsample = _conv(channels, h, w, planes * 4, 1, stride=stride)
                assert (downsample.out_height, downsample.out_width) == (out_h, out_w)
                convs.append((f"{prefix}.downsample.0", downsample))
            channels, h, w = planes * 4, out_h, out_w
    return convs


def resnet50(height: int = 224, width: int = 224) -> list[Layer]:
    """ResNet-50 v1.5's 53 convolutions at height x width, identical shapes merged (23 layers at 224)."""
    return list(_resnet50_merged(height, width))


@functools.cache
def _resnet50_merged(height: int, width: int) -> tuple[Layer, ...]:
    # The model and the reports ask for the same few sizes thousands of times; the layers are immutable.
    return tuple(_merge(resnet50_convs(height, width)))


def resnet50_megapixel() -> list[Layer]:
    """ResNet-50 on a 1920x1080 (2-megapixel) frame: 41x the pixels, and the activations, of 224x224."""
    return resnet50(1080, 1920)


def quantization_probes() -> list[Layer]:
    """Layers chosen to show tile and wave quantization (numbers for 128x128 tiles, 132 slots: H200).

    - 14x14 3x3 256->256 (ResNet-50 layer3): 196 GEMM rows per image, 2 column tiles: 4 tiles at N=1,
      26 at N=8, 392 at N=128; one wave (132 slots) first fills at N=43.
    - 7x7 3x3 512->512 (ResNet-50 layer4): 49 rows per image, so at N=1 a 128-row tile is 38% used.
    - 56x56 3x3 64->64 (ResNet-50 layer1): 3136 rows, 25 tiles at N=1; 64 channels fill half a
      128-wide tile. A 5-SM GPU is full at N=1.
    - 22x24 3x3 128->128, the wave probe: 528 rows per image, so 32 images are 16896 rows = 132 tiles,
      exactly one wave on 132 slots; 33 or 34 images spill into a second, almost empty, wave.
    """
    return [
        Layer("resnet50.layer3.conv2 (14x14, 256)", _conv(256, 14, 14, 256, 3, pad=1), 1),
        Layer("resnet50.layer4.conv2 (7x7, 512)", _conv(512, 7, 7, 512, 3, pad=1), 1),
        Layer("resnet50.layer1.conv2 (56x56, 64)", _conv(64, 56, 56, 64, 3, pad=1), 1),
        Layer("wave probe (22x24, 128)", _conv(128, 22, 24, 128, 3, pad=1), 1),
    ]


def _up(c: int, size: int, k: int, r: int, pad: int = 0, output_padding: int = 0) -> ConvProblem:
    """The conv2d view of a stride-2 ConvTranspose2d, c -> k channels, size x size -> about twice."""
    return ConvProblem.from_transposed(
        (1, c, size, size), (c, k, r, r), stride=2, padding=pad, output_padding=output_padding
    )


def unet_decoder(size: int = 256) -> list[Layer]:
    """The up-sampling layers of U-Net-style decoders on a size x size image, all ConvTranspose2d
    (TransposedLayer): the forward of each is stride-phase dgrad of its conv2d view.

    - U-Net (Ronneberger et al. 2015, padded as common implementations are): four 2x2 stride-2
      up-convolutions that halve the channels, 1024 -> 512 at size/16 -> size/8, ..., 128 -> 64 at
      size/2 -> size. Stride = kernel: each of the 4 stride phases has one tap, a plain GEMM of
      N·(size/16)² rows and K = 1024 (one image at 256: 256 rows, 2 row tiles of 128 per phase).
    - pix2pix's U-Net generator: 4x4 stride-2 padding-1 (4 taps per phase), with the skip
      concatenation doubling the input channels: 1024 -> 256 at size/16, 256 -> 64 at size/4.
    - LinkNet/ENet-style: 3x3 stride-2 padding-1 output_padding-1 (phases of 1, 2 and 4 taps).
    """
    layers = [
        (f"unet.up{i + 1} ({c}->{c // 2}, {size // 2 ** (4 - i)}->{size // 2 ** (3 - i)}, 2x2)",
         _up(c, size // 2 ** (4 - i), c // 2, 2))
        for i, c in enumerate((1024, 512, 256, 128))
    ] + [
        (f"pix2pix.up (1024->256, {size // 16}->{size // 8}, 4x4)", _up(1024, size // 16, 256, 4, pad=1)),
        (f"pix2pix.up (256->64, {size // 4}->{size // 2}, 4x4)", _up(256, size // 4, 64, 4, pad=1)),
        (f"linknet.up (128->64, {size // 4}->{size // 2}, 3x3 op1)", _up(128, size // 4, 64, 3, 1, 1)),
    ]  # fmt: skip
    return [TransposedLayer(name, problem, 1) for name, problem in layers]


LAYER_SETS: dict[str, Callable[[], list[Layer]]] = {
    "resnet50": resnet50,
    "resnet50_megapixel": resnet50_megapixel,
    "quantization_probes": quantization_probes,
    "unet_decoder": unet_decoder,
}


def get_layer_set(name: str) -> list[Layer]:
    """The layer set called `name` (see LAYER_SETS)."""
    try:
        factory = LAYER_SETS[name]
    except KeyError:
        raise ValueError(f"unknown layer set {name!r}; known sets: {', '.join(LAYER_SETS)}") from None
    return factory()


def total_convs(layers: list[Layer]) -> int:
    return sum(layer.count for layer in layers)


def total_flops(layers: list[Layer], batch: int = 1) -> int:
    """2 x multiply-adds of the forward pass over all the layers' convolutions, at `batch` images."""
    return sum(layer.count * layer.problem.with_batch(batch).flops("fprop") for layer in layers)
