"""The training check (python -m triton_conv.training_check) at CPU scale, under the interpreter:
identical starting weights, loss curves equal to torch's within fp32 noise, and the JSON's fields."""

from __future__ import annotations

import contextlib
import json
from argparse import Namespace

import pytest
import torch

from triton_conv.training_check import check_args, compare, main, parser

from .conftest import cudnn_tf32

# Three stages of one bottleneck each, 8 channels, 32x32 images: the last stage's BatchNorm still sees
# 4 images x 2x2 pixels (with fewer values, training-mode BatchNorm amplifies rounding chaotically).
TINY = ["--width", "8", "--image", "32", "--batch", "4", "--steps", "3", "--blocks", "1,1,1",
        "--classes", "10", "--dtype", "fp32", "--warmup", "1"]  # fmt: skip


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    path = tmp_path_factory.mktemp("training") / "check.json"
    # IEEE fp32 for both models: on a GPU cuDNN's TF32 (and ours, which follows it) would differ by
    # 1e-3 per convolution, which training-mode BatchNorm amplifies past the losses' 1e-4 bound.
    with cudnn_tf32(False):
        assert main([*TINY, "--out", str(path)]) == 0
    return json.loads(path.read_text())


def test_same_start_and_same_losses(result):
    assert result["initial_weights_identical"]
    assert result["convert_skipped"] == [], "every Conv2d of the network is converted"
    torch_losses = result["runs"]["torch"]["losses"]
    ours = result["runs"]["triton-conv"]["losses"]
    assert len(torch_losses) == len(ours) == 3
    for step, (a, b) in enumerate(zip(torch_losses, ours, strict=True)):
        assert abs(a - b) <= 1e-4 * abs(a), f"step {step}: torch {a} against triton-conv {b}"
    assert result["comparison"]["max_relative_loss_deviation"] <= 1e-4
    # Whose kernels ran: none of ours in torch's run; all three in ours (the stem's input needs no
    # gradient, every other layer's does).
    assert result["runs"]["torch"]["kernel_launches"] == {}
    launched = result["runs"]["triton-conv"]["kernel_launches"]
    assert launched.keys() == {"fprop_kernel", "dgrad_kernel", "wgrad_kernel"}


def test_json_fields(result):
    provenance = result["provenance"]
    for key in ("gpu", "torch", "triton", "cuda", "date_utc", "commit", "dirty", "triton_conv"):
        assert key in provenance
    assert result["config"]["steps"] == 3 and result["config"]["dtype"] == "fp32"
    for impl in ("torch", "triton-conv"):
        run = result["runs"][impl]
        assert len(run["step_seconds"]) == 3 and run["median_step_seconds"] > 0
        assert "peak_memory_bytes" in run and "peak_step_memory_bytes" in run  # None on the CPU
    comparison = compare(result)
    assert comparison == result["comparison"]
    for key in ("speed_ratio", "peak_memory_ratio", "max_loss_deviation", "meets_speed_target"):
        assert key in comparison


def test_compare_ratios():
    run = lambda seconds, peak, losses: {
        "losses": losses, "median_step_seconds": seconds,
        "peak_memory_bytes": peak + 10, "peak_step_memory_bytes": peak,
    }  # fmt: skip
    result = {"runs": {"torch": run(0.9, 100, [2.0, 1.5]), "triton-conv": run(1.0, 90, [2.0, 1.6])}}
    comparison = compare(result)
    assert comparison["speed_ratio"] == pytest.approx(0.9)
    assert comparison["peak_memory_ratio"] == pytest.approx(0.9)
    assert comparison["max_loss_deviation"] == pytest.approx(0.1)
    assert comparison["meets_speed_target"] and comparison["meets_memory_target"]


@pytest.mark.parametrize(
    "change, words",
    [
        (["--steps", "0"], "--steps must be at least 1, got 0"),  # was a StatisticsError
        (["--batch", "0"], "--batch must be at least 1, got 0"),  # was NaN losses and a verdict
        (["--blocks", "1,1,1,1,1"], "--blocks must be 1 to 4 block counts"),  # was a shape error in fc
        (["--blocks", "1,x"], "--blocks must be 1 to 4 block counts"),
        (["--warmup", "-1"], "--warmup must be at least 0"),
        (["--cuda-graph", "--device", "cpu"], "--cuda-graph needs a CUDA device, got cpu"),
    ],
)
def test_arguments_that_cannot_run_are_one_line_before_any_training(change, words, monkeypatch):
    from triton_conv import training_check

    monkeypatch.setattr(training_check, "train", lambda *a: pytest.fail("trained"))
    with pytest.raises(SystemExit, match=f"training_check: {words}"):
        main([*TINY, *change])


def test_a_cpu_without_the_interpreter_is_refused_not_passed(monkeypatch):
    """The converted model fell back to torch's convolutions: torch was timed against itself and the
    check said it met its speed target."""
    from triton_conv import runtime, training_check

    monkeypatch.setattr(runtime, "interpreter_active", lambda: False)
    monkeypatch.setattr(training_check, "train", lambda *a: pytest.fail("trained"))
    with pytest.raises(SystemExit, match="falls back to torch's convolutions.*TRITON_INTERPRET=1"):
        main([*TINY, "--device", "cpu"])


