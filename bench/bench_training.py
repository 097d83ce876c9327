"""ResNet-50 training steps: time and peak memory against N (triton-conv's convert_model against cuDNN),
and gradient accumulation over micro-batches against one real batch of the same images."""

import copy
import os

import pytest
import torch

from triton_conv import convert_model
from triton_conv.benchmarking import DTYPES, relative_error, tolerance, without_algorithm_search
from triton_conv.layers import resnet50
from triton_conv.model import activation_bytes, weight_bytes
from triton_conv.report.model import TRAINING, network_seconds
from triton_conv.resnet50 import ResNet50
from triton_conv.runtime import fp32_uses_tf32

from .cases import ACCUMULATION_CASES, CASES, TRAINING_CASES, ids
from .harness import device, model_device, run_benchmark, skip_unless_fits
from .settings import MODE

NETWORK_SLACK = 5  # a network's result may drift this many times a single convolution's tolerance
SEED = int.from_bytes(os.urandom(4), "little")  # fresh each session, printed so that a run can be replayed
print(f"bench_training: torch.manual_seed({SEED})")
CHECKED_BATCH = 8  # on the GPU, larger steps are not re-run in fp64 (time and memory)


def _network(case, frozen_statistics: bool):
    """The case's network in its dtype and channels_last, and an fp64 copy for the check. With frozen
    statistics, BatchNorm uses statistics of one calibration batch, so micro-batches and a real batch
    see the same normalisation and the same gradients (in training mode they would not)."""
    torch.manual_seed(SEED)  # the same network and images for every implementation of this session
    net = ResNet50(case.width, case.blocks).to(device()).to(memory_format=torch.channels_last)
    x = torch.randn(case.batch, 3, case.image, case.image, device=device())
    if frozen_statistics:
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.momentum = None  # a cumulative average: after one batch, that batch's statistics
        with torch.no_grad():
            net(x)
        net.eval()
    reference = copy.deepcopy(net).double()
    dtype = DTYPES[case.dtype]
    net = net.to(dtype)
    if case.impl == "triton-conv":
        left_alone = []
        net = convert_model(net, report=left_alone)
        assert not left_alone, f"convert_model left convolutions on torch's: {left_alone}"
    return net, reference, x.to(dtype).contiguous(memory_format=torch.channels_last), x.double()


def _step(net, x, micro: int):
    """Forward and backward of the sum of the logits over `x`, `micro` images at a time; the
    gradients of the micro-batches add up in .grad as a real batch's would."""
    net.zero_grad(set_to_none=True)
    for chunk in x.split(micro):
        net(chunk).float().sum().backward()
    return net


def _checker(case, reference, x64):
    if MODE == "gpu" and case.batch > CHECKED_BATCH and not case.accumulates:
        return None
    with without_algorithm_search():
        _step(reference, x64, case.batch)
    want = [reference.conv1.weight.grad, reference.fc.weight.grad]
    limit = NETWORK_SLACK * tolerance(case.dtype, MODE == "gpu" and fp32_uses_tf32())

    def check(net):
        error = relative_error([net.conv1.weight.grad, net.fc.weight.grad], want)
        assert error <= limit, f"{case.impl} N={case.batch} micro={case.micro}: gradient error {error:.2e}"

    return check


def _info(case, kind: str) -> dict:
    layers = resnet50(case.image, case.image)
    return {
        "kind": kind,
        "implementation": case.impl,
        "layer_set": "resnet50",
        "layer": f"ResNet-50 {case.image}x{case.image}",
        "N": case.batch,
        "micro_batch": case.micro,
        "dtype": case.dtype,
        "layout": "channels_last",
        "flops": 3 * sum(la.count * la.problem.with_batch(case.batch).flops() for la in layers),
        "model_activation_bytes": activation_bytes(layers, case.batch, case.dtype, training=True),
        "model": {
            "seconds": case.batch
            // case.micro
            * network_seconds(layers, TRAINING, case.micro, model_device(), case.dtype)
        },  # fmt: skip
        "model_weight_bytes": weight_bytes(layers, case.dtype),
    }


def _estimate(case) -> int:
    """Bytes of the step (activations of the larger micro-batch, weights x3) plus the fp64 reference."""
    layers = resnet50(case.image, case.image)
    steps = case.micro if case.accumulates else case.batch
    own = activation_bytes(layers, steps, case.dtype) * 2 + 3 * weight_bytes(layers, case.dtype)
    checked = MODE != "gpu" or case.batch <= CHECKED_BATCH or case.accumulates
    return own + (activation_bytes(layers, case.batch, "fp32") * 4 if checked else 0)


@pytest.mark.parametrize("case_id", ids("train", TRAINING_CASES))
def test_training_step(case_id, benchmark):
    case = CASES[case_id]
    skip_unless_fits(_estimate(case), case.id)
    net, reference, x, x64 = _network(case, frozen_statistics=False)
    check = _checker(case, reference, x64)
    del reference
    run_benchmark(benchmark, lambda: _step(net, x, case.batch), info=_info(case, "training_step"),
                  flops=_info(case, "training_step")["flops"], check=check, dtype=case.dtype)  # fmt: skip


@pytest.mark.parametrize("case_id", ids("accumulate", ACCUMULATION_CASES))
def test_gradient_accumulation(case_id, benchmark):
    case = CASES[case_id]
    skip_unless_fits(_estimate(case), case.id)
    net, reference, x, x64 = _network(case, frozen_statistics=True)
    check = _checker(case, reference, x64)
    del reference
    info = _info(case, "grad_accumulation")
    run_benchmark(benchmark, lambda: _step(net, x, case.micro), info=info, flops=info["flops"], check=check,
                  dtype=case.dtype)  # fmt: skip
