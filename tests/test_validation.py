"""Bad input: a clear error naming the argument (a RuntimeError, as torch's, and a ValueError or
TypeError), before any kernel launches, inputs untouched."""

from __future__ import annotations

import sys
import types
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import triton_conv
from triton_conv import runtime
from triton_conv.launchers.common import launch_counts

from .reference import rel_error


def _args(**over):
    args = dict(
        input=torch.randn(2, 4, 8, 8),
        weight=torch.randn(6, 4, 3, 3),
        bias=torch.randn(6),
        stride=1,
        padding=1,
        dilation=1,
        groups=1,
    )
    args.update(over)
    return args


BAD = {
    "input_rank_2": (_args(input=torch.randn(4, 8)), ValueError, "input"),
    "input_rank_5": (_args(input=torch.randn(1, 2, 4, 8, 8)), ValueError, "input"),
    "weight_rank_3": (_args(weight=torch.randn(6, 4, 3)), ValueError, "weight"),
    "channel_mismatch": (_args(weight=torch.randn(6, 3, 3, 3)), ValueError, "input channels"),
    "groups_not_dividing_input": (
        _args(input=torch.randn(2, 5, 8, 8), weight=torch.randn(6, 5, 3, 3), groups=2),
        ValueError,
        "groups",
    ),
    "groups_not_dividing_output": (
        _args(weight=torch.randn(5, 2, 3, 3), bias=torch.randn(5), groups=2),
        ValueError,
        "groups",
    ),
    "group_channel_mismatch": (_args(weight=torch.randn(6, 4, 3, 3), groups=2), ValueError, "per group"),
    "kernel_too_large": (
        _args(weight=torch.randn(6, 4, 11, 3), padding=0),
        ValueError,
        "larger than the padded input",
    ),
    "zero_stride": (_args(stride=0), ValueError, "stride"),
    "negative_stride": (_args(stride=(1, -2)), ValueError, "stride"),
    "negative_padding": (_args(padding=-1), ValueError, "padding"),
    "negative_height_padding": (_args(padding=(-1, 0)), ValueError, "padding"),
    "negative_width_padding": (_args(padding=(0, -1)), ValueError, "padding"),
    "zero_dilation": (_args(dilation=0), ValueError, "dilation"),
    "zero_groups": (_args(groups=0), ValueError, "groups"),
    "same_with_stride": (_args(padding="same", stride=2), ValueError, "padding='same'"),
    "unknown_padding": (_args(padding="full"), ValueError, "padding"),
    "padding_triple": (_args(padding=(1, 1, 1)), TypeError, "padding"),
    "float_stride": (_args(stride=1.5), TypeError, "stride"),
    # torch refuses a float tensor for an int argument (TypeError), as it does a float: int(2.0)
    # would run it as stride 2.
    "float_tensor_stride": (_args(stride=torch.tensor(2.0)), TypeError, "stride must be an int"),
    # 2**63 is one past int64 (torch: "Overflow when unpacking long long"); let through, it reached
    # the op's SymInt[] schema as a RuntimeError that is not a ValueError, and with_config ran it.
    "stride_past_int64": (_args(stride=2**63), ValueError, "stride=9223372036854775808 is out of range"),
    "integer_input": (
        _args(input=torch.ones(2, 4, 8, 8, dtype=torch.int32)),
        TypeError,
        "input must be float16",
    ),
    # A dtype the kernels do not compute in is also torch's NotImplementedError (bool, float8).
    "bool_input": (_args(input=torch.ones(2, 4, 8, 8, dtype=torch.bool)), NotImplementedError, "input"),
    "float8_weight": (
        _args(weight=torch.randn(6, 4, 3, 3).to(torch.float8_e4m3fn)),
        NotImplementedError,
        "weight must be float16",
    ),
    "complex_bias": (_args(bias=torch.randn(6, dtype=torch.complex64)), TypeError, "bias must be float16"),
    "mismatched_dtypes": (_args(weight=torch.randn(6, 4, 3, 3).half()), TypeError, "weight's dtype"),
    "bias_dtype": (_args(bias=torch.randn(6).double()), TypeError, "bias's dtype"),
    "bias_length": (_args(bias=torch.randn(5)), ValueError, "bias must have 6"),
    "bias_rank": (_args(bias=torch.randn(6, 1)), ValueError, "bias"),
    "input_not_tensor": (_args(input=[[1.0]]), TypeError, "input"),
    "mismatched_devices": (_args(weight=torch.randn(6, 4, 3, 3, device="meta")), RuntimeError, "device"),
}


