"""The model's public functions refuse the arguments they cannot use with a ValueError (a value out of
range) or a TypeError (a wrong type) that names the argument (triton_conv.model.arguments). They
divided by zero deep inside, failed on a missing attribute, or returned 0, nan, inf or negative
seconds; NumPy and torch integers, which torch accepts as sizes, failed as batch sizes."""

from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest
import torch

from triton_conv.layers import resnet50
from triton_conv.model import (
    Terms,
    activation_bytes,
    batching_knee,
    batching_speedup,
    best_config,
    fit_fraction,
    fit_stack,
    layer_time,
    max_batch_for_memory,
    network_cost,
    network_speedup,
    network_time,
    predict,
    split_sum_s,
)
from triton_conv.problem import ConvProblem

P = ConvProblem.from_shapes((1, 64, 56, 56), (64, 64, 3, 3), padding=1)
EMPTY = ConvProblem.from_shapes((1, 0, 8, 8), (4, 0, 3, 3))  # no input channels: ConvProblem accepts it
LAYERS = resnet50()[:3]
NAN, INF = float("nan"), float("inf")


def _fit(measured, **kwargs):
    return fit_stack(LAYERS, "fprop", "H200", "fp16", measured, **kwargs)


def _case(name, call, error, words):
    return pytest.param(call, error, words, id=name)


