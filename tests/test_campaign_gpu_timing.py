"""The campaign's measurements on the GPU branch, on a fake torch.cuda: the ceilings, warm-up on a
side stream, capture, replays timed by events, the eager fallback, a pass item timed by graph
replay; nvidia-smi's answers when the driver knows fewer fields; the torch and Triton APIs these
paths call."""

from __future__ import annotations

import contextlib
import inspect
import math
import statistics
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch

from triton_conv import provenance
from triton_conv.campaign import run, setup_steps, spec, timing, timing_steps
from triton_conv.problem import ConvProblem


def test_the_ceilings_on_a_gpu(tmp_path, monkeypatch):
    asked = []
    monkeypatch.setattr(setup_steps, "measure_matmul_peak", lambda *a: asked.append(("matmul", a)) or 7e14)
    monkeypatch.setattr(setup_steps, "measure_copy_bandwidth", lambda *a: asked.append(("copy", a)) or 4e12)
    monkeypatch.setattr(provenance, "gpu", lambda: {"name": "NVIDIA H200", "clocks.sm": "1980 MHz"})
    monkeypatch.setattr(provenance, "nvidia_smi", lambda: {"clocks.sm": "1755 MHz"})
    campaign = run.Campaign(spec.h200(), str(tmp_path / "out"), budget_s=480, echo=None)
    campaign.on_gpu, campaign.device = True, torch.device("cuda")
    setup_steps.record_provenance(campaign)
    setup_steps.ceilings(campaign)
    campaign.out.close()
    assert asked == [("matmul", (torch.bfloat16, 8192, torch.device("cuda"))),
                     ("copy", (2 << 30, torch.device("cuda")))]  # fmt: skip
    ceilings = campaign.state["ceilings"]
    assert ceilings["matmul_dtype"] == "bf16" and ceilings["matmul_tflops"] == 700.0
    assert ceilings["copy_gb_per_s"] == 4000.0 and ceilings["clocks_after"] == {"clocks.sm": "1755 MHz"}
    assert campaign.state["provenance"]["gpu"]["name"] == "NVIDIA H200"


# --- the measurement's GPU branch on a fake torch.cuda --------------------------------------------
class FakeCuda:
    """What timing.py asks of torch.cuda. Every call of the timed callable is logged with the stream
    it ran on ('capture' inside a graph capture); each replay lasts `replay_ms` by the events."""

    def __init__(self, monkeypatch, replay_ms: float = 2.0):
        self.log: list[str] = []
        self.stream_name, self.replay_ms, self.captured = "default", replay_ms, 0
        for name in ("Stream", "current_stream", "stream", "CUDAGraph", "graph", "synchronize", "Event"):
            monkeypatch.setattr(torch.cuda, name, getattr(self, name))

    def Stream(self):
        fake = self

        class Stream:
            name = "side"

            def wait_stream(self, other):
                fake.log.append(f"{self.name} waits for {other.name}")

        return Stream()

    def current_stream(self):
        stream = self.Stream()
        stream.name = self.stream_name
        return stream

    @contextlib.contextmanager
    def stream(self, stream):
        previous, self.stream_name = self.stream_name, stream.name
        try:
            yield
        finally:
            self.stream_name = previous

    def CUDAGraph(self):
        fake = self

        class Graph:
            def replay(self):
                fake.log.append("replay")

        return Graph()

    @contextlib.contextmanager
    def graph(self, graph):
        self.log.append("capture begins")
        previous, self.stream_name = self.stream_name, "capture"
        try:
            yield
        finally:
            self.stream_name = previous
            self.log.append("capture ends")

    def synchronize(self):
        self.log.append("synchronize")

    def Event(self, enable_timing=False):
        fake = self

        class Event:
            def record(self):
                pass

            def synchronize(self):
                pass

            def elapsed_time(self, end):
                return fake.replay_ms

        assert enable_timing
        return Event()

    def call(self):
        self.log.append(f"call on {self.stream_name}")
        self.captured += self.stream_name == "capture"


