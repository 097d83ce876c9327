"""The sm_90 static report: configs of the space compile for Hopper (a deterministic sample here, all
of them in `triton-conv static-report`), and each committed table (one per Triton it was made with)
lists exactly the current space and says which Triton made it."""

from __future__ import annotations

import os
import re

import pytest
import torch

from triton_conv import static_report
from triton_conv.problem import PASSES
from triton_conv.search_space import config_space

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMITTED = os.path.join(REPO, static_report.default_path())
SIZES = {"fp16": 2, "bf16": 2, "fp32": 4}


def _sample():
    """Per pass: the first, middle and last config of the space, each in another dtype."""
    cases = []
    for pass_name in PASSES:
        space = config_space(pass_name)
        for dtype, index in zip(("fp16", "bf16", "fp32"), (0, len(space) // 2, len(space) - 1), strict=True):
            cases.append((pass_name, dtype, space[index]))
    return cases


SAMPLE = _sample()


@pytest.fixture(scope="module")
def compiled():
    return dict(zip(SAMPLE, static_report.compile_cases(SAMPLE, workers=2), strict=True))


@pytest.mark.parametrize("case", SAMPLE, ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}".replace(" ", "_"))
def test_sampled_config_compiles_for_sm90(case, compiled):
    pass_name, dtype, config = case
    report = compiled[case]
    assert report.capability == 90 and report.kernel == f"{pass_name}_kernel"
    # the shared_memory rule's formula is what the compiler allocates, give or take small extras
    # (wgrad's TMA pipeline keeps a barrier per stage)
    assert report.shared_bytes <= config.shared_bytes(SIZES[dtype], (9, 0)) + 4096
    verdict = static_report.verdict(pass_name, static_report._BY_NAME[dtype], config, report)
    assert not verdict.startswith("FLAG"), (verdict, report)
    if verdict.startswith("ok"):  # what the tuner may time on Hopper: wgmma, no local-memory traffic
        assert report.wgmma and report.local_loads == 0, report


@pytest.fixture(scope="module")
def compiled_for_sm80():
    return dict(zip(SAMPLE, static_report.compile_cases(SAMPLE, workers=2, capability=80), strict=True))


@pytest.mark.parametrize("case", SAMPLE, ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}".replace(" ", "_"))
def test_shared_memory_rule_is_what_each_architecture_allocates(case, compiled, compiled_for_sm80):
    """Triton's pipeliner keeps num_stages operand buffers on sm_90 and num_stages - 1 on sm_80
    (KernelConfig.shared_bytes): the shared_memory rule may neither let a config through that cannot
    launch nor prune one an A100 or RTX 4090 could run."""
    pass_name, dtype, config = case
    for capability, report in ((90, compiled[case]), (80, compiled_for_sm80[case])):
        rule = config.shared_bytes(SIZES[dtype], (capability // 10, 0))
        assert rule <= report.shared_bytes <= rule + 1024, (capability, report.shared_bytes, rule)


def _committed_tables():
    """Every committed static table: one per Triton the reports were made with (CI's two legs)."""
    folder = os.path.join(REPO, "notes", "autotune")
    names = sorted(
        name for name in os.listdir(folder) if re.fullmatch(r"sm90_static-triton\d+\.\d+\.md", name)
    )
    return [os.path.join(folder, name) for name in names]


def test_there_is_a_table_for_the_installed_triton_or_it_is_said():
    """CI's legs (Triton 3.6, 3.9) have theirs; another Triton in the supported range (3.7 and 3.8,
    which Python 3.10's torch wheels bring) runs every compile check above but has no committed
    table: a skip that says how to make one, not a failure."""
    if not os.path.exists(COMMITTED):
        made = ", ".join(os.path.basename(path) for path in _committed_tables())
        pytest.skip(f"no committed table for this Triton ({made} are): `triton-conv static-report` makes one")


@pytest.mark.parametrize("path", _committed_tables(), ids=os.path.basename)
def test_committed_table_lists_the_current_space(path):
    listed = static_report.listed_cases(path)
    current = {(p, d, str(c)) for p, d, c in static_report.space_cases()}
    missing, stale = current - listed, listed - current
    assert not missing and not stale, (
        f"{path} is out of date ({len(missing)} configs missing, {len(stale)} no longer in the space): "
        "regenerate it with `triton-conv static-report` under that Triton"
    )


@pytest.mark.parametrize("path", _committed_tables(), ids=os.path.basename)
def test_committed_table_is_labelled_and_has_no_flags(path):
    with open(path) as handle:
        text = handle.read()
    version = re.search(r"triton(\d+\.\d+)\.md$", path).group(1)
    assert "compiled, not measured" in text and "sm_90" in text and "commit " in text
    assert re.search(rf"- Triton {re.escape(version)}\.\d+,", text), "the table was made by another Triton"
    assert "FLAG" not in text.split("## ", 1)[1], "a config spills or falls off wgmma unpruned"


def test_space_cases_cover_every_pass_and_dtype():
    cases = static_report.space_cases()
    assert len(cases) == 3 * sum(len(config_space(p)) for p in PASSES)
    assert {d for _, d, _ in cases} == {"fp16", "bf16", "fp32"}


def test_build_spec_uses_the_gpu_flags():
    spec = static_report.build_spec("wgrad", torch.bfloat16, config_space("wgrad")[0])
    assert spec.constexprs["UPCAST"] is False and spec.constexprs["INPUT_PRECISION"] == "ieee"
    spec = static_report.build_spec("fprop", torch.float32, config_space("fprop")[0])
    assert spec.constexprs["INPUT_PRECISION"] == "tf32"