CASES = [
    *(_case(f"layer_time batch={n!r}", lambda n=n: layer_time(P, "fprop", "H200", batch=n), error, "batch")
      for n, error in ((-1, ValueError), (0, ValueError), (2.5, TypeError), (NAN, TypeError),
                       ("4", TypeError), (True, TypeError))),
    _case("network_time N=-1", lambda: network_time(LAYERS, "fprop", -1, "H200"), ValueError, "batch"),
    _case("network_speedup N=0", lambda: network_speedup(LAYERS, "fprop", 0, "H200"), ValueError, "batch"),
    _case("batching_speedup N=0", lambda: batching_speedup(P, "fprop", 0, None, "H200"), ValueError, "batch"),
    _case("activation_bytes N=-2", lambda: activation_bytes(LAYERS, -2), ValueError, "batch"),
    _case("activation_bytes N=nan", lambda: activation_bytes(LAYERS, NAN), TypeError, "batch"),
    _case("batching_knee max_batch=0", lambda: batching_knee(P, "fprop", None, "H200", max_batch=0),
          ValueError, "max_batch"),
    _case("problem of batch 0", lambda: predict(P.with_batch(0), "fprop", None, "H200"), ValueError, "batch"),
    _case("no layers", lambda: network_speedup([], "fprop", 8, "H200"), ValueError, "layers"),
    _case("no passes", lambda: network_speedup(LAYERS, [], 8, "H200"), ValueError, "passes"),
    _case("count 0", lambda: network_speedup([LAYERS[0]._replace(count=0)], "fprop", 8, "H200"),
          ValueError, "count"),
    _case("count -3", lambda: network_time([LAYERS[0]._replace(count=-3)], "fprop", 8, "H200"),
          ValueError, "count"),
    _case("network of a C=0 layer", lambda: network_time([("empty", EMPTY, 1)], "fprop", 8, "H200"),
          ValueError, "'empty'"),
    _case("layer_time C=0", lambda: layer_time(EMPTY, "fprop", "H200"), ValueError, "input channels"),
    _case("predict C=0", lambda: predict(EMPTY, "wgrad", None, "H200"), ValueError, "input channels"),
    _case("best_config C=0", lambda: best_config(EMPTY, "dgrad", "H200"), ValueError, "input channels"),
    _case("batching_knee C=0", lambda: batching_knee(EMPTY, "fprop", None, "H200"), ValueError,
          "input channels"),
    _case("predict config='64x64'", lambda: predict(P, "fprop", "64x64", "H200"), TypeError, "config"),
    *(_case(f"fit_stack {m}", lambda m=m: _fit(m), ValueError, words) for m, words in (
        ({1: NAN}, "measured_s[1]"), ({1: INF}, "measured_s[1]"), ({1: -1.0}, "measured_s[1]"),
        ({1: 0.0}, "measured_s[1]"), ({1: 0.01, 2: INF}, "measured_s[2]"),
        ({0: 0.01}, "batch size of measured_s"), ({-1: 0.01}, "batch size of measured_s"))),
    _case("fit_stack of a list", lambda: _fit([(1, 0.01)]), TypeError, "measured_s"),
    _case("fit_stack call_floor_s=inf", lambda: _fit({1: 0.01}, call_floor_s=INF), ValueError,
          "call_floor_s"),
    _case("overlapped fit below the floors", lambda: _fit({1: 1e-6, 2: 2e-6}, overlapped=True), ValueError,
          "N=2"),
    *(_case(f"Terms({field}={value})", lambda f=field, v=value: Terms(**{f: v}), error, field)
      for field, value, error in (
          ("stack_overhead_s", NAN, ValueError), ("stack_overhead_s", INF, ValueError),
          ("call_floor_s", INF, ValueError), ("call_floor_s", -1e-6, ValueError),
          ("achieved_fraction", INF, ValueError), ("achieved_fraction", 0.0, ValueError),
          ("call_floor_s", "5e-6", TypeError))),
    *(_case(f"fit_fraction {point}", lambda p=point: fit_fraction([(1e-3, 1e-5, 1e-4), p]), ValueError, words)
      for point, words in (
          ((INF, 5e-6, 1e-4), "points[1]'s measured"), ((0.0, 5e-6, 1e-4), "points[1]'s measured"),
          ((1e-3, NAN, 1e-4), "points[1]'s floor"), ((1e-3, -1.0, 1e-4), "points[1]'s floor"),
          ((1e-3, 5e-6, NAN), "points[1]'s roofline"))),
    *(_case(f"max_batch_for_memory budget={b}", lambda b=b: max_batch_for_memory(LAYERS, b), ValueError,
            "budget_bytes") for b in (INF, NAN, -1, 10**400)),
    # A dtype given by position where the flag stands read as training=True: the fp16 answer.
    _case("max_batch_for_memory training='fp32'", lambda: max_batch_for_memory(LAYERS, 80e9, "fp32"),
          TypeError, "training"),
    _case("activation_bytes training='no'", lambda: activation_bytes(LAYERS, 8, "fp16", "no"), TypeError,
          "training"),
    # Flags given as strings were read as True: "no" fitted an overlapped stack, ran TF32, ...
    _case("fit_stack overlapped='no'", lambda: _fit({1: 0.01, 8: 0.02}, overlapped="no"), TypeError,
          "overlapped"),
    _case("Terms overlapped='False'", lambda: Terms(overlapped="False"), TypeError, "overlapped"),
    _case("predict allow_tf32='no'", lambda: predict(P, "fprop", None, "A100", "fp32", allow_tf32="no"),
          TypeError, "allow_tf32"),
    _case("best_config row_spans='False'", lambda: best_config(P, "fprop", "H200", row_spans="False"),
          TypeError, "row_spans"),
    _case("network_time input_dgrad=1", lambda: network_time(LAYERS, "dgrad", 8, "H200", input_dgrad=1),
          TypeError, "input_dgrad"),
    _case("max_batch_for_memory include_weights='no'",
          lambda: max_batch_for_memory(LAYERS, 80e9, include_weights="no"), TypeError, "include_weights"),
    # A pass named twice counted twice (the CLI refused it); a list of passes as one pass_name, a
    # bare layer, a batch past int64 and a fit past a float's precision failed deep inside.
    _case("network_time fprop twice", lambda: network_time(LAYERS, ("fprop", "fprop"), 1, "H200"),
          ValueError, "twice"),
    _case("layer_time pass list", lambda: layer_time(P, ["fprop"], "H200"), TypeError, "pass_name"),
    _case("best_config pass list", lambda: best_config(P, ["fprop"], "H200"), TypeError, "pass_name"),
    _case("network_time of a bare layer", lambda: network_time(LAYERS[0], "fprop", 1, "H200"), TypeError,
          "layers[0]"),
    _case("network_time of (name, problem)", lambda: network_time([("a", P)], "fprop", 1, "H200"),
          TypeError, "layers[0]"),
    _case("layer_time batch=10**400", lambda: layer_time(P, "fprop", "H200", batch=10**400), ValueError,
          "batch must be at most"),
    _case("fit_stack 5e-324", lambda: _fit({1: 5e-324, 2**40: 1e-323}), ValueError, "cannot fit measured_s"),
    _case("fit_stack 1e308", lambda: _fit({1: 1e-3, 2: 1e308}), ValueError, "cannot fit measured_s"),
    _case("fit_fraction of a flat point", lambda: fit_fraction((1e-5, 0, 1e-6)), TypeError, "points[0]"),
    _case("fit_fraction of a pair", lambda: fit_fraction([(1e-5, 1e-6)]), TypeError, "points[0]"),
    _case("negative output", lambda: layer_time(ConvProblem(1, 64, 2, 2, 64, 5, 5), "fprop", "H200"),
          ValueError, "larger than the padded input"),
    _case("negative height", lambda: layer_time(ConvProblem(1, 64, -5, 56, 64, 3, 3), "fprop", "H200"),
          ValueError, "input must have 4 non-negative dimensions"),
    # The dataclass takes any field; the model ran torch's checks on a few, and gave negative FLOPs
    # for a negative kernel or groups, a time for groups that divide nothing, ZeroDivisionError for
    # a zero stride or groups.
    *(_case(label, lambda fields=fields: layer_time(ConvProblem(1, 64, 56, 56, **fields), "fprop", "H200"),
            error, words)
      for label, fields, error, words in [
          ("kernel -1", dict(out_channels=64, kernel_h=-1, kernel_w=3), ValueError, "non-negative"),
          ("kernel 0", dict(out_channels=64, kernel_h=0, kernel_w=3), ValueError, "non-empty kernel"),
          ("K -5", dict(out_channels=-5, kernel_h=3, kernel_w=3), ValueError, "non-negative"),
          ("groups -1", dict(out_channels=64, kernel_h=3, kernel_w=3, groups=-1), ValueError, "groups"),
          ("groups 0", dict(out_channels=64, kernel_h=3, kernel_w=3, groups=0), ValueError, "groups"),
          ("groups 3", dict(out_channels=64, kernel_h=3, kernel_w=3, groups=3), ValueError, "groups=3"),
          ("groups 128", dict(out_channels=64, kernel_h=3, kernel_w=3, groups=128), ValueError, "groups=128"),
          ("dilation 0", dict(out_channels=64, kernel_h=3, kernel_w=3, dilation=(0, 0)), ValueError,
           "dilation must be positive"),
          ("stride 0", dict(out_channels=64, kernel_h=3, kernel_w=3, stride=(0, 1)), ValueError,
           "stride must be positive"),
          ("a float", dict(out_channels=64.0, kernel_h=3, kernel_w=3), TypeError, "must be integers"),
      ]),
    # A layer set whose one pass is the skipped first input gradient: a time of 0 s, S(N) a
    # ZeroDivisionError, a fit that blamed the times. Two keys of one batch size: a fit on one point.
    *(_case(label, call, ValueError, "no kernel call") for label, call in [
        ("network_time of no call", lambda: network_time(resnet50()[:1], "dgrad", 8, "V100")),
        ("network_speedup of no call", lambda: network_speedup(resnet50()[:1], "dgrad", 8, "V100")),
        ("fit_stack of no call", lambda: fit_stack(resnet50()[:1], "dgrad", "V100", "fp16", {1: 0.01})),
    ]),
    _case("fit_stack of 1 and tensor(1)", lambda: _fit({1: 0.0128, torch.tensor(1): 0.04}), ValueError,
          "one batch size twice"),
    _case("fit_fraction(None)", lambda: fit_fraction(None), TypeError, "points must be a sequence"),
    # Finite terms whose sums overflowed: S(N) NaN, times infinite.
    _case("Terms floor 1e307", lambda: Terms(call_floor_s=1e307), ValueError, "call_floor_s"),
    _case("Terms fraction 1e-320", lambda: Terms(achieved_fraction=1e-320), ValueError, "achieved_fraction"),
    _case("Terms stack 1e308", lambda: Terms(stack_overhead_s=1e308), ValueError, "stack_overhead_s"),
    _case("network_time passes None", lambda: network_time(LAYERS, None, 1, "H200"), TypeError, "passes"),
    _case("network_time passes 5", lambda: network_time(LAYERS, 5, 1, "H200"), TypeError, "passes"),
    # An AttributeError ('split_k') that named nothing the caller gave.
    *(_case(f"split_sum_s({label})", lambda v=value: split_sum_s(v), TypeError, "must be a KernelConfig")
      for label, value in [("None", None), ("a string", "64x64x32"), ("a dict", {"split_k": 2})]),
]  # fmt: skip