def test_the_device_time_is_graph_replays_timed_by_events(monkeypatch):
    cuda = FakeCuda(monkeypatch)
    # A round of a second: any host call under 10 ms (a loaded CI machine's too) fills the graph.
    m = timing.measure(cuda.call, rounds=4, min_round_s=1.0, on_gpu=True)
    calls = m.iterations
    assert calls == timing.MAX_GRAPH_CALLS
    assert m.timer == "CUDA graph replay, CUDA events" and m.error is None
    assert m.rounds == pytest.approx([2e-3 / calls] * 4) and m.device_seconds == pytest.approx(2e-3 / calls)
    assert m.eager_seconds is not None and m.host_seconds is not None
    log = cuda.log
    warm = log.index("side waits for default")
    assert log[warm + 1] == "call on side" and log[warm + 2] == "default waits for side"
    begins, ends = log.index("capture begins"), log.index("capture ends")
    assert warm < begins and log[begins + 1 : ends] == ["call on capture"] * calls
    assert log[ends + 1 :].count("replay") == 1 + 4  # one untimed replay, then one per round


def test_a_graph_holds_whole_turns_over_the_input_sets(monkeypatch):
    """Calls that take turns over input sets (timers.Rotation) are captured in whole turns, so that
    each replay reads every set once and none twice in a row."""
    from triton_conv.timers import Rotation

    cuda = FakeCuda(monkeypatch)
    ran: list[int] = []
    rotation = Rotation([lambda i=i: (ran.append(i), cuda.call()) for i in range(3)])
    m = timing.measure(rotation, rounds=2, min_round_s=1e-3, on_gpu=True)
    assert m.input_sets == 3 and m.iterations % 3 == 0 and 3 <= m.iterations <= timing.MAX_GRAPH_CALLS
    begins = cuda.log.index("capture begins")
    captured = ran[len(ran) - m.iterations :]
    assert cuda.log[begins + 1 : cuda.log.index("capture ends")] == ["call on capture"] * m.iterations
    assert sorted(captured) == sorted(list(range(3)) * (m.iterations // 3))
    assert all(a != b for a, b in zip(captured, captured[1:], strict=False))
    assert timing._calls_per_round(1.0, 1e-3, 7) == 7  # a slow call: one turn
    assert timing._calls_per_round(1e-9, 1e-3, 7) == 98  # a quick one: whole turns up to the graph's 100


def test_a_failed_capture_falls_back_to_the_eager_rounds(monkeypatch):
    cuda = FakeCuda(monkeypatch)

    def synchronising():
        cuda.call()
        if cuda.stream_name == "capture":
            raise RuntimeError("operation not permitted when stream is capturing")

    m = timing.measure(synchronising, rounds=3, min_round_s=1e-3, on_gpu=True)
    assert m.timer == "synchronised wall clock (capture failed)" and m.device_seconds is None
    assert m.error.startswith("RuntimeError: operation not permitted") and len(m.rounds) == 3
    assert statistics.median(m.rounds) == m.eager_seconds and "replay" not in cuda.log
    assert cuda.log[cuda.log.index("capture ends") + 1] == "synchronize"


def test_an_items_time_limit_waits_for_the_capture_to_end(monkeypatch):
    """A limit that strikes mid-capture would leave the stream capturing (every later CUDA call of
    the campaign failing): it is held back, and strikes as the capture ends, with every call in."""
    cuda = FakeCuda(monkeypatch)

    def slow_to_capture():
        cuda.call()
        if cuda.stream_name == "capture" and cuda.captured == 1:
            time.sleep(0.4)

    with pytest.raises(run.ItemTimeout), run.time_limit(0.15):
        timing.measure(slow_to_capture, rounds=2, min_round_s=1.0, on_gpu=True)  # a full graph
    assert cuda.log[-1] == "capture ends" and cuda.captured == timing.MAX_GRAPH_CALLS


# --- provenance ---------------------------------------------------------------------------------------
FAKE_SMI = """#!{python}
import sys
fields = next(a for a in sys.argv if a.startswith("--query-gpu=")).split("=", 1)[1].split(",")
unknown = [f for f in fields if f.startswith("power.draw")]
if unknown:
    print(f'Field "{{unknown[0]}}" is not a valid field to query.')
    sys.exit(2)
print(", ".join(f"{{f}} value" for f in fields))
"""


@pytest.mark.parametrize("binary", ["answers", "rejects a field", "missing", "hangs"])
def test_nvidia_smi_answers_what_it_can(tmp_path, monkeypatch, binary):
    script = tmp_path / "nvidia-smi"
    if binary == "hangs":
        script.write_text("#!/bin/sh\nexit 3\n")
    else:
        text = FAKE_SMI.format(python=sys.executable)
        script.write_text(text if binary == "rejects a field" else text.replace('"power.draw"', '"nothing"'))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path) if binary != "missing" else str(tmp_path / "none"))
    if binary == "hangs":  # a hung nvidia-smi is given up once, not asked field by field
        asked = []

        def hung(*args, **kwargs):
            asked.append(args)
            raise subprocess.TimeoutExpired(args[0], 20)

        monkeypatch.setattr(provenance.subprocess, "run", hung)
    answer = provenance.nvidia_smi(0)
    if binary == "answers":
        assert answer == {field: f"{field} value" for field in provenance.SMI_FIELDS}
    elif binary == "rejects a field":
        assert answer["power.draw"] is None and answer["clocks.max.sm"] == "clocks.max.sm value"
        assert "not a valid field" in answer["error"] and set(answer) == {*provenance.SMI_FIELDS, "error"}
    else:
        assert set(answer) == {"error"} and "nvidia-smi" in answer["error"]
    if binary == "hangs":
        assert len(asked) == 1


