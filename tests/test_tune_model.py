"""Ahead-of-time tuning of a model: finding its convolutions (without touching the model, its random
state or other threads' draws), tuning exactly the keys a training step looks up, and the arguments
tune_model refuses."""

from __future__ import annotations

import copy
import io
import random
import threading
import warnings

import numpy as np
import pytest
import torch

import triton_conv
from triton_conv import choices, model_calls, model_tuning
from triton_conv.problem import PASSES, ConvProblem
from triton_conv.tuning_keys import tuning_key

from .tuning_fakes import FakeTimer

# Tuning times the kernels on CPU tensors (device "cpu"): the interpreter's job, not a GPU run's.
pytestmark = [pytest.mark.interpreter, pytest.mark.usefixtures("cache_dir")]


# --- finding the convolutions -----------------------------------------------------------------------------
class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.body = torch.nn.Sequential(
            torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=2), torch.nn.BatchNorm2d(8)
        )
        self.frozen = torch.nn.Conv2d(8, 4, 1, bias=False)
        self.frozen.weight.requires_grad_(False)
        self.head = torch.nn.Linear(4, 2)

    def forward(self, x):
        x = self.frozen(self.body(self.stem(x)))
        return self.head(x.mean((2, 3)))


def test_conv_problems_finds_every_convolution():
    found = model_tuning.conv_problems(Net(), (3, 10, 12))
    assert [(call.name, call.passes, call.transposed) for call in found] == [
        ("stem", {"fprop": True, "wgrad": True}, False),  # its input is the image: no dgrad
        ("body.1", {"fprop": True, "dgrad": True, "wgrad": True}, False),
        ("frozen", {"fprop": True, "dgrad": True}, False),  # frozen weight: no wgrad
    ]
    stem, body, frozen = (call.problem for call in found)
    assert stem == ConvProblem.from_shapes((1, 3, 10, 12), (8, 3, 3, 3), padding=1)
    assert body == ConvProblem.from_shapes((1, 8, 10, 12), (8, 4, 3, 3), stride=2, padding=1, groups=2)
    assert frozen.input_shape == (1, 8, 5, 6) and frozen.is_pointwise
    # In NCHW every flag is off: the key says 'nchw' where the model runs contiguous.
    flags = [call.passes for call in model_tuning.conv_problems(Net(), (3, 10, 12), channels_last=False)]
    assert [set(f) for f in flags] == [set(call.passes) for call in found]
    assert not any(v for f in flags for v in f.values())


def test_conv_problems_on_converted_models_and_padding_modes():
    import triton_conv

    model = triton_conv.convert_model(Net())
    assert model_tuning.conv_problems(model, (3, 10, 12)) == model_tuning.conv_problems(Net(), (3, 10, 12))
    net = Net()
    model_tuning.conv_problems(net, (3, 10, 12))
    # the model is left as it was: torch's classes, no hooks
    assert type(net.stem) is torch.nn.Conv2d and type(model.stem) is triton_conv.Conv2d
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in [*net.modules(), *model.modules()])
    reflect = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"))
    [call] = model_tuning.conv_problems(reflect, (3, 8, 9))
    assert call.problem == ConvProblem.from_shapes((1, 3, 10, 11), (4, 3, 3, 3), padding=0)
    same = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 4, padding="same"))  # torch pads 1 top, 2 bottom
    [call] = model_tuning.conv_problems(same, (3, 8, 9))
    assert call.problem == ConvProblem.from_shapes((1, 3, 8, 9), (4, 3, 4, 4), padding="same")
    assert (call.problem.pad_top, call.problem.pad_bottom) == (1, 2)


class Mixed(torch.nn.Module):
    """All three kinds, torch's and triton-conv's modules: a strided Conv2d on the image, a
    ConvTranspose2d back to the image's size (forward's output_size: output_padding 0 and 1, a crop
    in its view), and a dilated Conv1d with a circular padding_mode on the flattened map."""

    def __init__(self):
        import triton_conv

        super().__init__()
        self.down = torch.nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.up = torch.nn.ConvTranspose2d(6, 4, 3, stride=2, padding=1)
        self.seq = triton_conv.Conv1d(4, 5, 3, padding=2, dilation=2, padding_mode="circular")

    def forward(self, x):
        y = self.up(torch.relu(self.down(x)), output_size=x.shape[-2:])
        return self.seq(y.flatten(2))


