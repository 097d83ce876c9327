"""The campaign's check in a child process (campaign/check_child.py and check_process.py): a
config that kills the process, or leaves its CUDA context faulted, costs that config and a restart,
never a later config's check or the campaign; a child left mid-item is never handed another item, so no answer
reaches the wrong config; a hung launch past its time limit kills the child and is named; a child
that dies before any launch fails its item, not a config. The faults are simulated
(tests/campaign_faults.py) around the real kernels under the interpreter."""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
from types import SimpleNamespace

import pytest
import torch

from tests.campaign_faults import COMPILED, ENV
from triton_conv.campaign import check_child, check_process, setup_steps, spec
from triton_conv.campaign.check_process import CheckProcess, ItemCheckFailed
from triton_conv.campaign.limits import ItemTimeout, time_limit
from triton_conv.pruning import pruned_space

LAUNCH = "tests.campaign_faults:faulty_launch"


@pytest.fixture
def item_and_configs():
    tiny = spec.tiny()
    item = spec.plan_items(tiny)["fprop"][0]
    base = pruned_space(item.problem, "fprop", tiny.torch_dtype, tiny.device)[0]
    # five names for one tile (the interpreter ignores stages): each launch is the real kernel's
    return item, [dataclasses.replace(base, num_stages=stages) for stages in range(1, 6)], tiny.dtype


@pytest.fixture
def checker(monkeypatch, tmp_path):
    # Elsewhere, with no PYTHONPATH: the child imports the campaign's own package from its folder
    # (and tests.campaign_faults beside it), whatever the cwd or PYTHONPATH say.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    process = CheckProcess("cpu", launch=LAUNCH)
    yield process
    process.close()


@pytest.mark.interpreter  # real launches on CPU tensors
def test_a_faulting_config_costs_itself_and_a_restart(monkeypatch, checker, item_and_configs):
    item, (ok, dies, wrong, lost, last), dtype = item_and_configs
    monkeypatch.setattr(check_process, "RESTARTS_PER_ITEM", 2)
    behaviours = {ok: "compiled", dies: "die", wrong: "wrong", lost: "lost"}
    monkeypatch.setenv(ENV, ";".join(f"{config}={what}" for config, what in behaviours.items()))

    with pytest.raises(ItemCheckFailed, match="KeyError"):  # the item's own failure (its dtype)...
        list(checker.check(item, "no-such-dtype"))
    assert isinstance(ItemCheckFailed("x"), RuntimeError)
    first = checker.process
    assert first is not None and first.poll() is None  # ...leaves the child running for the next
    # It dies now, unseen (between the poll before a request and the request): the request breaks
    # the pipe, and a new child takes the whole item.
    first.kill()
    os.waitid(os.P_PID, first.pid, os.WEXITED | os.WNOWAIT)
    monkeypatch.setattr(first, "poll", lambda: None)

    compiles = []
    candidates = (ok, dies, wrong, lost, last)
    results = list(
        checker.check(dataclasses.replace(item, candidates=candidates), dtype, lambda *c: compiles.append(c))
    )
    assert [config for config, _, _ in results] == [ok, dies, wrong, lost, last]  # one answer each, in order
    (_, ok_error, ok_failure), died, wrong_result, faulted, unchecked = results
    assert ok_failure is None and ok_error < 1e-2 and compiles == [COMPILED]  # the child's compile, counted
    assert math.isnan(died[1]) and "died in this launch (exit code 9)" in died[2]
    assert wrong_result[2] is None and wrong_result[1] == pytest.approx(1.0)  # zeros: checked, not trusted
    assert math.isnan(faulted[1]) and "illegal memory access" in faulted[2]
    # the third child ending on the item passes RESTARTS_PER_ITEM: the rest is reported, not run again
    assert "not checked: 3 check processes ended on this item" in unchecked[2]
    assert checker.started == 3 and checker.process is None and first.returncode == -9

    # The configs that faulted the child, once each: at FAULTS_BEFORE_SKIP = 1 no child launches them
    monkeypatch.setattr(check_process, "FAULTS_BEFORE_SKIP", 1)
    again = list(checker.check(dataclasses.replace(item, candidates=(lost, dies)), dtype))
    assert [(c, e != e, f) for c, e, f in again] == [
        (c, True, "not checked: it faulted the check's process on 1 items") for c in (lost, dies)
    ]
    assert checker.started == 3 and checker.process is None


