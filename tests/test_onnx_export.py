"""torch.onnx.export of a converted model gives the torch model's ONNX graph: ONNX's Conv and
ConvTranspose, no triton_conv op that no ONNX runtime could run. An ONNX model never runs on these
kernels, so while an export runs the package calls torch's convolutions (runtime.exporting_to_onnx);
after it, the kernels again. Both exporters: TorchScript's (dynamo=False, byte for byte the torch
model's file) and torch.export's (dynamo=True, the same graph once the nodes' provenance metadata,
which names each node's module class and source line, is left out)."""

from __future__ import annotations

import copy
import io
import warnings

import pytest
import torch
from torch import nn

import triton_conv
from triton_conv.runtime import exporting_to_onnx

from .conftest import TritonProof

onnx = pytest.importorskip("onnx", reason="torch.onnx.export needs the onnx package")


class Decoder(nn.Module):
    """Every convolution kind and argument the converter handles, through modules and functions."""

    def __init__(self, conv2d=torch.nn.functional.conv2d):
        super().__init__()
        self.conv2d = conv2d
        self.encode = nn.Conv2d(3, 6, 3, stride=2, padding=1, bias=False)
        self.grouped = nn.Conv2d(6, 6, 3, padding="same", dilation=2, groups=3, padding_mode="reflect")
        self.even_same = nn.Conv2d(6, 4, 2, padding="same", padding_mode="circular")
        self.up = nn.ConvTranspose2d(4, 4, 3, stride=2, padding=1, output_padding=1, groups=2)
        self.up_sized = nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1, dilation=2, bias=False)
        self.sequence = nn.Conv1d(3, 5, 3, padding="same", padding_mode="replicate")
        self.head = nn.Parameter(torch.randn(2, 5, 1, 1))

    def forward(self, x):
        y = self.up(self.even_same(self.grouped(self.encode(x))))
        y = self.up_sized(y, output_size=[2 * y.shape[-2] + 1, 2 * y.shape[-1] + 2])
        n, c, h, w = y.shape
        y = self.sequence(y.flatten(2)).view(n, -1, h, w)
        return self.conv2d(y, self.head, None, 1, 0, 1, 1)


def _models():
    torch.manual_seed(0)
    reference = Decoder()
    converted = copy.deepcopy(reference)
    converted.conv2d = triton_conv.conv2d
    left_alone = []
    converted = triton_conv.convert_model(converted, report=left_alone)
    assert not left_alone and isinstance(converted.up_sized, triton_conv.ConvTranspose2d)
    return reference.eval(), converted.eval()


def _torchscript_file(model, x) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model, (x,), buffer, dynamo=False)
    return buffer.getvalue()


def _torch_export_graph(model, x) -> bytes:
    pytest.importorskip("onnxscript", reason="torch.onnx.export(dynamo=True) needs onnxscript")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        proto = torch.onnx.export(model, (x,), dynamo=True, verbose=False).model_proto
    for node in proto.graph.node:  # provenance: module class names and source lines differ
        del node.metadata_props[:]
    del proto.metadata_props[:]
    return proto.SerializeToString()


@pytest.mark.parametrize("exporter", [_torchscript_file, _torch_export_graph], ids=["torchscript", "dynamo"])
def test_converted_model_exports_torchs_onnx_graph(exporter):
    reference, converted = _models()
    x = torch.randn(2, 3, 9, 10)
    exported = exporter(converted, x)
    assert exported == exporter(reference, x)
    graph = onnx.load_from_string(exported).graph
    kinds = [node.op_type for node in graph.node]
    assert kinds.count("Conv") == 5 and kinds.count("ConvTranspose") == 2, kinds
    assert not any(node.domain.startswith("triton_conv") for node in graph.node)

    # Once the export is over, the package's kernels do the work again, and give torch's answer.
    assert not exporting_to_onnx()
    x64 = torch.randn(1, 3, 7, 8, dtype=torch.float64)
    with torch.no_grad(), TritonProof() as proof:
        got = converted.double()(x64)
    assert proof.launches, "the Triton kernels did not run"
    torch.testing.assert_close(got, reference.double()(x64), rtol=1e-12, atol=1e-12)


def test_exporting_flag_asks_torch_where_its_flags_are_elsewhere(monkeypatch):
    """A torch whose exporters keep their flags under other names: torch's own answer decides."""
    import torch.onnx

    monkeypatch.setattr(triton_conv.runtime, "_ONNX_FLAGS", "no.such.module")
    answers = iter([True, False])
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: next(answers))
    assert exporting_to_onnx() and not exporting_to_onnx()