def test_a_run_where_no_kernel_of_ours_ran_is_an_error(monkeypatch):
    from triton_conv import training_check

    def no_launches(*args):
        return {"losses": [1.0], "median_step_seconds": 1.0, "kernel_launches": {}}

    monkeypatch.setattr(training_check, "train", no_launches)
    with pytest.raises(RuntimeError, match="no Triton kernel ran in the converted model's steps"):
        main(TINY)


def test_cuda_graph_runs_both_models_through_the_graphed_steps(monkeypatch):
    """--cuda-graph hands both runs to training_graphs.train_graphed, never to the eager loop."""
    from triton_conv import training_check, training_graphs

    ran = []

    def graphed(net, data, args, device, dtype):
        assert dtype is None  # TINY's fp32: no autocast
        ran.append(type(net.conv1).__module__)
        return {"losses": [1.0], "median_step_seconds": 1.0, "kernel_launches": {"fprop_kernel": 1},
                "peak_step_memory_bytes": None, "peak_memory_bytes": None}  # fmt: skip

    monkeypatch.setattr(training_check, "check_args", lambda args, device: (1, 1, 1))
    monkeypatch.setattr(training_check, "train", lambda *a: pytest.fail("ran the eager steps"))
    monkeypatch.setattr(training_graphs, "train_graphed", graphed)
    args = parser().parse_args([*TINY, "--cuda-graph"])
    result = training_check.run(args)
    assert ran == ["torch.nn.modules.conv", "triton_conv.nn"]  # torch's model, then the converted one
    assert result["config"]["cuda_graph"] is True


def test_a_failed_capture_keeps_the_other_run_and_says_which_failed(monkeypatch, tmp_path):
    """A capture that raises (the graphed path first runs on a lent GPU) must not lose the other
    model's finished run: the JSON is written with the error in the failed run's place, and the
    command exits 1."""
    from triton_conv import training_check, training_graphs

    refusal = "operation not permitted when stream is capturing"

    def graphed(net, data, args, device, dtype):
        if type(net.conv1).__module__ == "triton_conv.nn":
            raise RuntimeError(refusal)
        return {"losses": [1.0], "median_step_seconds": 1.0, "kernel_launches": {}}

    monkeypatch.setattr(training_check, "check_args", lambda args, device: (1, 1, 1))
    monkeypatch.setattr(training_graphs, "train_graphed", graphed)
    path = tmp_path / "graphed.json"
    assert main([*TINY, "--cuda-graph", "--out", str(path)]) == 1
    written = json.loads(path.read_text())
    assert written["runs"]["torch"]["losses"] == [1.0]
    assert written["runs"]["triton-conv"] == {"error": f"RuntimeError: {refusal}"}
    assert written["comparison"] == {"failed": ["triton-conv"]}


def test_cuda_graph_needs_more_steps_than_its_eager_warm_up():
    """Three eager steps at least (the warm-up before the capture): with --steps 3 nothing would be
    replayed, and the median of no replays was an error after a whole training run."""
    args = Namespace(**{**vars(parser().parse_args(TINY)), "cuda_graph": True, "steps": 3, "warmup": 1})
    with pytest.raises(ValueError, match="--steps must be above 3, got 3"):
        check_args(args, torch.device("cuda"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_replayed_steps_train_as_the_eager_steps_do(tmp_path):
    """On a GPU: the captured step, replayed, gives the losses the eager loop gives on the same
    weights and data (both models), and the converted model's kernels are ours."""
    eager, graphed = tmp_path / "eager.json", tmp_path / "graphed.json"
    steps = [*TINY[:6], "--steps", "6", *TINY[8:], "--device", "cuda"]
    assert main([*steps, "--out", str(eager)]) == 0
    assert main([*steps, "--cuda-graph", "--out", str(graphed)]) == 0
    eager, graphed = json.loads(eager.read_text()), json.loads(graphed.read_text())
    for impl in ("torch", "triton-conv"):
        assert graphed["runs"][impl]["losses"] == pytest.approx(eager["runs"][impl]["losses"], rel=1e-3)
    assert graphed["runs"]["triton-conv"]["kernel_launches"]


@pytest.mark.parametrize("raises", [False, True])
def test_the_step_runs_with_cudnns_benchmark_and_leaves_the_callers_setting(monkeypatch, raises):
    """On a GPU the check turns cuDNN's algorithm search on for its step, as training scripts do; it
    left it on for the rest of the process (every later cuDNN call of the caller's searched)."""
    from triton_conv import training_check

    seen = []

    def step(args, device, blocks):
        seen.append(torch.backends.cudnn.benchmark)
        if raises:
            raise RuntimeError("a step that failed")
        return {}

    monkeypatch.setattr(training_check, "_device", lambda args: torch.device("cuda"))
    monkeypatch.setattr(training_check, "check_args", lambda args, device: (1, 1, 1))
    monkeypatch.setattr(training_check, "_run", step)
    before = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = False
        with pytest.raises(RuntimeError) if raises else contextlib.nullcontext():
            training_check.run(Namespace())
        assert seen == [True] and torch.backends.cudnn.benchmark is False
    finally:
        torch.backends.cudnn.benchmark = before