@pytest.mark.interpreter  # real launches on CPU tensors
def test_a_hung_launch_costs_its_config_and_never_reaches_another_item(
    monkeypatch, checker, item_and_configs
):
    item, (ok, hangs, ok2, ok3, ok4), dtype = item_and_configs
    monkeypatch.setenv(ENV, f"{hangs}=hang")
    logged = []
    run = SimpleNamespace(spec=spec.tiny(), checker=checker, checks=[], checked={},
                          out=SimpleNamespace(log=logged.append), count_compile=None)  # fmt: skip

    # A caller that stops reading mid-item (the child is in the hung launch) and keeps the generator:
    # the next item must not get the hung child, nor read its answers.
    left = checker.check(dataclasses.replace(item, candidates=(ok, hangs)), dtype)
    assert next(left)[0] == ok
    hung_child = checker.process
    following = dataclasses.replace(item, layer="following", candidates=(ok2, ok3))
    with time_limit(60.0):  # the guard of a check that would wait on the hung child
        setup_steps.check_item(run, following)
    assert run.checked[following.id] == (ok2, ok3) and hung_child.poll() is not None and checker.started == 2

    # A hung launch past the item's limit: the child is killed (no late answer can leak), the config
    # is named, the rest is listed as not checked and what passed before it is still timed.
    child, hung = checker.process, dataclasses.replace(item, layer="hung", candidates=(ok4, hangs, ok))
    with pytest.raises(ItemTimeout), time_limit(2.0):
        setup_steps.check_item(run, hung)
    assert checker.process is None and child.poll() is not None
    rows = [(r["config"], r["passed"], r["error"]) for r in run.checks if r["item"] == hung.id]
    assert rows == [
        (str(ok4), True, None),
        (str(hangs), False, "its launch was still running when the item's time limit struck"),
        (str(ok), False, "not checked when the item's time limit struck"),
    ]
    assert run.checked[hung.id] == (ok4,)
    # the hang is a failure to read first; a config the limit kept from starting is not one
    lines = [line for line in logged if hung.id in line]
    assert [line.split(f" {hung.id} ")[0] for line in lines] == ["CHECK FAILED", "CHECK NOT RUN"]
    assert lines[1].endswith(f"{ok}: no result; not checked when the item's time limit struck")

    # The hung config is never launched again (configs are shared by many items, and each launch
    # would cost a whole limit): a later item that lists it reports it unchecked, and checks the rest.
    later = dataclasses.replace(item, layer="later", candidates=(hangs, ok))
    with time_limit(60.0):
        setup_steps.check_item(run, later)
    rows = [(r["config"], r["passed"], r["error"]) for r in run.checks if r["item"] == later.id]
    assert rows == [
        (str(hangs), False, f"not checked: still running when {hung.id}'s time limit struck"),
        (str(ok), True, None),
    ]
    assert run.checked[later.id] == (ok,) and checker.hung == {("fprop", str(hangs)): hung.id}

    # A new child slower to start than its item's limit costs that item, not the child: the check
    # does not fall back to this process (where a fault would end the campaign).
    checker.close()  # the next item needs a new child
    monkeypatch.setattr(check_process, "CHILD_MAIN", "import time; time.sleep(60)")
    slow = dataclasses.replace(item, layer="slow", candidates=(ok,))
    with pytest.raises(ItemTimeout), time_limit(0.5):
        setup_steps.check_item(run, slow)
    assert checker.unavailable is None and checker.process is None and checker.started == 4
    assert run.checked[slow.id] == ()  # the timing step says no candidate passed, not "budget"


def test_the_child_probes_a_real_context_only_on_a_gpu():
    assert check_child.context_alive("cpu")
    if torch.cuda.is_available():
        assert check_child.context_alive("cuda")


@pytest.mark.interpreter  # real launches on CPU tensors
def test_a_child_that_cannot_start_leaves_the_check_to_this_process(monkeypatch, item_and_configs):
    item, configs, dtype = item_and_configs
    monkeypatch.setattr(check_process, "CHILD_MAIN", "import sys; sys.exit(5)")  # dies before it is ready
    checker = CheckProcess("cpu")
    results = list(checker.check(dataclasses.replace(item, candidates=tuple(configs[:2])), dtype))
    assert checker.unavailable == "the check's process did not start (EOFError, exit code 5)"
    assert [c for c, _, _ in results] == configs[:2] and all(f is None and e < 1e-2 for _, e, f in results)
    list(checker.check(dataclasses.replace(item, candidates=(configs[2],)), dtype))
    assert checker.started == 1 and checker.process is None  # tried once, not once per item


