"""The launchers' per-shape plan cache, the host time per call, and CUDA-graph capture (GPU only)."""

from __future__ import annotations

import statistics
import time

import pytest
import torch

import triton_conv
from triton_conv import KernelConfig
from triton_conv.kernels.fprop import fprop_kernel
from triton_conv.launchers import common, dgrad, dgrad_masked, fprop, wgrad
from triton_conv.problem import ConvProblem

CONFIG = KernelConfig(16, 16, 16)


def _recorded_specs(monkeypatch):
    """Replace Triton's launch by a recorder: the list of LaunchSpecs the launchers built."""
    specs = []
    monkeypatch.setattr(common, "launch", specs.append)
    for module in (fprop, dgrad, wgrad):
        monkeypatch.setattr(module, "launch", specs.append)
    return specs


def _tensors(dtype=torch.float32, channels_last=False):
    layout = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(2, 4, 7, 6, dtype=dtype).contiguous(memory_format=layout)
    w = torch.randn(5, 4, 3, 3, dtype=dtype).contiguous(memory_format=layout)
    return x, w, torch.randn(5, dtype=dtype)


PROBLEM = ConvProblem.from_shapes((2, 4, 7, 6), (5, 4, 3, 3), padding=1)


def _fprop(x, w, b, config=CONFIG, **kwargs):
    fprop.conv2d_fprop(x, w, b, PROBLEM, config, **kwargs)


def test_a_cached_launch_equals_a_fresh_one(monkeypatch):
    specs = _recorded_specs(monkeypatch)
    fprop.plans.clear()
    x, w, b = _tensors()
    _fprop(x, w, b)
    _fprop(x, w, b)
    assert (fprop.plans.misses, fprop.plans.hits) == (1, 1)
    first, second = specs
    assert first.grid == second.grid and first.constexprs == second.constexprs
    assert first.args[:3] == second.args[:3] and first.args[4:] == second.args[4:]  # y is new
    # ... and the uncached spec of the same launch has exactly the cached one's arguments.
    y = second.args[3]
    fresh = fprop.fprop_spec(x, w, b, y, PROBLEM, CONFIG)
    assert fresh.grid == second.grid and fresh.constexprs == second.constexprs
    assert all(a is b or a == b for a, b in zip(fresh.args, second.args, strict=True))