def test_conv_problems_never_touches_the_model_it_reads():
    """The forward that finds the calls ran on the model itself (its parameters swapped for meta
    tensors by functional_call, its classes swapped, hooks added): a thread running the model
    meanwhile got meta weights, and two finders at once restored each other's meta tensors as the
    originals, leaving the model's weights on the meta device for good. It now runs on a meta copy.
    A hook of the model sees the original as it was throughout, and two finders held in the middle
    of their forwards at once leave it whole."""
    net = Net()
    values = {name: tensor.clone() for name, tensor in net.state_dict().items()}
    seen = []
    meeting = threading.Barrier(2, timeout=60)

    def hook(module, args):  # copied with the model: it runs in each finder's forward
        seen.append((type(net.stem), net.stem.weight.device.type, len(net.stem._forward_hooks)))
        if threading.current_thread() is not threading.main_thread():
            meeting.wait()  # both finders are in the middle of their forwards now

    net.body.register_forward_pre_hook(hook)
    alone = model_tuning.conv_problems(net, (3, 10, 12))
    found = []
    threads = [threading.Thread(target=lambda: found.append(model_tuning.conv_problems(net, (3, 10, 12))))
               for _ in range(2)]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert found == [alone, alone]
    assert seen == [(torch.nn.Conv2d, "cpu", 0)] * 3
    state = net.state_dict()
    assert all(state[name].device.type == "cpu" and torch.equal(state[name], values[name]) for name in values)
    assert all(isinstance(p, torch.nn.Parameter) for p in net.parameters())


class _LayerDrop(Net):
    """A forward that draws from the global generators, as LayerDrop's torch.rand([]) does."""

    def forward(self, x):
        keep = torch.rand([]) >= 0.0 and random.random() >= 0.0 and np.random.rand() >= 0.0
        return super().forward(x) if keep else x


@pytest.mark.parametrize("live", [False, True])
def test_finding_the_calls_undoes_the_forwards_random_draws(live):
    """A seeded run draws the same numbers after tune_model as without it: the meta forward's
    draws from torch's, Python's and numpy's generators are undone, on the copy and read live
    (a model holding a lock, which copy.deepcopy refuses)."""
    net = _LayerDrop()
    if live:
        net.lock = threading.Lock()
    states = lambda: (torch.get_rng_state(), random.getstate(), np.random.get_state())
    before = states()
    finder = model_calls.CallFinder(net)
    assert (finder.meta_model is None) is live
    found = finder.calls((3, 10, 12))
    after = states()
    assert found == model_tuning.conv_problems(Net(), (3, 10, 12))
    assert torch.equal(after[0], before[0]) and after[1] == before[1]
    (name, key, *position), (name_before, key_before, *position_before) = after[2], before[2]
    assert name == name_before and (key == key_before).all() and position == position_before


def test_another_threads_draws_from_torch_stand_while_the_calls_are_found():
    """torch's generator is restored only where the finder's own forward drew (a seeded op under
    its dispatch mode): a draw another thread makes meanwhile is not rewound and drawn again."""
    started, drawn = threading.Event(), threading.Event()

    class WaitsForADraw(Net):
        def forward(self, x):
            started.set()
            assert drawn.wait(timeout=60)
            return super().forward(x)

    first = []

    def draw():  # in the middle of the finder's forward
        started.wait(timeout=60)
        first.append(torch.rand(4))
        drawn.set()

    thread = threading.Thread(target=draw)
    thread.start()
    model_tuning.conv_problems(WaitsForADraw(), (3, 10, 12))
    thread.join(timeout=60)
    assert not torch.equal(torch.rand(4), first[0])  # rewound, it would draw the same four again


class _NotLive:
    """model_calls._LIVE for a test that must find the calls on the copy."""

    def __enter__(self):
        raise AssertionError("the model was read live, not on its copy")

    def __exit__(self, *exc):
        return False


class _CopiesItsData(Net):
    def __deepcopy__(self, memo):  # ignores the memo: a copy with real weights
        copied = Net()
        copied.load_state_dict(self.state_dict())
        return copied


def _uncopyable_net():
    net = Net()
    net.lock = threading.Lock()  # copy.deepcopy refuses it (as DistributedDataParallel's process group)
    return net


class _ScaledNet(Net):
    """A plain tensor attribute (not a buffer) in the forward's arithmetic, and a lock."""

    def __init__(self):
        super().__init__()
        self.lock = threading.Lock()
        self.scale = torch.full((1, 8, 1, 1), 2.0)

    def forward(self, x):
        x = self.frozen(self.body(self.stem(x) * self.scale))
        return self.head(x.mean((2, 3)))


