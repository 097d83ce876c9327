"""The named layer sets: ResNet-50 v1.5's 53 convolutions at 224x224 and 1920x1080, and the probes.

Expected values are worked out by hand in the comments; they are exact integers.
"""

import pytest

from triton_conv.layers import (
    LAYER_SETS,
    Layer,
    TransposedLayer,
    get_layer_set,
    quantization_probes,
    resnet50,
    resnet50_convs,
    resnet50_megapixel,
    total_convs,
    total_flops,
    unet_decoder,
)
from triton_conv.problem import ConvProblem


def _by_name(layers):
    return {layer.name: layer for layer in layers}


def test_resnet50_has_53_convolutions_merged_into_23_shapes():
    convs = resnet50_convs()
    # stem 1 + stages of (3, 4, 6, 3) bottlenecks x 3 convs + 4 projection shortcuts = 1 + 48 + 4
    assert len(convs) == 53
    assert len({name for name, _ in convs}) == 53
    layers = resnet50()
    assert total_convs(layers) == 53
    assert len(layers) == 23
    assert len({layer.problem for layer in layers}) == 23
    assert all(isinstance(layer, Layer) and layer.problem.batch == 1 for layer in layers)


def test_resnet50_merged_counts():
    layers = _by_name(resnet50())
    # layer1: the 3x3 64->64 at 56x56 appears in all three blocks; the 1x1 64->256 is each block's
    # conv3 and also layer1's projection (stride 1 there), so 4; the 1x1 256->64 is blocks 1 and 2.
    assert layers["layer1.0.conv2"].count == 3
    assert layers["layer1.0.conv3"].count == 4
    assert layers["layer1.1.conv1"].count == 2
    assert "layer1.0.downsample.0" not in layers  # merged into layer1.0.conv3
    # layer3: blocks 1-5 share conv1 (1024->256) and conv2 (3x3 256 at 14x14); conv3 is in all 6.
    assert layers["layer3.1.conv2"].count == 5
    assert layers["layer3.0.conv3"].count == 6
    assert layers["layer4.1.conv2"].count == 2