@pytest.mark.interpreter  # real launches on CPU tensors
def test_a_first_child_slow_to_start_is_tried_again_before_the_check_moves_here(
    monkeypatch, item_and_configs
):
    """The first child's start cut by its item's limit costs that item; the next item starts another
    (a check here risks the campaign on a fault). Only after SLOW_STARTS such starts in a row does the
    check run in this process, as it does at once when the child dies starting."""
    item, configs, dtype = item_and_configs
    monkeypatch.setattr(check_process, "CHILD_MAIN", "import time; time.sleep(60)")
    checker = CheckProcess("cpu")
    for attempt in range(1, check_process.SLOW_STARTS + 1):
        assert checker.unavailable is None
        with pytest.raises(ItemTimeout), time_limit(0.5):
            list(checker.check(dataclasses.replace(item, candidates=(configs[0],)), dtype))
        assert checker.started == attempt and checker.process is None and checker.slow_starts == attempt
    assert checker.unavailable == "the check's process did not start (ItemTimeout, signal 9)"
    (result,) = checker.check(dataclasses.replace(item, candidates=(configs[1],)), dtype)
    assert result[0] == configs[1] and result[2] is None and result[1] < 1e-2 and checker.started == 2


# A stand-in child, quick to start (no torch): ready, then it takes one item and dies before a launch.
DIES_ON_RECEIPT = """import os, pickle, sys
answers = os.fdopen(os.dup(1), "wb")
for answer in (("ready", os.getpid()), None, ("request",)):
    if answer is None:
        sys.stdin.buffer.read(1)
    else:
        pickle.dump(answer, answers)
        answers.flush()
os._exit(9)
"""


def test_a_child_that_dies_before_any_launch_fails_the_item_not_a_config(monkeypatch, item_and_configs):
    item, configs, dtype = item_and_configs
    monkeypatch.setattr(check_process, "CHILD_MAIN", DIES_ON_RECEIPT)
    checker = CheckProcess("cpu")
    with pytest.raises(ItemCheckFailed, match=r"died before its first launch.*\(exit code 9\)"):
        list(checker.check(dataclasses.replace(item, candidates=tuple(configs[:2])), dtype))
    assert checker.started == 1 and checker.process is None and not checker.faults


def test_a_child_that_will_not_die_is_left_behind(monkeypatch):
    """A child stuck in the driver (a kernel that does not stop) may outlive SIGKILL for a while:
    the campaign waits STOP_WAIT_S, not forever."""
    killed = []

    class Stuck:
        stdin = stdout = SimpleNamespace(close=lambda: None)
        returncode = None

        def poll(self):
            return None

        def kill(self):
            killed.append(True)

        def wait(self, timeout=None):
            assert timeout == check_process.STOP_WAIT_S
            raise subprocess.TimeoutExpired("child", timeout)

    checker = CheckProcess("cpu")
    checker.process, checker.busy = Stuck(), True
    checker.close()
    assert killed == [True] and checker.process is None and not checker.busy


def launch_leaving_one_element(pass_name, problem, tensors, config, transposed=False):
    """A launch whose output is right but for its first element, which it never writes."""
    from triton_conv.campaign.runners import reference_result

    def run():
        want = reference_result(pass_name, problem, tensors, transposed).to(tensors["x"].dtype)
        got, written = torch.empty_like(want), torch.ones(want.shape, dtype=torch.bool, device=want.device)
        written[(0,) * want.dim()] = False
        got[written] = want[written]
        return got

    return run


def test_an_output_element_no_launch_writes_fails_the_check(item_and_configs):
    """Whatever memory the allocator hands the output, an element the launch never writes reads
    NaN in the check (and torch's deterministic settings are left as they were)."""
    item, configs, dtype = item_and_configs
    request = {"launch": f"{__name__}:launch_leaving_one_element", "problem": item.problem,
               "pass_name": item.pass_name, "transposed": item.transposed, "dtype": dtype,
               "candidates": configs[:1]}  # fmt: skip
    ((error, failure),) = check_child.check_configs(request, "cpu")
    assert failure is None and math.isnan(error)
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.utils.deterministic.fill_uninitialized_memory
