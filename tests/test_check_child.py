"""The campaign's check in a child process (triton_conv/campaign/check_child.py): a config that kills
the process, or leaves its CUDA context faulted, costs that config and a restart, never a later
config's check or the campaign; a hung launch past its time limit kills the child, so the next item
cannot read the hung one's answers. The faults are simulated (tests/campaign_faults.py) around the
real kernels under the interpreter."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from tests.campaign_faults import ENV
from triton_conv.campaign import check_child, spec
from triton_conv.campaign.check_child import CheckProcess, ItemCheckFailed
from triton_conv.campaign.limits import ItemTimeout, time_limit
from triton_conv.pruning import search_space

REPO = Path(__file__).resolve().parent.parent
LAUNCH = "tests.campaign_faults:faulty_launch"


@pytest.fixture
def item_and_configs():
    tiny = spec.tiny()
    item = spec.plan_items(tiny)["fprop"][0]
    base = search_space(item.problem, "fprop", tiny.torch_dtype, tiny.device)[0]
    # five names for one tile (the interpreter ignores stages): each launch is the real kernel's
    return item, [dataclasses.replace(base, num_stages=stages) for stages in range(1, 6)], tiny.dtype


@pytest.fixture
def checker(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the child imports tests.campaign_faults
    process = CheckProcess("cpu", launch=LAUNCH)
    yield process
    process.close()


def test_a_faulting_config_costs_itself_and_a_restart(monkeypatch, checker, item_and_configs):
    item, (ok, dies, wrong, lost, last), dtype = item_and_configs
    monkeypatch.setattr(check_child, "RESTARTS_PER_ITEM", 1)
    behaviours = {dies: "die", wrong: "wrong", lost: "lost"}
    monkeypatch.setenv(ENV, ";".join(f"{config}={what}" for config, what in behaviours.items()))

    with pytest.raises(ItemCheckFailed, match="KeyError"):  # the item's own failure (its dtype)...
        list(checker.check(item, "no-such-dtype"))
    assert isinstance(ItemCheckFailed("x"), RuntimeError)
    first = checker.process
    assert first is not None and first.poll() is None  # ...leaves the child running for the next

    results = list(checker.check(dataclasses.replace(item, candidates=(ok, dies, wrong, lost, last)), dtype))
    assert [config for config, _, _ in results] == [ok, dies, wrong, lost, last]  # one answer each, in order
    (_, ok_error, ok_failure), died, wrong_result, faulted, unchecked = results
    assert ok_failure is None and ok_error < 1e-2
    assert math.isnan(died[1]) and "died in this launch (exit code 9)" in died[2]
    assert wrong_result[2] is None and wrong_result[1] == pytest.approx(1.0)  # zeros: checked, not trusted
    assert math.isnan(faulted[1]) and "illegal memory access" in faulted[2]
    # the second death passes RESTARTS_PER_ITEM: the rest is reported unchecked, not run again
    assert "not checked: 2 check processes died" in unchecked[2]
    assert checker.started == 2 and checker.process is None and first.poll() == 9


def test_a_hung_launch_past_its_limit_kills_the_child(monkeypatch, checker, item_and_configs):
    item, (ok, hangs, *_), dtype = item_and_configs
    monkeypatch.setenv(ENV, f"{hangs}=hang")
    answers = checker.check(dataclasses.replace(item, candidates=(ok, hangs)), dtype)
    config, error, failure = next(answers)
    assert config == ok and failure is None and error < 1e-2
    child = checker.process
    with pytest.raises(ItemTimeout), time_limit(3.0):
        next(answers)
    assert checker.process is None and child.poll() is not None  # killed: no late answer can leak


def test_the_child_probes_a_real_context_only_on_a_gpu():
    assert check_child.context_alive("cpu")
    if torch.cuda.is_available():
        assert check_child.context_alive("cuda")


def test_a_child_that_cannot_start_leaves_the_check_to_this_process(monkeypatch, item_and_configs):
    item, configs, dtype = item_and_configs
    monkeypatch.setattr(check_child, "CHILD_MAIN", "import sys; sys.exit(5)")  # dies before it is ready
    checker = CheckProcess("cpu")
    results = list(checker.check(dataclasses.replace(item, candidates=tuple(configs[:2])), dtype))
    assert checker.unavailable == "the check's process did not start (EOFError, exit code 5)"
    assert [c for c, _, _ in results] == configs[:2] and all(f is None and e < 1e-2 for _, e, f in results)
    list(checker.check(dataclasses.replace(item, candidates=(configs[2],)), dtype))
    assert checker.started == 1 and checker.process is None  # tried once, not once per item