@pytest.mark.parametrize("pci", [(0, 0x3B, 0x1F), None])
def test_nvidia_smi_is_asked_for_torchs_device_by_its_pci_bus_id(monkeypatch, pci):
    # Under CUDA_VISIBLE_DEVICES=3, torch's device 0 is nvidia-smi's 3: the index alone names the
    # wrong GPU, its bus id the right one.
    asked = []

    def smi(query, **kwargs):
        asked.append(query[1])
        return subprocess.CompletedProcess(query, 0, stdout=", ".join(provenance.SMI_FIELDS) + "\n")

    ids = {} if pci is None else dict(zip(("pci_domain_id", "pci_bus_id", "pci_device_id"), pci, strict=True))
    monkeypatch.setattr(provenance.subprocess, "run", smi)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: SimpleNamespace(**ids))
    assert provenance.nvidia_smi(2)["pstate"] == "pstate"
    assert asked == (["--id=00000000:3B:1F.0"] if pci else ["--id=2"])


# --- the APIs the GPU paths call, in this torch and Triton -------------------------------------------
def test_the_gpu_paths_call_apis_this_torch_and_triton_have():
    from triton import knobs
    from triton.runtime.jit import JITFunction
    from triton.testing import do_bench

    graph = inspect.signature(torch.cuda.graph.__init__).parameters
    assert list(graph)[1] == "cuda_graph" and "capture_error_mode" in graph
    for name in ("CUDAGraph", "Stream", "Event", "stream", "current_stream", "synchronize", "empty_cache",
                 "get_device_capability", "get_device_properties", "is_current_stream_capturing",
                 "reset_peak_memory_stats", "max_memory_allocated", "memory_allocated", "mem_get_info",
                 "OutOfMemoryError", "is_initialized"):  # fmt: skip
        assert hasattr(torch.cuda, name), name
    assert issubclass(torch.cuda.OutOfMemoryError, Exception)
    bench = inspect.signature(do_bench).parameters  # tuning.gpu_timer's call
    assert {"warmup", "rep", "return_mode"} <= set(bench) and '"median"' in inspect.getsource(do_bench)
    assert inspect.signature(JITFunction.preload).parameters.keys() == {"self", "specialization_data"}
    # (the recording above calls knobs.runtime.jit_cache_hook's hook, and the listener test Triton's
    # compilation listener, each for real)
    assert hasattr(knobs.compilation, "listener") and hasattr(knobs.runtime, "jit_cache_hook")