def _net_read_through_a_closure():
    net = Net()
    net.head.register_forward_hook(lambda module, args, out: out + net.head.bias)  # the original's bias
    return net


def _legacy_weight_norm_net():
    net = Net()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch deprecates it for parametrizations
        torch.nn.utils.weight_norm(net.stem)  # `weight`, recomputed by a hook: a non-leaf attribute
    return net


@pytest.mark.parametrize(
    "make, on_the_copy",
    [(_legacy_weight_norm_net, True), (_uncopyable_net, False), (_net_read_through_a_closure, False),
     (_CopiesItsData, False), (_ScaledNet, False)],
)  # fmt: skip
def test_a_model_the_copy_cannot_serve_is_read_live_and_left_as_it_was(make, on_the_copy, monkeypatch):
    """The meta copy failed a model with legacy weight_norm (deepcopy refuses its computed weight),
    and read real tensors of one whose hook reads the original or whose __deepcopy__ copies data
    (an error naming neither). Such a model is now read live, as before the copy, one at a time;
    weight_norm's is served by the copy (its computed weight has a meta twin too)."""
    from triton_conv import model_calls

    net = make()
    values = {name: tensor.clone() for name, tensor in net.state_dict().items()}
    if on_the_copy:
        monkeypatch.setattr(model_calls, "_LIVE", _NotLive())
    found = model_tuning.conv_problems(net, (3, 10, 12))
    assert found == model_tuning.conv_problems(Net(), (3, 10, 12))
    state = net.state_dict()
    assert all(state[name].device.type == "cpu" and torch.equal(state[name], values[name]) for name in values)
    assert type(net.stem) is torch.nn.Conv2d
    hooks = lambda model: [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()]
    assert hooks(net) == hooks(make())  # none added, none left
    # a plain tensor attribute (read live it was left real: the forward mixed devices) is its own again
    assert not isinstance(net, _ScaledNet) or (net.scale.device.type == "cpu" and net.scale.eq(2).all())
    keys = lambda model: [r.key for r in model_tuning.tune_model(model, (3, 10, 12), device="cpu",
                                                                  stream=io.StringIO())]  # fmt: skip
    assert keys(net) == keys(Net())


def test_conv_problems_of_conv1d_and_conv_transpose2d():
    down, up, seq = model_tuning.conv_problems(Mixed(), (3, 9, 10))
    assert down.problem == ConvProblem.from_shapes((1, 3, 9, 10), (6, 3, 3, 3), stride=2, padding=1)
    # the transposed convolution is its conv2d view; output_size 9x10 from 5x5 is output_padding (0, 1)
    assert up.transposed and up.problem == ConvProblem.from_transposed(
        (1, 6, 5, 5), (6, 4, 3, 3), stride=2, padding=1, output_padding=(0, 1)
    )
    assert list(up.passes) == ["dgrad", "fprop", "wgrad"] and up.kernel_pass("fprop") == "dgrad"
    # conv1d: circular padding applied first (2 each side), then the height-one conv2d, unpadded
    assert seq.problem == ConvProblem.from_shapes((1, 4, 1, 94), (5, 4, 1, 3), dilation=(1, 2))
    model = Mixed()
    model.up.weight.requires_grad_(False)
    calls = model_tuning.conv_problems(model, (3, 9, 10), channels_last=False)
    assert [set(call.passes) for call in calls] == [{"fprop", "wgrad"}, {"dgrad", "fprop"}, set(PASSES)]
    sequence = torch.nn.Sequential(torch.nn.Conv1d(4, 8, 5, stride=3), torch.nn.Conv1d(8, 8, 1))
    first, second = model_tuning.conv_problems(sequence, (4, 50))  # a 1-D model's (C, L)
    assert first.problem == ConvProblem.from_shapes((1, 4, 1, 50), (8, 4, 1, 5), stride=(1, 3))
    assert set(first.passes) == {"fprop", "wgrad"} and second.problem.input_shape == (1, 8, 1, 16)