CHANGES = {
    "stride": lambda x, w, b: (x.contiguous(memory_format=torch.channels_last), w, b),
    "zero stride": lambda x, w, b: (x[:1].expand(2, -1, -1, -1), w, b),
    "dtype": lambda x, w, b: (x.double(), w.double(), b.double()),
    "no bias": lambda x, w, b: (x, w, None),
    "weight stride": lambda x, w, b: (x, w.contiguous(memory_format=torch.channels_last), b),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_what_changes_the_launch_misses_the_cache(change, monkeypatch, set_tf32):
    specs = _recorded_specs(monkeypatch)
    set_tf32(False)
    fprop.plans.clear()
    x, w, b = _tensors()
    _fprop(x, w, b)
    _fprop(*CHANGES[change](x, w, b))
    assert (fprop.plans.misses, fprop.plans.hits) == (2, 0)
    # Tensors by what a launch keys on, not their values: tuples compare tensors by ==, and the
    # uninitialised split-K placeholders among the args can hold equal garbage in both launches.
    args = [[(a.dtype, a.shape, a.stride()) if torch.is_tensor(a) else a for a in s.args[4:]] for s in specs]
    assert args[0] != args[1] or specs[0].constexprs != specs[1].constexprs


def test_tf32_setting_config_and_int64_miss_the_cache(monkeypatch, set_tf32):
    specs = _recorded_specs(monkeypatch)
    fprop.plans.clear()
    x, w, b = _tensors()
    set_tf32(False)
    _fprop(x, w, b)
    set_tf32(True)
    _fprop(x, w, b)
    _fprop(x, w, b, force_int64=True)
    _fprop(x, w, b, config=KernelConfig(32, 16, 16))
    assert (fprop.plans.misses, fprop.plans.hits) == (4, 0)
    assert [s.constexprs["INPUT_PRECISION"] for s in specs] == ["ieee", "tf32", "tf32", "tf32"]
    assert [s.constexprs["USE_INT64"] for s in specs] == [False, False, True, False]
    set_tf32(False)
    _fprop(x, w, b)  # back to the first launch: a hit
    assert fprop.plans.hits == 1 and specs[-1].constexprs == specs[0].constexprs


def test_backward_launchers_cache_per_shape(monkeypatch):
    specs = _recorded_specs(monkeypatch)
    dgrad.plans.clear()
    wgrad.plans.clear()
    x, w, _ = _tensors()
    dy = torch.randn(PROBLEM.output_shape)
    for _ in range(2):
        dgrad.conv2d_dgrad(dy, w, PROBLEM, CONFIG, channels_last=False)
        wgrad.conv2d_wgrad(dy, x, PROBLEM, CONFIG, weight_dtype=x.dtype, channels_last=False, need_bias=True)
    wgrad.conv2d_wgrad(dy, x, PROBLEM, CONFIG, weight_dtype=x.dtype, channels_last=False, need_bias=False)
    dgrad.conv2d_dgrad(dy.expand(2, -1, -1, -1)[:, :, :, :], w, PROBLEM, CONFIG, channels_last=True)
    assert (dgrad.plans.misses, dgrad.plans.hits) == (2, 1)
    assert (wgrad.plans.misses, wgrad.plans.hits) == (2, 1)
    assert specs[0].constexprs == specs[2].constexprs and specs[1].constexprs == specs[3].constexprs
    assert specs[4].constexprs["HAS_BIAS"] is False
    with pytest.raises(ValueError, match="wgrad expects"):
        wgrad.conv2d_wgrad(
            dy[:1], x, PROBLEM, CONFIG, weight_dtype=x.dtype, channels_last=False, need_bias=False
        )


def test_cached_launches_compute_the_same_result(triton_only):
    x, w, b = _tensors()
    with triton_only() as proof:
        first = triton_conv.conv2d(x, w, b, padding=1)
        second = triton_conv.conv2d(x, w, b, padding=1)
    assert proof.launches == {"fprop_kernel": 2}
    assert torch.equal(first, second)


def test_validation_memo_still_rejects_bad_arguments():
    x, w, b = _tensors()
    triton_conv.functional.validate(x, w, b, stride=1, padding=1)
    with pytest.raises(TypeError):
        triton_conv.functional.validate(x, w, b, stride=True, padding=1)  # True == 1, still an error
    with pytest.raises(ValueError):
        triton_conv.functional.validate(x, w, b, stride=1, padding=-1)
    assert triton_conv.functional.validate(x, w, b, stride=[1, 1], padding=(1,)) == PROBLEM


def test_a_bool_in_a_tuple_is_refused_after_the_same_call_with_ints():
    """True == 1 and hash(True) == hash(1): a memo keyed on the tuples themselves finds (1, True)
    under the entry of (1, 1) and takes it. A call's answer must not depend on what came before it:
    refused on a fresh memo, so refused once the same call with ints is memoised."""
    x, w, b = _tensors()
    ints = dict(stride=(1, 1), padding=(1, 1), dilation=[1, 1])
    for name, with_a_bool in (("stride", (1, True)), ("padding", (True, 1)), ("dilation", [1, True])):
        assert triton_conv.functional.validate(x, w, b, **ints) == PROBLEM  # memoised
        with pytest.raises(TypeError, match=f"{name} must be an int, got True"):
            triton_conv.functional.validate(x, w, b, **{**ints, name: with_a_bool})


def _layouts() -> list:
    """Tensors whose layouts the output-format rule tells apart, and ones it must not confuse."""
    x = torch.randn(2, 4, 5, 6)
    nhwc = x.contiguous(memory_format=torch.channels_last)
    one_by_one = torch.randn(8, 4, 1, 1).to(memory_format=torch.channels_last)  # strides (4, 1, 4, 4)
    # On a GPU the rule keeps float64 in NCHW whatever the strides: the dtype is part of the key.
    on_gpu = [nhwc.cuda(), nhwc.double().cuda()] if torch.cuda.is_available() else []
    return on_gpu + [
        x, nhwc, nhwc[:, 1:3], nhwc[:, :1], x[:, :1], one_by_one, one_by_one.contiguous(),
        torch.randn(8, 4, 1, 1).contiguous(memory_format=torch.channels_last),  # strides (4, 1, 1, 1)
        torch.randn(8, 4, 2, 2).contiguous(memory_format=torch.channels_last)[:1, :1],
        x.permute(0, 2, 1, 3), x.transpose(2, 3), torch.randn(1, 4, 1, 1).expand(2, 4, 5, 6),
        nhwc.double(), torch.empty(2, 4, 5, 6, device="meta", memory_format=torch.channels_last),
        torch.randn(2, 4, 6),
    ]  # fmt: skip


def test_the_output_layout_memo_answers_as_the_rule(monkeypatch):
    """wants_channels_last memoises its answer by what the rule reads (sizes, strides, dtype, device,
    layout): for every ordered pair of layouts, asked twice and after the memo filled, it answers as
    the rule does; the memo never grows past its bound."""
    from triton_conv import memory_format
    from triton_conv.memo import BoundedMemo

    monkeypatch.setattr(memory_format, "_DECIDED", BoundedMemo(limit=50))
    layouts = _layouts()
    pairs = [(a, b) for a in layouts for b in layouts if a.device == b.device]
    for _ in range(2):
        for pair in pairs:
            assert memory_format.wants_channels_last(*pair) == memory_format._decide_channels_last(pair)
            assert len(memory_format._DECIDED) <= 50
    decided = {memory_format._decide_channels_last((t,)) for t in layouts}
    assert decided == {True, False}  # the sample has both answers


def test_host_time_per_call_stays_small(monkeypatch):
    """conv2d's host path with Triton's launch stubbed out: measured about 100 us per call on a
    2-core development CPU (130 us there before the output-layout memo). The bound is generous
    (1 ms, about 10x) so that a slow or busy machine does not fail it: it catches a launch path that
    has started doing per-call work of another order (re-planning, tuning, a synchronisation)."""
    monkeypatch.setattr(type(fprop_kernel), "__getitem__", lambda self, grid: lambda *a, **k: None)
    x, w, b = _tensors(torch.float16, channels_last=True)
    with torch.no_grad():
        for _ in range(20):
            triton_conv.conv2d(x, w, b, padding=1)
        rounds = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(200):
                triton_conv.conv2d(x, w, b, padding=1)
            rounds.append((time.perf_counter() - start) / 200)
    assert statistics.median(rounds) < 1e-3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_forward_and_backward_replay_in_a_cuda_graph():
    if common.interpreter_active():
        pytest.skip(
            "TRITON_INTERPRET=1 (tests/conftest.py sets it unless told): graphs need compiled kernels; "
            "run `TRITON_INTERPRET=0 pytest tests/test_host_overhead.py` on the GPU"
        )
    torch.manual_seed(0)
    cl = torch.channels_last
    x = torch.randn(1, 32, 14, 14, device="cuda", dtype=torch.float16).contiguous(memory_format=cl)
    w = torch.randn(64, 32, 3, 3, device="cuda", dtype=torch.float16).contiguous(memory_format=cl)
    b = torch.randn(64, device="cuda", dtype=torch.float16)
    dy = torch.randn(1, 64, 14, 14, device="cuda", dtype=torch.float16).contiguous(memory_format=cl)
    x, w, b = (t.requires_grad_() for t in (x, w, b))

    def step():
        y = triton_conv.conv2d(x, w, b, padding=1)
        return (y, *torch.autograd.grad(y, (x, w, b), dy))

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up: compiles and tunes outside the capture
        for _ in range(3):
            eager = step()
    torch.cuda.current_stream().wait_stream(side)
    eager = [t.clone() for t in eager]
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = step()
    with torch.no_grad():
        x.copy_(torch.randn_like(x))
    graph.replay()
    expected = step()  # eager on the new input
    torch.cuda.synchronize()
    for got, want in zip(captured, expected, strict=True):
        torch.testing.assert_close(got, want)  # a stale or mis-captured launch is far off
    assert not all(torch.equal(a, e) for a, e in zip(eager, expected))


def _positional_launch(spec):
    """A launch through `positional_arguments`: on a GPU the compiled kernel's own runner (the JIT's
    binding and cache lookup bypassed, as bench/host_overhead.py times it), under the interpreter
    the kernel called with every parameter positionally."""
    common.launch_counts[spec.kernel.__name__] += 1
    arguments = common.positional_arguments(spec)
    if any(torch.is_tensor(a) and a.is_cuda for a in spec.args):
        options = dict(grid=spec.grid, num_warps=spec.num_warps, num_stages=spec.num_stages)
        compiled = spec.kernel.warmup(*spec.args, **spec.constexprs, **options)
        compiled = compiled.result() if hasattr(compiled, "result") else compiled  # an async compile
        compiled[spec.grid](*arguments)
    else:
        with common._INTERPRETER:
            spec.kernel[spec.grid](*arguments)


@pytest.mark.parametrize("stride", [1, 2])
def test_positional_arguments_launch_what_the_keyword_launch_does(stride, monkeypatch, triton_only):
    """Every pass launched with its parameters in the kernel's order gives the keyword launch's bits:
    the order `positional_arguments` makes is the kernel's (a swapped pair of sizes or flags would
    change the result)."""
    x, w, b = (t.requires_grad_() for t in _tensors())
    dy = torch.randn(ConvProblem.from_shapes(x.shape, w.shape, stride=stride, padding=1).output_shape)

    def passes():
        y = triton_conv.conv2d(x, w, b, stride=stride, padding=1)
        return (y, *torch.autograd.grad(y, (x, w, b), dy))

    with triton_only() as proof:
        keyword = passes()
        for module in (common, fprop, dgrad, wgrad, dgrad_masked):
            monkeypatch.setattr(module, "launch", _positional_launch)
        positional = passes()
    assert set(proof.launches) >= {"fprop_kernel", "wgrad_kernel"} and len(proof.launches) == 3
    assert all(count == 2 for count in proof.launches.values())
    for expected, got in zip(keyword, positional, strict=True):
        assert torch.equal(expected, got)


def test_positional_arguments_refuse_what_the_kernel_does_not_take():
    x, w, b = _tensors()
    spec = fprop.fprop_spec(x, w, b, torch.empty(PROBLEM.output_shape), PROBLEM, CONFIG)
    assert len(common.positional_arguments(spec)) == len(fprop_kernel.arg_names)
    with pytest.raises(TypeError, match="NOT_A_PARAMETER"):
        common.positional_arguments(spec._replace(constexprs={**spec.constexprs, "NOT_A_PARAMETER": 1}))
    missing = next(iter(spec.constexprs))
    spec = spec._replace(constexprs={k: v for k, v in spec.constexprs.items() if k != missing})
    with pytest.raises(TypeError, match=missing):
        common.positional_arguments(spec)


def test_the_host_overhead_script_prints_each_row(capsys, monkeypatch):
    """bench/host_overhead.py with its launches stubbed (--stub; always so without a GPU): one line per
    host path, each a time."""
    from bench import host_overhead

    kernel_type = type(host_overhead.fprop_kernel)  # the three kernels' one type, which the script stubs
    assert {type(host_overhead.dgrad_kernel), type(host_overhead.wgrad_kernel)} == {kernel_type}
    monkeypatch.setattr(kernel_type, "__getitem__", kernel_type.__getitem__)  # the stub undone after
    assert host_overhead.main(["--calls", "3", "--rounds", "1", "--shape", "2,4,6,6,4,3", "--stub"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "launch stubbed" in lines[0]
    rows = {line[:32].strip(): float(line[32:].split()[0]) for line in lines[2:]}
    expected = {"conv2d forward", "conv2d forward+backward", "op: fprop", "op: dgrad", "op: wgrad"}
    assert set(rows) == expected | {"bare launcher (fprop)"}
    assert all(value > 0 for value in rows.values())