@pytest.mark.parametrize("case", list(BAD))
@pytest.mark.parametrize("entry", ["conv2d", "conv2d_with_config"])
def test_bad_input(case, entry):
    args, error, words = BAD[case]
    snapshot = {
        k: v.clone() for k, v in args.items() if isinstance(v, torch.Tensor) and v.device.type != "meta"
    }
    before = sum(launch_counts.values())
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")) as caught:
        getattr(triton_conv, entry)(**args)
    assert isinstance(caught.value, RuntimeError), "code written around F.conv2d catches RuntimeError"
    assert sum(launch_counts.values()) == before, "a kernel launched before the error"
    for name, value in snapshot.items():
        assert torch.equal(args[name], value), f"{name} was modified"


def test_config_must_be_a_kernel_config():
    with pytest.raises(TypeError, match="config"):
        triton_conv.conv2d_with_config(**_args(), config={"block_m": 64})


def _with_config_sum(**args):
    return triton_conv.conv2d_with_config(**args).sum()


GRADIENT_WANTED = {
    "input_requires_grad": lambda: _with_config_sum(
        **_args(input=torch.randn(2, 4, 8, 8, requires_grad=True))
    ),
    "bias_requires_grad": lambda: _with_config_sum(**_args(bias=torch.randn(6, requires_grad=True))),
    "func_grad_of_weight": lambda: torch.func.grad(lambda w: _with_config_sum(**_args(weight=w)))(
        torch.randn(6, 4, 3, 3)
    ),
    "func_jvp_of_input": lambda: torch.func.jvp(
        lambda x: _with_config_sum(**_args(input=x)), (torch.randn(2, 4, 8, 8),), (torch.randn(2, 4, 8, 8),)
    ),
}


@pytest.mark.parametrize("case", sorted(GRADIENT_WANTED))
def test_with_config_refuses_what_needs_a_gradient(case):
    """The fixed-config entry point runs the forward kernel alone: an output without the gradient
    the caller asked for would be a silent wrong answer, so it is an error before any launch."""
    before = sum(launch_counts.values())
    with pytest.raises(RuntimeError, match="forward kernel only"):
        GRADIENT_WANTED[case]()
    assert sum(launch_counts.values()) == before


def test_with_config_under_vmap_is_refused_before_a_launch():
    """vmap's batched tensors failed inside the launcher ('Cannot access data pointer')."""
    args, before = _args(), sum(launch_counts.values())
    with pytest.raises(triton_conv.ConvArgumentError, match="input is one of a torch.func transform"):
        torch.func.vmap(lambda x: triton_conv.conv2d_with_config(**{**args, "input": x}))(
            torch.randn(3, 2, 4, 8, 8)
        )
    assert sum(launch_counts.values()) == before


def test_with_config_on_meta_tensors_gives_conv2ds_shapes_and_launches_nothing():
    """Meta tensors reached the kernel ('Cannot copy out of meta tensor'), where conv2d gives shapes."""
    before = sum(launch_counts.values())
    meta = {k: v.to("meta") for k, v in _args().items() if isinstance(v, torch.Tensor)}
    args = {**_args(), **meta, "input": meta["input"].to(memory_format=torch.channels_last)}
    got = triton_conv.conv2d_with_config(**args)
    want = triton_conv.conv2d(args["input"], args["weight"], args["bias"], padding=1)
    assert got.device.type == "meta" and (got.shape, got.stride()) == (want.shape, want.stride())
    assert sum(launch_counts.values()) == before


@pytest.mark.interpreter
def test_with_config_runs_without_gradients():
    args = _args(weight=torch.randn(6, 4, 3, 3, requires_grad=True))
    with torch.no_grad():
        got = triton_conv.conv2d_with_config(**args)
    want = torch.nn.functional.conv2d(
        *(t.double() for t in (args["input"], args["weight"], args["bias"])), padding=1
    )
    assert (got.double() - want).abs().max() < 1e-4


def test_with_config_takes_an_unbatched_input_as_conv2d_does():
    """A (C, H, W) input is one image, as conv2d (and torch's) take it: the output is that image's
    (K, P, Q) convolution, computed as a batch of one. float64, against torch's."""
    args = _args(
        input=torch.randn(4, 8, 7, dtype=torch.float64),
        weight=torch.randn(6, 4, 3, 3, dtype=torch.float64),
        bias=torch.randn(6, dtype=torch.float64),
        stride=(2, 1),
    )
    before = launch_counts["fprop_kernel"]
    got = triton_conv.conv2d_with_config(**args)
    assert launch_counts["fprop_kernel"] == before + 1, "the Triton kernel computed it"
    want = torch.nn.functional.conv2d(**args)
    assert got.shape == want.shape == triton_conv.conv2d(**args).shape == (6, 4, 7)
    assert rel_error(got, want) < 1e-12