@pytest.mark.parametrize("channels_last", [True, False])
def test_tune_model_tunes_exactly_the_keys_a_training_step_looks_up(
    channels_last, fake_runner, monkeypatch, triton_only
):
    """After tune_model, a real forward and backward of a converted model (the kernels, under the
    interpreter) looks up only keys that tune_model tuned, and every one of them: nothing is tuned
    again, nothing was tuned in vain."""
    import triton_conv
    from triton_conv import passes

    timer = FakeTimer()
    model = Mixed()
    tuned = model_tuning.tune_model(
        model, (3, 9, 10), (2,), torch.float32, channels_last=channels_last, device="cpu", timer=timer,
        progress=False,
    )  # fmt: skip
    assert timer.calls > 0 and not any(r.cached for r in tuned)
    looked_up = []

    def select_config(problem, pass_name, dtype, channels_last, device=None):
        looked_up.append(tuning_key(problem, pass_name, dtype, channels_last))
        return choices.select_config(problem, pass_name, dtype, channels_last, device, timer=timer)

    monkeypatch.setattr(passes, "select_config", select_config)
    calls = timer.calls
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = triton_conv.convert_model(model).to(memory_format=layout)
    x = torch.randn(2, 3, 9, 10).contiguous(memory_format=layout)
    with triton_only() as proof:
        model(x).square().sum().backward()
    assert timer.calls == calls, "the step tuned a key that tune_model did not"
    assert sorted(looked_up) == sorted(r.key for r in tuned)
    # fprop: down, seq and up's input gradient; dgrad: up's forward and seq's; wgrad: all three
    assert proof.launches == {"fprop_kernel": 3, "dgrad_kernel": 2, "wgrad_kernel": 3}
    assert all(p.grad is not None for p in model.parameters())


def test_tune_model_progress_and_coverage(fake_runner):
    stream = io.StringIO()
    results = model_tuning.tune_model(
        Net(), [(3, 10, 12), (3, 64, 64)], batch_sizes=(1, 4), dtype=torch.float16,
        device="cpu", timer=FakeTimer(), stream=stream,
    )  # fmt: skip
    expected = set()
    for shape in [(3, 10, 12), (3, 64, 64)]:
        for call in model_tuning.conv_problems(Net(), shape):
            for batch in (1, 4):
                for pass_name, channels_last in call.passes.items():
                    expected.add(
                        tuning_key(call.problem.with_batch(batch), pass_name, torch.float16, channels_last)
                    )
    assert {r.key for r in results} == expected and len(results) == len(expected)
    lines = stream.getvalue().splitlines()
    assert len(lines) == len(expected)
    assert lines[0].startswith(f"[1/{len(expected)}] stem fprop fp16 nhwc") and "tuned" in lines[0]
    assert lines[-1].startswith(f"[{len(expected)}/{len(expected)}]")
    stream = io.StringIO()
    model_tuning.tune_model(
        Net(), (3, 10, 12), (1,), torch.float16, device="cpu", timer=FakeTimer(), stream=stream
    )
    assert all("(cached" in line for line in stream.getvalue().splitlines())
    stream = io.StringIO()  # forward only: a transposed convolution's forward is its view's dgrad
    results = model_tuning.tune_model(
        Mixed(), (3, 9, 10), (1,), torch.float16, ("fprop",), device="cpu", timer=FakeTimer(), stream=stream
    )
    assert [r.key.split()[0] for r in results] == ["fprop", "dgrad", "fprop"]
    assert "up (transposed fprop) dgrad fp16 nhwc" in stream.getvalue()


def test_tune_model_takes_a_1d_models_shape(fake_runner):
    model = torch.nn.Sequential(torch.nn.Conv1d(4, 8, 5, stride=3), torch.nn.ReLU(), torch.nn.Conv1d(8, 8, 1))
    results = model_tuning.tune_model(
        model, [(4, 50), (4, 200)], (1, 8), torch.float16, device="cpu", timer=FakeTimer(), progress=False
    )
    keys = {r.key for r in results}
    assert all("nchw" in key and "RxS=1x" in key for key in keys)  # a 3-D tensor has no channels_last
    calls = [call for shape in ((4, 50), (4, 200)) for call in model_tuning.conv_problems(model, shape)]
    assert keys == {
        tuning_key(call.problem.with_batch(n), p, torch.float16, False)
        for call in calls
        for n in (1, 8)
        for p in call.passes
    }


def test_tune_model_without_gpu_or_timer_lists_defaults():
    stream = io.StringIO()
    results = model_tuning.tune_model(Net(), (3, 10, 12), (2,), torch.float32, device="cpu", stream=stream)
    assert all(r.best_ms is None and not r.cached for r in results)
    assert all("default, not timed" in line for line in stream.getvalue().splitlines())