def test_numpy_element_sizes_and_rows_are_taken_as_python_ones():
    assert layer_time(P, "fprop", "H200", np.int64(2)) == layer_time(P, "fprop", "H200", 2)
    rows = [[1e-3, 5e-6, 5e-4], [2e-3, 5e-6, 9e-4]]
    assert fit_fraction(np.array(rows)) == fit_fraction(rows) == fit_fraction([np.array(r) for r in rows])


def test_a_problem_of_numpy_integers_is_the_problem_of_ints_in_either_order():
    """NumPy fields (a stride given as one int too) are converted before anything is cached: the
    model's answer does not depend on which form it saw first (an lru_cache keyed on equal values
    once made the NumPy form fail or pass by call order)."""
    fields = (1, 64, 56, 56, 64, 3, 3)
    with_numpy = ConvProblem(*map(np.int64, fields), stride=np.int64(2), groups=np.int64(1))
    with_ints = ConvProblem(*fields, stride=(2, 2))
    from triton_conv.model import arguments, choice

    for first, second in ((with_numpy, with_ints), (with_ints, with_numpy)):
        choice._best.cache_clear()  # each order from empty caches: the first form is the one cached
        arguments._CHECKED.clear()
        assert layer_time(first, "fprop", "H200") == layer_time(second, "fprop", "H200")
        assert (
            predict(first, "fprop", None, "H200").config == predict(with_ints, "fprop", None, "H200").config
        )


