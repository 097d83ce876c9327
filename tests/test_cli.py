"""The `triton-conv` command: main's parts are the sweep's, and predict's rows for a transposed layer
set name the kernel that runs each pass."""

from __future__ import annotations

import pytest

from bench import cases
from triton_conv import cli
from triton_conv.devices import get_device
from triton_conv.layers import unet_decoder
from triton_conv.model import network_time, predict


def test_main_runs_every_part_of_the_sweep_by_default():
    args = cli.build_parser().parse_args(["main"])
    assert args.parts == list(cases.PARTS) and "decoder" in args.parts


def _rows(out: str) -> dict:
    """{(layer, pass label, N): the row's µs} from predict's per-layer table."""
    rows = {}
    for line in out.splitlines():
        layer = next((la for la in unet_decoder() if line.startswith(la.name)), None)
        if layer is None:
            continue
        cells = line[len(layer.name) :].split()
        label_end = 3 if cells[1].startswith("(") else 1  # 'fprop (view's dgrad)' is three words
        label, n = " ".join(cells[:label_end]), int(cells[label_end])
        rows[(layer.name, label, n)] = float(cells[label_end + 8])  # N, a five-word config, tiles, waves, µs
    return rows


def test_predict_names_the_kernel_a_transposed_layer_runs(capsys):
    args = ["predict", "--layers", "unet_decoder", "--batch", "1", "8", "--passes", "fprop", "dgrad", "wgrad"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("PREDICTED by the model (not measured)")
    assert "whole unet_decoder (fprop, dgrad, wgrad), PREDICTED" in out
    rows = _rows(out)
    device = get_device("H200")
    assert len(rows) == len(unet_decoder()) * 3 * 2
    for layer in unet_decoder():
        for pass_name, kernel in (("fprop", "dgrad"), ("dgrad", "fprop"), ("wgrad", "wgrad")):
            for n in (1, 8):
                seconds = predict(layer.problem.with_batch(n), kernel, None, device, "fp16").time_s
                shown = rows[(layer.name, f"{pass_name} (view's {kernel})", n)]
                assert shown == pytest.approx(seconds * 1e6, abs=0.051)
    # the forward of a 4x4 stride-2 layer is its view's dgrad, not its fprop: the two differ
    pix2pix = next(la for la in unet_decoder() if la.name.startswith("pix2pix.up (256"))
    forward = rows[(pix2pix.name, "fprop (view's dgrad)", 8)]
    assert forward != pytest.approx(
        predict(pix2pix.problem.with_batch(8), "fprop", None, device).time_s * 1e6
    )
    whole = network_time(unet_decoder(), ("fprop", "dgrad", "wgrad"), 8, device)
    assert f"{whole * 1e3:.3f}" in out