@pytest.mark.parametrize(
    ("passes", "batch_sizes", "words"),
    [(["forward"], (1,), "passes must name"), (("fprop", "wgard"), (1,), "'wgard'"),
     (PASSES, (0,), "batch_sizes"), (PASSES, (-1, 2), "batch_sizes"), (PASSES, (True,), "batch_sizes"),
     (PASSES, (), "batch_sizes"), (PASSES, (1.5,), "batch_sizes")],
)  # fmt: skip
def test_tune_model_refuses_passes_and_batches_it_cannot_tune(passes, batch_sizes, words):
    """A misspelt pass tuned nothing without a word (a ConvTranspose2d raised a bare KeyError), and
    a batch of 0 or less was tuned as a GEMM of no rows."""
    for model in (Net(), torch.nn.Sequential(torch.nn.ConvTranspose2d(3, 4, 2, stride=2))):
        with pytest.raises(RuntimeError, match=words):
            model_tuning.tune_model(model, (3, 10, 12), batch_sizes, torch.float32, passes, device="cpu",
                                    stream=io.StringIO())  # fmt: skip


@pytest.mark.parametrize(
    ("input_shapes", "words"),
    [([], "input_shapes must be"), ((np.int64(3), 10, 12), None),
     (torch.tensor([3, 10, 12]), "not a tensor"), ((3, 0, 12), "input_shapes must be"),
     ((3,), "input_shapes must be"), ((10, 12), "input_shapes \\(10, 12\\)"),
     ([(3, 10, 12), "3x10x12"], "input_shapes must be")],
)  # fmt: skip
def test_tune_model_names_input_shapes_it_cannot_take(input_shapes, words):
    """An empty list raised IndexError, a NumPy integer TypeError ('not iterable'), a shape the model
    refuses its forward's message with no word of which argument gave it."""
    call = lambda: model_tuning.tune_model(Net(), input_shapes, (2,), device="cpu", stream=io.StringIO())
    if words is None:
        assert [r.key for r in call()] == [r.key for r in model_tuning.tune_model(
            Net(), (3, 10, 12), (2,), device="cpu", stream=io.StringIO())]  # fmt: skip
        return
    with pytest.raises(RuntimeError, match=words):
        call()


def test_a_shape_no_tensor_can_have_leaves_the_model_as_it_was():
    """The hooks that name the calls were added before the meta input was made: a shape whose size
    overflows raised there and left them on the caller's model, whose deepcopy then failed in them
    (KeyError) and whose torch.save could not pickle them."""
    model = triton_conv.convert_model(Net())
    with pytest.raises(RuntimeError, match="input_shapes"):
        model_tuning.tune_model(model, (3, 2**31, 2**31), (2,), device="cpu", stream=io.StringIO())
    for module in model.modules():
        assert not module._forward_pre_hooks and not module._forward_hooks
    x = torch.randn(1, 3, 10, 12)
    assert torch.equal(copy.deepcopy(model)(x), model(x))
    torch.save(model, io.BytesIO())


def test_tune_model_tunes_the_models_dtype_unless_told():
    """The default was fp16 whatever the model: an fp32 model's step found none of its keys tuned."""
    keys = lambda model, **kw: {r.key.split()[1] for r in model_tuning.tune_model(
        model, (3, 10, 12), (2,), device="cpu", stream=io.StringIO(), **kw)}  # fmt: skip
    assert keys(Net()) == keys(Net(), dtype=torch.float32) and keys(Net()) & {"fp32", "tf32"}
    assert keys(Net().double()) == {"fp64"} and keys(Net(), dtype=torch.bfloat16) == {"bf16"}
    for dtype, error in ((torch.int32, "dtype must be one of"), ("fp16", "dtype must be one of")):
        with pytest.raises(triton_conv.ConvTypeError, match=error):
            keys(Net(), dtype=dtype)
    if not torch.cuda.is_available():
        with pytest.raises(triton_conv.ConvArgumentError, match="sees no CUDA device"):
            model_tuning.tune_model(Net(), (3, 10, 12), device="cuda", stream=io.StringIO())


def test_tune_model_takes_one_pass_name_and_one_batch_size():
    """A bare string was iterated as its letters ('f', 'p', ...), none of them a pass: nothing tuned."""

    def keys(batch_sizes, passes):
        results = model_tuning.tune_model(
            Net(), (3, 10, 12), batch_sizes, torch.float32, passes, device="cpu", stream=io.StringIO()
        )
        return [r.key for r in results]

    assert keys(2, "fprop") == keys([2], ["fprop"]) and len(keys(2, "fprop")) > 0
