"""Symbolic sizes: the fake (shape-only) implementations and the size checks under torch.compile's
dynamic shapes, data-dependent (unbacked) sizes and torch.export. The checks raise only where a size
provably fails (arguments.size_check_fails) and the op's real call checks the sizes it is given; here,
that no trace adds a guard torch's own convolution does not, that a fake output never has a size the
real one lacks, and that an invalid size still gets the op's error. Tiny shapes, float64, compared
with torch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import triton_conv
from triton_conv.arguments import ConvArgumentError
from triton_conv.launchers.common import launch_counts

from .contract import EXACT, EXACT_TOL
from .reference import rel_error


@pytest.fixture
def fresh_compile():
    """A clean dynamo state, scalar outputs captured, and no inductor artifacts cached on disk
    from an earlier process (they would not see a change to the ops' fake implementations)."""
    torch._dynamo.reset()
    with (
        torch._dynamo.config.patch(capture_scalar_outputs=True),
        torch._inductor.config.patch(force_disable_caches=True),
    ):
        yield
    torch._dynamo.reset()


def _sliced(conv, weight, **kwargs):
    """conv of the first n images' first h rows: both sizes data-dependent (unbacked) when compiled."""

    def run(x, n, h):
        return conv(x[: n.item(), :, : h.item()], weight, **kwargs)

    return run


UNBACKED = {  # name: ours, torch's, weight shape, kwargs, an (n, h) the checks refuse
    "conv2d": (triton_conv.conv2d, F.conv2d, (3, 4, 3, 3), dict(stride=2, dilation=(1, 2)), (2, 2)),
    "conv_transpose2d": (
        triton_conv.conv_transpose2d, F.conv_transpose2d, (4, 3, 3, 3), dict(padding=2), (2, 2),
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(UNBACKED))
def test_data_dependent_sizes(name, fresh_compile):
    """Batch and height from .item(): the fake implementation compares no unbacked size with the
    stride (ConvProblem.canonical once did, and the trace failed: 'Could not guard on data-dependent
    expression'); valid sizes match torch, an invalid one gets the op's error when it runs."""
    ours, theirs, w_shape, kwargs, refused = UNBACKED[name]
    weight, x = torch.randn(w_shape, dtype=EXACT), torch.randn(3, 4, 7, 6, dtype=EXACT)
    compiled = torch.compile(_sliced(ours, weight, **kwargs), fullgraph=True, backend="aot_eager")
    for n, h in ((3, 7), (1, 5)):
        sizes = torch.tensor(n), torch.tensor(h)
        expected = _sliced(theirs, weight, **kwargs)(x, *sizes)
        assert rel_error(compiled(x, *sizes), expected) < EXACT_TOL, (n, h)
    with pytest.raises(ConvArgumentError, match="larger than the padded input|output would be"):
        compiled(x, *map(torch.tensor, refused))


def test_empty_batch_with_an_empty_transposed_output(fresh_compile):
    """A transposed convolution of an empty batch may have an empty output image (torch's does).
    With a data-dependent batch the fake output's height once had the lower bound 1 (Max(1, H - 1)),
    so inductor sized what follows the op by it: y + 1 came out (0, 3, 1, 7), its sum (1, 7)."""
    weight, x = torch.randn(4, 3, 2, 2, dtype=EXACT), torch.randn(3, 4, 5, 8, dtype=EXACT)

    def run(conv, x, n, h):
        y = conv(x[: n.item(), :, : h.item()], weight, padding=1)
        return y + 1, y.sum((0, 1))

    compiled = torch.compile(lambda *a: run(triton_conv.conv_transpose2d, *a), fullgraph=True)
    for n, h in ((2, 3), (0, 1)):
        sizes = torch.tensor(n), torch.tensor(h)
        for ours, expected in zip(compiled(x, *sizes), run(F.conv_transpose2d, x, *sizes)):
            assert ours.shape == expected.shape, (n, h)
            if expected.numel():
                assert rel_error(ours, expected) < EXACT_TOL


def test_empty_batch_transposed_output_too_small_is_named(fresh_compile):
    """An empty batch whose transposed output would be negative (torch raises): the fake once made
    a tensor of that negative size and failed inside torch ('Trying to create tensor with negative
    dimension'); now the op's real call refuses it with its own error."""
    compiled = torch.compile(
        lambda x, w: triton_conv.conv_transpose2d(x, w, padding=2), dynamic=True, backend="aot_eager"
    )
    weight = torch.randn(4, 3, 3, 3, dtype=EXACT)
    with pytest.raises(RuntimeError):
        F.conv_transpose2d(torch.randn(0, 4, 1, 1, dtype=EXACT), weight, padding=2)
    with pytest.raises(ConvArgumentError, match="the output would be -1x-1"):
        compiled(torch.randn(0, 4, 1, 1, dtype=EXACT), weight)


@pytest.mark.parametrize("strict", [False, True])
def test_export_keeps_a_strided_size_torch_keeps(strict):
    """torch.export with Dim.AUTO of a stride-4 conv1d traced where the output has one column:
    torch's program takes every length with one output column (3 to 6). Ours once compared the
    symbolic length with the stride (ConvProblem.canonical) and kept only the traced length."""
    theirs = nn.Sequential(nn.Conv1d(4, 6, 3, stride=4), nn.Flatten(1)).double()
    ours = triton_conv.convert_model(nn.Sequential(nn.Conv1d(4, 6, 3, stride=4), nn.Flatten(1)).double())
    ours.load_state_dict(theirs.state_dict())
    dims = ({0: torch.export.Dim.AUTO, 2: torch.export.Dim.AUTO},)
    x = torch.randn(2, 4, 3, dtype=EXACT)
    program = torch.export.export(ours, (x,), dynamic_shapes=dims, strict=strict).module()
    for length in range(3, 7):
        x = torch.randn(2, 4, length, dtype=EXACT)
        assert rel_error(program(x), theirs(x)) < EXACT_TOL, length
    with pytest.raises(RuntimeError):  # shorter than the kernel: refused when it runs
        program(torch.randn(2, 4, 2, dtype=EXACT))


def test_training_with_dynamic_sizes_names_the_refused_size(fresh_compile):
    """Training under torch.compile(dynamic=True): the gradient ops compare grad_output's sizes
    (the forward fake's, Max(1, P)) with P only where they provably differ, so the backward's trace
    adds no guard and a refused height gets the forward's error when it runs, not one about a
    grad_output the caller never gave. Gradients of the sizes accepted match torch's."""
    weight = torch.randn(3, 4, 3, 3, dtype=EXACT)

    def loss(conv, x, w):
        return conv(x, w, stride=(1, 2)).sin().sum()

    compiled = torch.compile(lambda x, w: loss(triton_conv.conv2d, x, w), dynamic=True, backend="aot_eager")
    for height in (6, 4):
        grads, image = [], torch.randn(2, 4, height, 7, dtype=EXACT)
        for run in (compiled, lambda x, w: loss(F.conv2d, x, w)):
            x, w = image.clone().requires_grad_(), weight.clone().requires_grad_()
            run(x, w).backward()
            grads.append((x.grad, w.grad))
        for ours, expected in zip(*grads):
            assert rel_error(ours, expected) < EXACT_TOL, height
    x, w = torch.randn(2, 4, 2, 7, dtype=EXACT, requires_grad=True), weight.clone().requires_grad_()
    with pytest.raises(ConvArgumentError, match="larger than the padded input"):
        compiled(x, w).backward()


class _Decoder(nn.Module):
    """A U-Net's step down and back up to the skip connection's size: `up(h, output_size=x.shape)`."""

    def __init__(self):
        super().__init__()
        self.down = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1)

    def forward(self, x):
        return self.up(self.down(x), output_size=x.shape)


def _decoders():
    theirs = _Decoder().double()
    ours = triton_conv.convert_model(_Decoder().double())
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


# Heights and widths of both parities: the output_padding that output_size makes is their parity.
_SKIP_SHAPES = ((2, 3, 7, 8), (3, 3, 8, 7), (2, 3, 9, 10), (3, 3, 6, 6))


def _output_and_input_grad(model, image):
    x = image.clone().requires_grad_()
    y = model(x)
    return (y, *torch.autograd.grad(y.sin().sum(), x))


def test_output_size_from_a_skip_connection_compiles_once_for_every_size(fresh_compile):
    """torch.compile(dynamic=True) of a decoder's `up(h, output_size=skip.shape)`: the output_padding
    that ConvTranspose2d computes from the sizes is symbolic (the height's parity, here). Ours read
    its value (operator.index in the argument checks), which pinned it: a frame per parity of height
    and width, where torch's compiles once for all. Outputs and input gradients match torch's."""
    from torch._dynamo.testing import CompileCounterWithBackend

    theirs, ours = _decoders()
    frames = {}
    for label, model in (("torch", theirs), ("ours", ours)):
        torch._dynamo.reset()
        counter = CompileCounterWithBackend("aot_eager")
        compiled = torch.compile(model, backend=counter, dynamic=True, fullgraph=True)
        for shape in _SKIP_SHAPES:
            image = torch.randn(shape, dtype=EXACT)
            launched = launch_counts["dgrad_kernel"]
            got = _output_and_input_grad(compiled, image)
            assert label == "torch" or launch_counts["dgrad_kernel"] > launched, shape
            for ours_, expected in zip(got, _output_and_input_grad(theirs, image)):
                assert rel_error(ours_, expected) < EXACT_TOL, (label, shape)
        frames[label] = counter.frame_count
    assert frames["ours"] <= frames["torch"], frames


@pytest.mark.parametrize("strict", [False, True])
def test_exported_output_size_from_a_skip_connection_takes_every_size(strict, triton_only):
    """torch.export with Dim.AUTO sizes of the same decoder: torch's program takes heights and widths
    of either parity; ours had pinned the traced parity ('Guard failed: ... == 1' on the others)."""
    theirs, ours = _decoders()
    auto = torch.export.Dim.AUTO
    x = torch.randn(_SKIP_SHAPES[1], dtype=EXACT)
    program = torch.export.export(ours, (x,), dynamic_shapes=({0: auto, 2: auto, 3: auto},), strict=strict)
    for shape in _SKIP_SHAPES:
        x = torch.randn(shape, dtype=EXACT)
        with triton_only() as proof:
            y = program.module()(x)
        assert proof.launches.keys() == {"fprop_kernel", "dgrad_kernel"}, proof.launches
        assert rel_error(y, theirs(x)) < EXACT_TOL, shape


@pytest.mark.parametrize(
    "x_shape, w_shape",
    [((2, 3, 3, 3), (4, 3, 3, 3)), ((2, 3, 5, 5), (1, 3, 3, 3)), ((2, 3, 4, 4), (4, 3, 1, 1))],
    ids=["1x1 output", "one output channel", "pointwise"],
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_fake_outputs_have_the_real_calls_strides(x_shape, w_shape, channels_last):
    """torch.compile plans memory from the fake tensor: its strides must be the real output's, also
    where size-1 dimensions let one set of strides pass for both memory formats."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    x, w = torch.randn(x_shape), torch.randn(w_shape)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    real = triton_conv.conv2d(x, w)
    with FakeTensorMode() as mode:
        fake = triton_conv.conv2d(mode.from_tensor(x), mode.from_tensor(w))
    assert fake.shape == real.shape and fake.stride() == real.stride() == F.conv2d(x, w).stride()


@pytest.mark.parametrize("name", list(UNBACKED))
def test_training_with_a_data_dependent_batch(name, fresh_compile):
    """A batch dimension marked unbacked, in training: the transposed backward once asked whether
    the input was empty (`numel() == 0`), which no trace can answer ('Could not guard on
    data-dependent expression'). The general path also takes an empty batch."""
    ours, theirs, w_shape, kwargs, _ = UNBACKED[name]
    weight = torch.randn(w_shape, dtype=EXACT, requires_grad=True)
    compiled = torch.compile(lambda x, w: ours(x, w, **kwargs), fullgraph=True, backend="aot_eager")
    for n in (2, 0, 3):
        x = torch.randn(n, 4, 7, 6, dtype=EXACT)
        torch._dynamo.decorators.mark_unbacked(x, 0)
        x.requires_grad_()
        y = compiled(x, weight)
        probe = torch.randn_like(y)
        got = torch.autograd.grad(y, (x, weight), probe)
        leaves = [t.detach().requires_grad_() for t in (x, weight)]
        expected = torch.autograd.grad(theirs(*leaves, **kwargs), leaves, probe)
        for ours_grad, torch_grad in zip(got, expected):
            assert ours_grad.shape == torch_grad.shape and ours_grad.stride() == torch_grad.stride(), n
            assert not n or rel_error(ours_grad, torch_grad) < EXACT_TOL, n


@pytest.mark.parametrize("name", list(UNBACKED))
def test_data_dependent_channel_counts(name, fresh_compile):
    """Channel counts from .item() (a weight and bias cut to a learned width): the checks compared
    them with plain `<`, `%` and `!=`, which a trace cannot answer for an unbacked size. Valid
    counts train as torch's; counts that disagree get the op's error when it runs."""
    ours, theirs, w_shape, kwargs, _ = UNBACKED[name]
    weight = torch.randn(4, 4, 3, 3, dtype=EXACT, requires_grad=True)
    bias = torch.randn(4, dtype=EXACT, requires_grad=True)
    x = torch.randn(2, 4, 7, 6, dtype=EXACT)

    def run(conv, x, w, b, n, m):
        if conv in (F.conv2d, triton_conv.conv2d):  # output channels: the weight's and the bias's
            return conv(x, w[: n.item()], b[: m.item()], **kwargs)
        return conv(x[:, : m.item()], w[: n.item()], b, **kwargs)  # input channels: x's and w's

    compiled = torch.compile(lambda *a: run(ours, *a), fullgraph=True, backend="aot_eager")
    sizes = torch.tensor(3), torch.tensor(3)
    y = compiled(x, weight, bias, *sizes)
    got = torch.autograd.grad(y.sin().sum(), (weight, bias))
    leaves = [t.detach().requires_grad_() for t in (weight, bias)]
    expected_y = run(theirs, x, *leaves, *sizes)
    expected = torch.autograd.grad(expected_y.sin().sum(), leaves)
    assert rel_error(y, expected_y) < EXACT_TOL
    for ours_grad, torch_grad in zip(got, expected):
        assert rel_error(ours_grad, torch_grad) < EXACT_TOL
    with pytest.raises(ConvArgumentError, match="bias must have 3|expects 3 input channels"):
        compiled(x, weight, bias, torch.tensor(3), torch.tensor(2))


def test_compiled_autograd_traces_the_backward_in_one_graph(fresh_compile):
    """Compiled autograd hands dynamo the autograd Functions' Python backward: the transposed one's
    layout check asked functorch whether a vmap wrapped the gradient, a call dynamo cannot trace
    (with fullgraph=True, an error; without, a graph break at each). The gradients match torch's."""
    from torch._dynamo import compiled_autograd

    torch.manual_seed(0)
    theirs = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.ConvTranspose2d(4, 2, 2, stride=2))
    theirs = theirs.double()
    ours = triton_conv.convert_model(
        nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.ConvTranspose2d(4, 2, 2, stride=2)
        ).double()
    )
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 3, 4, 4, dtype=EXACT)
    theirs(x).pow(2).sum().backward()
    loss = ours(x).pow(2).sum()
    before = dict(launch_counts)
    with compiled_autograd._enable(torch.compile(backend="aot_eager", fullgraph=True)):
        loss.backward()
    launched = {k: n - before.get(k, 0) for k, n in launch_counts.items() if n != before.get(k, 0)}
    # The transposed input gradient is a forward; x needs no gradient, so no dgrad.
    assert launched == {"fprop_kernel": 1, "wgrad_kernel": 2}, launched
    for mine, reference in zip(ours.parameters(), theirs.parameters()):
        assert rel_error(mine.grad, reference.grad) < EXACT_TOL