# torch.cuda faked around interpreted kernels; on a GPU the module's tiny campaign in test_campaign.py
# runs this branch for real (a real launch beside a fake torch.cuda would mix the two).
@pytest.mark.interpreter
@pytest.mark.parametrize("one_image_pinned", [True, False])
def test_a_pass_item_on_the_gpu_branch_times_by_graph_replay(tmp_path, monkeypatch, one_image_pinned):
    """pass_item with the campaign's GPU branch (the kernels in the interpreter, torch.cuda faked):
    each candidate timed by replays, the winner pinned and run by the op, cuDNN beside it, the batch
    against one image at a time, each record with its device, eager and host times and its fraction
    of the measured peak. triton-conv's images one at a time run the config the N=1 item checked and
    pinned; with none pinned they are skipped, not run on a default config no check ran."""
    from triton_conv import choices, timers, tuning
    from triton_conv.campaign.runners import make_inputs, op_channels_last

    cuda = FakeCuda(monkeypatch, replay_ms=0.5)
    item = next(i for i in spec.plan_items(spec.tiny())["batching"] if i.one_at_a_time)
    shapes = (item.problem.input_shape, item.problem.weight_shape)
    set_bytes = sum(math.prod(shape) * 2 for shape in shapes)  # what fprop reads: x and w in fp16
    monkeypatch.setattr(timers, "l2_cache_bytes", lambda device: set_bytes)  # two sets: twice this "L2"
    campaign = run.Campaign(spec.tiny(), str(tmp_path / "out"), budget_s=100, echo=None)
    campaign.on_gpu = True
    campaign.state["ceilings"] = {"matmul_dtype": "fp16", "matmul_tflops": 10.0}
    campaign.checked[item.id] = item.candidates
    if one_image_pinned:  # as the N=1 item's tune_item pins it, from its own N=1 tensors
        one = item.problem.with_batch(1)
        tensors = make_inputs(one, spec.tiny().torch_dtype, campaign.device)
        channels_last = op_channels_last("fprop", tensors)
        w = tensors["w"]
        choices.pin_config(one, "fprop", w.dtype, channels_last, w.device, item.candidates[-1])
    # every launch of the op runs a pinned config: none falls through to tuning (or its default)
    monkeypatch.setattr(tuning, "autotune", lambda *args, **kwargs: pytest.fail("an unpinned shape ran"))
    try:
        assert timing_steps.pass_item(campaign, item) is True
    finally:
        choices.forget_choices()
        campaign.out.close()
    infos = [r["extra_info"] for r in campaign.records]
    if not one_image_pinned:
        assert ("triton-conv", "one-at-a-time") not in {(i["implementation"], i.get("how")) for i in infos}
        assert ("cudnn", "one-at-a-time") in {(i["implementation"], i.get("how")) for i in infos}
        assert campaign.state["skipped"] == [
            {"step": "start", "item": f"{item.id} one-at-a-time",
             "why": "triton-conv's N=1 config was never checked and pinned"}
        ]  # fmt: skip
        return
    (row,) = campaign.autotune_rows
    # the tiny spec asks for rounds of one call: one turn over the two sets, 0.5 ms a replay
    assert row["winner_ms"] == pytest.approx(0.5 / 2) and len(row["timings"]) == len(item.candidates)
    assert {(i["implementation"], i.get("how")) for i in infos} == {
        ("triton-conv", None), ("cudnn", None), ("triton-conv", "batch"), ("cudnn", "batch"),
        ("triton-conv", "one-at-a-time"), ("cudnn", "one-at-a-time"),
    }  # fmt: skip
    for info in infos:
        assert info["input_sets"] == info["iterations"] == 2
        assert info["timer"] == "CUDA graph replay, CUDA events" and info["timer_error"] is None
        assert info["device_seconds"] == pytest.approx(5e-4 / 2) and info["eager_seconds"] > 0
        assert info["measured_peak_tflops"] == 10.0
        assert info["fraction_of_peak"] == pytest.approx(info["tflops"] / 10.0)
        assert info["l2_multiple"] == pytest.approx(2.0)  # two sets, each of the "L2"'s size
    # Each record names what it timed: the batch ran the pinned winner, and carries its own check.
    by_how = {(i["implementation"], i.get("how")): i for i in infos}
    assert by_how["triton-conv", "batch"]["config"] == by_how["triton-conv", None]["config"] == row["winner"]
    assert by_how["cudnn", "batch"]["config"] is None
    for impl in ("triton-conv", "cudnn"):
        assert by_how[impl, "batch"]["relative_error"] == by_how[impl, None]["relative_error"]
    assert cuda.log.count("capture begins") == len(item.candidates) + 4  # candidates, op, cuDNN, N x 1