@pytest.mark.parametrize(
    "field,value",
    [("block_m", 48), ("block_n", 8), ("block_k", 0), ("num_warps", 3), ("split_k", 0),
     ("split_k", 4000), ("num_warps", 64), ("block_m", 2048), ("num_stages", 9), ("group_m", 65)],
)  # fmt: skip
def test_bad_kernel_config(field, value):
    """Out of range is a ConvArgumentError naming the field; a split-K of 4000 had run (114 s under
    the interpreter, a 16 GB workspace at a 64x64 tile on a GPU), 64 warps and 2048-row tiles too."""
    with pytest.raises(triton_conv.ConvArgumentError, match=f"config.{field}"):
        triton_conv.KernelConfig(**{field: value})


@pytest.mark.parametrize("value", [True, 32.0, "32", None])
def test_kernel_config_fields_are_whole_numbers(value):
    """split_k=True ran as a split of 1 (and printed as 'sTrue'); NumPy integers are ints."""
    with pytest.raises(triton_conv.ConvTypeError, match="config.split_k must be an int"):
        triton_conv.KernelConfig(split_k=value)
    config = triton_conv.KernelConfig(block_m=np.int64(32), split_k=np.int32(2))
    assert config == triton_conv.KernelConfig(block_m=32, split_k=2) and type(config.block_m) is int


@pytest.mark.interpreter
def test_cpu_without_interpreter_falls_back_once(monkeypatch):
    """Without the interpreter (the kernels compiled, not interpreted) a CPU tensor runs torch's
    conv2d and says how to get the Triton path."""
    monkeypatch.setattr(runtime, "interpreter_active", lambda: False)
    monkeypatch.setattr(runtime, "_warned_fallback", False)
    args = _args()
    before = sum(launch_counts.values())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = triton_conv.conv2d(**args)
        second = triton_conv.conv2d(**args)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "TRITON_INTERPRET=1" in messages[0]
    assert sum(launch_counts.values()) == before
    expected = torch.nn.functional.conv2d(**args)
    assert torch.equal(first, expected) and torch.equal(second, expected)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="this torch has no torch.distributed")
@pytest.mark.parametrize("op", ["conv2d", "conv1d", "conv_transpose2d"])
@pytest.mark.parametrize("distributed", ["input", "weight"])
def test_a_dtensor_is_refused_naming_it_before_a_launch(op, distributed):
    """torch's convolutions have DTensor sharding rules, these ops none: DTensor's dispatch refused
    them with its own NotImplementedError, naming the op and not the argument. (FSDP2 gives its
    modules plain tensors in the forward, and works.)"""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, distribute_tensor

    spatial = (5,) if op == "conv1d" else (5, 5)
    x, w = torch.randn(2, 3, *spatial), torch.randn(3, 3, *(3,) * len(spatial))
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        mesh = init_device_mesh("cpu", (1,))
        tensors = {"input": x, "weight": w}
        tensors[distributed] = distribute_tensor(tensors[distributed], mesh, [Replicate()])
        before = sum(launch_counts.values())
        with pytest.raises(RuntimeError, match=f"{distributed} is a DTensor") as caught:
            getattr(triton_conv, op)(tensors["input"], tensors["weight"])
        assert isinstance(caught.value, TypeError) and sum(launch_counts.values()) == before
    finally:
        dist.destroy_process_group()


def test_a_module_half_imported_by_another_thread_is_not_read_for_its_class(monkeypatch):
    """While another thread imports DTensor's module (the first torch.compile does), the module is in
    sys.modules without its classes: reading `.DTensor` there raised AttributeError ("partially
    initialized module") out of every convolution. No DTensor can exist yet, so there is nothing to
    refuse."""
    name = "torch.distributed.tensor"
    monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    x, w = torch.randn(2, 3, 5, 5, dtype=torch.float64), torch.randn(4, 3, 3, 3, dtype=torch.float64)
    before = launch_counts["fprop_kernel"]
    out = triton_conv.conv2d(x, w, padding=1)
    assert launch_counts["fprop_kernel"] > before
    assert torch.allclose(out, F.conv2d(x, w, padding=1), rtol=1e-12, atol=1e-12)