def test_resnet50_v1_5_geometry():
    layers = _by_name(resnet50())
    stem = layers["conv1"].problem
    assert (stem.kernel_h, stem.stride, stem.pad_top) == (7, (2, 2), 3)
    assert (stem.out_height, stem.out_width) == (112, 112)  # (224 + 6 - 7) // 2 + 1
    # v1.5: the first block of stages 2-4 strides on its 3x3, not on its first 1x1.
    for stage, size in ((2, 56), (3, 28), (4, 14)):
        conv1 = layers[f"layer{stage}.0.conv1"].problem
        conv2 = layers[f"layer{stage}.0.conv2"].problem
        down = layers[f"layer{stage}.0.downsample.0"].problem
        assert conv1.stride == (1, 1) and conv2.stride == (2, 2) and down.stride == (2, 2)
        assert conv2.height == size and conv2.out_height == size // 2
        assert (down.kernel_h, down.out_height) == (1, size // 2)
    # the 3x3 layer of the design card's worked example
    probe = layers["layer3.1.conv2"].problem
    assert probe == ConvProblem.from_shapes((1, 256, 14, 14), (256, 256, 3, 3), padding=1)
    last = layers["layer4.1.conv2"].problem
    assert (last.out_height, last.out_width, last.out_channels) == (7, 7, 512)


def test_resnet50_macs_match_the_known_4_1_giga():
    # Multiply-adds by stage, by hand (P·Q x K x C·R·S):
    #   stem   112·112 x 64 x 3·49                                                  =   118,013,952
    #   layer1 3136x64x64 + 2·3136x256x64 + 3·3136x64x576 + 4·3136x64x256           =   667,942,912
    #   layer2 block 0: 3136x128x256 + 784x128x1152 + 784x512x128 + 784x512x256
    #          = 102,760,448 + 115,605,504 + 51,380,224 + 102,760,448 = 372,506,624
    #          blocks 1-3: 3 x (51,380,224 + 115,605,504 + 51,380,224) = 655,097,856 = 1,027,604,480
    #   layer3 block 0 the same 372,506,624 (each stage halves P·Q, doubles the widths),
    #          blocks 1-5: 5 x 218,365,952 = 1,091,829,760                         = 1,464,336,384
    #   layer4 372,506,624 + 2 x 218,365,952                                         =   809,238,528
    #   total                                                                        = 4,087,136,256
    layers = resnet50()
    assert total_flops(layers) == 2 * 4_087_136_256
    # the figure quoted for ResNet-50 (torchvision: 4.09 GFLOPS, counted as multiply-adds, fc included)
    assert total_flops(layers) / 2 == pytest.approx(4.1e9, rel=0.03)
    assert total_flops(layers, batch=8) == 8 * total_flops(layers)


def test_resnet50_megapixel():
    layers = _by_name(resnet50_megapixel())
    assert total_convs(layers.values()) == 53
    stem = layers["conv1"].problem
    assert (stem.height, stem.width) == (1080, 1920)
    assert (stem.out_height, stem.out_width) == (540, 960)  # (1080 + 6 - 7) // 2 + 1, (1920 - 1) // 2 + 1
    # after the 3x3 s2 p1 max pool: (540 + 2 - 3) // 2 + 1 = 270, (960 - 1) // 2 + 1 = 480; each
    # stride-2 3x3 (pad 1) then gives (n - 1) // 2 + 1: 270 -> 135 -> 68 -> 34, 480 -> 240 -> 120 -> 60
    sizes = [
        (layers[name].problem.out_height, layers[name].problem.out_width)
        for name in ("layer1.0.conv2", "layer2.0.conv2", "layer3.0.conv2", "layer4.0.conv2")
    ]
    assert sizes == [(270, 480), (135, 240), (68, 120), (34, 60)]
    # stem 540·960 x 64 x 147 = 4,877,107,200 MACs, 41.3x the 224 stem (518400 / 12544 output pixels)
    assert layers["conv1"].problem.flops() == 2 * 4_877_107_200
    assert total_flops(list(layers.values())) == 2 * 169_571_696_640


def test_quantization_probes():
    probes = quantization_probes()
    assert len(probes) == 4
    worked, tail, first, wave = (layer.problem for layer in probes)
    assert worked == _by_name(resnet50())["layer3.1.conv2"].problem
    assert worked.gemm("fprop") == (196, 256, 2304)
    assert tail.gemm("fprop") == (49, 512, 4608)
    assert first.gemm("fprop") == (3136, 64, 576)
    # the wave probe: 22·24 = 528 rows per image; 32 images are 16,896 rows = 132 tiles of 128
    assert wave.gemm("fprop") == (528, 128, 1152)
    assert wave.with_batch(32).gemm("fprop").m == 132 * 128


def test_get_layer_set():
    assert set(LAYER_SETS) == {"resnet50", "resnet50_megapixel", "quantization_probes", "unet_decoder"}
    assert get_layer_set("resnet50") == resnet50()
    assert get_layer_set("resnet50_megapixel") == resnet50_megapixel()
    with pytest.raises(ValueError, match="resnet50_megapixel"):
        get_layer_set("resnet101")


def test_unet_decoder_is_torchs_conv_transpose2d_layers():
    """Each layer's conv2d view maps the layer's output shape to its input shape, as torch's
    ConvTranspose2d does; a layer unpacks as (name, problem, count) and runs its forward as dgrad."""
    import torch
    import torch.nn.functional as F

    layers = unet_decoder()
    assert len(layers) == 7 and all(isinstance(layer, TransposedLayer) for layer in layers)
    expected = [  # (C_in, size, C_out, kernel, padding, output_padding) at 256x256
        (1024, 16, 512, 2, 0, 0), (512, 32, 256, 2, 0, 0), (256, 64, 128, 2, 0, 0), (128, 128, 64, 2, 0, 0),
        (1024, 16, 256, 4, 1, 0), (256, 64, 64, 4, 1, 0), (128, 64, 64, 3, 1, 1),
    ]  # fmt: skip
    for layer, (c, size, k, r, pad, out_pad) in zip(layers, expected, strict=True):
        name, problem, count = layer
        x, w = torch.empty(1, c, size, size, device="meta"), torch.empty(c, k, r, r, device="meta")
        y = F.conv_transpose2d(x, w, stride=2, padding=pad, output_padding=out_pad)
        assert problem.output_shape == x.shape and problem.input_shape == y.shape, name
        assert y.shape[-1] == 2 * size and count == 1
        assert layer.kernel_pass("fprop") == "dgrad" and layer.kernel_pass("dgrad") == "fprop"
        assert problem.transposed_gemm("fprop") == problem.gemm("dgrad")
    # A 2x2 stride-2 up-convolution: each output pixel is one product per input channel.
    assert layers[0].problem.flops() == 2 * (32 * 32) * 512 * 1024
    assert not resnet50()[0].transposed and resnet50()[0].kernel_pass("fprop") == "fprop"