@pytest.mark.parametrize(
    "ours, theirs, x_shape, w_shape",
    [
        (triton_conv.conv2d, F.conv2d, (2, 3, 5, 6), (4, 3, 3, 3)),
        (triton_conv.conv1d, F.conv1d, (2, 3, 7), (4, 3, 3)),
    ],
    ids=["conv2d", "conv1d"],
)
def test_an_unbacked_input_channel_count_trains_as_torchs(ours, theirs, x_shape, w_shape, fresh_compile):
    """The input channels marked unbacked (mark_unbacked): the output's shape asked whether there
    were any (torch's empty-input path gives no output channels), which no trace can answer; torch
    2.13's shape function takes them as some, and so does ours."""
    x = torch.randn(x_shape, dtype=EXACT)
    weight = torch.randn(w_shape, dtype=EXACT)
    torch._dynamo.decorators.mark_unbacked(x, 1)
    torch._dynamo.decorators.mark_unbacked(weight, 1)
    x.requires_grad_()
    weight.requires_grad_()
    compiled = torch.compile(lambda x, w: ours(x, w, None, padding=1), fullgraph=True, backend="aot_eager")
    before = sum(launch_counts.values())
    y = compiled(x, weight)
    got = torch.autograd.grad(y.sin().sum(), (x, weight))
    assert sum(launch_counts.values()) == before + 3, "fprop, dgrad and wgrad ran on the Triton kernels"
    leaves = [t.detach().requires_grad_() for t in (x, weight)]
    expected_y = theirs(*leaves, None, padding=1)
    expected = torch.autograd.grad(expected_y.sin().sum(), leaves)
    assert rel_error(y, expected_y) < EXACT_TOL
    for ours_grad, torch_grad in zip(got, expected):
        assert rel_error(ours_grad, torch_grad) < EXACT_TOL