def test_the_plan_counts_cudnns_algorithm_search_per_shape(monkeypatch):
    """cudnn.benchmark searches on the first call of each shape and pass: once per timed item, and
    again for the single image of an item timed one image at a time."""
    from triton_conv.campaign.costs import CostModel

    items = spec.plan_items(spec.tiny())
    plain = next(i for i in items["fprop"])
    single = next(i for i in items["batching"] if i.one_at_a_time)
    searching, free = CostModel(), CostModel(cudnn_search_s=0.0)
    for item, searches in ((plain, 1), (single, 2)):
        extra = run.Estimator(spec.tiny(), searching, True).pass_item(item)
        extra -= run.Estimator(spec.tiny(), free, True).pass_item(item)
        assert extra == pytest.approx(searches * searching.cudnn_search_s)


def test_a_candidate_whose_capture_failed_never_wins_on_a_wall_clock(monkeypatch):
    """tune_item sorted its candidates by seconds whatever their timer: one whose graph capture
    failed held the synchronised wall clock (its launch cost included) against the others' device
    time. Device-timed candidates rank first; the failed one ranks after them, by its own time."""
    from triton_conv import choices
    from triton_conv.campaign.timing import DEVICE_TIMER, Measurement
    from triton_conv.configs import KernelConfig

    problem = ConvProblem.from_shapes((1, 8, 6, 6), (8, 8, 3, 3), padding=1)
    configs = [KernelConfig(16, 16, 16), KernelConfig(32, 16, 16), KernelConfig(16, 32, 16)]
    wall = "synchronised wall clock (capture failed)"
    measured = iter([(DEVICE_TIMER, 3e-5), (wall, 1e-5), (DEVICE_TIMER, 2e-5)])

    def fake_measure(run, fn, eager=True):
        timer, seconds = next(measured)
        return Measurement([seconds], timer=timer)

    monkeypatch.setattr(timing_steps, "_measure", fake_measure)
    item = SimpleNamespace(id="item", pass_name="fprop", kernel_pass="fprop", problem=problem,
                           transposed=False)  # fmt: skip
    tensors = {"x": torch.randn(1, 8, 6, 6), "w": torch.randn(8, 8, 3, 3), "dy": torch.randn(1, 8, 6, 6)}
    run = SimpleNamespace(checked={"item": configs})
    try:
        winner, timings = timing_steps.tune_item(run, item, [tensors])
    finally:
        choices.forget_choices()
    assert winner == configs[2] and [c for c, _ in timings] == [configs[2], configs[0], configs[1]]