@pytest.mark.parametrize(("call", "error", "words"), CASES)
def test_the_model_refuses_an_argument_it_cannot_use_and_names_it(call, error, words):
    with pytest.raises(error) as raised:
        call()
    assert words in str(raised.value)


@pytest.mark.parametrize("integer", [np.int64, np.int32, torch.tensor], ids=["int64", "int32", "torch"])
def test_numpy_and_torch_integers_give_the_numbers_of_python_ints(integer):
    assert layer_time(P, "wgrad", "H200", batch=integer(4)) == layer_time(P, "wgrad", "H200", batch=4)
    for function in (network_time, network_speedup):
        assert function(LAYERS, "fprop", integer(8), "H200") == function(LAYERS, "fprop", 8, "H200")
    eight = batching_speedup(P, "fprop", 8, None, "H200")
    assert batching_speedup(P, "fprop", integer(8), None, "H200") == eight
    assert type(activation_bytes(LAYERS, integer(8))) is int
    assert activation_bytes(LAYERS, integer(8)) == activation_bytes(LAYERS, 8)
    assert _fit({integer(1): 2e-3, integer(8): 5e-3}) == _fit({1: 2e-3, 8: 5e-3})


def test_numpy_bools_are_flags():
    assert max_batch_for_memory(LAYERS, 80e9, np.False_) == max_batch_for_memory(LAYERS, 80e9, False)


def test_a_budget_of_float_bytes_gives_an_int_batch():
    assert max_batch_for_memory(LAYERS, 80e9) == max_batch_for_memory(LAYERS, 80_000_000_000)
    assert type(max_batch_for_memory(LAYERS, 80e9 + 0.5)) is int


def test_a_first_entry_of_several_layers_skips_one_input_gradient():
    """Only the network's input needs no gradient: a first entry counting three layers of one shape
    dropped all three of its dgrads (3 calls where the same layers listed apart make 5)."""
    merged = network_cost([("a", P, 3)], ["fprop", "dgrad"], 8, "H200")
    apart = network_cost([("a", P, 1), ("b", P, 1), ("c", P, 1)], ["fprop", "dgrad"], 8, "H200")
    assert merged.calls == apart.calls == 5
    assert merged.roofline_s == pytest.approx(apart.roofline_s, rel=1e-12)  # summed in another order


def test_the_model_times_the_problem_the_ops_run():
    """A stride past the image: the ops run the canonical problem (one output row); the model counted
    a dgrad at stride 1000 as a million tiles."""
    huge = ConvProblem.from_shapes((1, 64, 56, 56), (64, 64, 3, 3), stride=1000)
    for pass_name in ("fprop", "dgrad", "wgrad"):
        assert layer_time(huge, pass_name, "GTX 1050") == layer_time(huge.canonical(), pass_name, "GTX 1050")
        assert (
            predict(huge, pass_name, None, "H200").tiles
            == predict(huge.canonical(), pass_name, None, "H200").tiles
        )


def test_fit_fraction_reads_a_generator_of_points():
    points = [(3e-5, 5e-6, 1e-5), (6e-5, 5e-6, 2.5e-5)]
    assert fit_fraction(p for p in points) == fit_fraction(points)


@pytest.mark.parametrize(
    "value",
    [torch.tensor(2e-5, requires_grad=True), torch.tensor([2e-5]), np.float32(2e-5), Decimal("0.00002"),
     Fraction(1, 50000)],
    ids=["tensor", "1-element tensor", "numpy", "Decimal", "Fraction"],
)  # fmt: skip
def test_terms_keep_their_numbers_as_floats(value):
    """Terms checked its numbers but kept the caller's objects: a tensor came back out of every
    time computed with it (with a grad_fn), a Decimal failed the first sum without a name."""
    terms = Terms(call_floor_s=value, achieved_fraction=value * 10000, stack_overhead_s=value)
    assert all(
        type(getattr(terms, name)) is float
        for name in ("call_floor_s", "achieved_fraction", "stack_overhead_s")
    )
    assert terms == Terms(
        call_floor_s=float(value), achieved_fraction=float(value * 10000), stack_overhead_s=float(value)
    )
    assert "µs per call" in str(terms)
    assert type(network_time(resnet50(), "fprop", 8, "H200", terms=terms)) is float
    fitted = fit_stack(resnet50(), "fprop", "H200", "fp16", {1: 1e-2, 32: 4e-2}, call_floor_s=value)
    assert type(fitted.call_floor_s) is float and type(fitted.stack_overhead_s) is float


def test_a_meta_tensor_term_is_refused_by_name():
    with pytest.raises(TypeError, match="call_floor_s"):
        Terms(call_floor_s=torch.empty((), device="meta"))
