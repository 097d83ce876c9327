"""The main loops' machine code holds issue 12's targets, read with the installed Triton: how the SASS
is read (tests on a hand-written listing), every layer and pass of the report compiled at the configs
the package would choose and held to the targets (a kernel change that crosses one fails here), and
the committed report for this Triton."""

from __future__ import annotations

import os
import re

import pytest

from triton_conv import mainloop_report, sass
from triton_conv.mainloop_cases import chosen_configs, layer_problems

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A loop as nvdisasm -c prints one: a filler, two wgmma (one keeping a group in flight), a cp.async,
# a select, an inner retry loop without wgmma, and the back edge.
LISTING = """
        .text.k:
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*0010*/                   LDGSTS.E.BYPASS.128 [R2], desc[UR4][R4.64] ;
        /*0020*/                   LDGSTS.E.BYPASS.128 [R2+0x1000], desc[UR4][R4.64] ;
.L_x_1:
        /*0030*/                   DEPBAR.LE SB0, 0x1 ;
        /*0040*/              @!PT LDS RZ, [RZ] ;
        /*0050*/                   HGMMA.64x128x16.F32.BF16 R24, gdesc[UR8], R24 ;
        /*0060*/                   HGMMA.64x128x16.F32.BF16 R24, gdesc[UR8], R24, gsb0 ;
.L_x_2:
        /*0070*/                   SYNCS.PHASECHK.TRANS64.TRYWAIT P0, [UR9], R5 ;
        /*0080*/              @!P0 BRA `(.L_x_2) ;
        /*0090*/                   WARPGROUP.DEPBAR.LE gsb0, 0x1 ;
        /*00a0*/                   SEL R6, RZ, 0x10, P1 ;
        /*00b0*/                   IMAD.MOV.U32 R7, RZ, RZ, UR4 ;
        /*00c0*/                   IADD3 R8, R8, 0x1, RZ ;
        /*00d0*/                   LDGSTS.E.BYPASS.128 [R2], desc[UR4][R4.64], P2 ;
        /*00e0*/               @P3 BRA `(.L_x_1) ;
        /*00f0*/                   EXIT ;
"""


def test_the_main_loop_is_the_innermost_loop_holding_wgmma():
    instructions, labels = sass.parse(LISTING)
    assert [ins.base for ins in instructions[:3]] == ["MOV", "LDGSTS", "LDGSTS"]
    first, last = sass.main_loop(instructions, labels)
    assert instructions[first].address == 0x30 and instructions[last].address == 0xE0
    stats = sass.analyse(LISTING, num_warps=8)
    assert stats.per_warp == 11 and stats.fillers == 1  # the @!PT filler is never issued
    assert stats.by_kind == {
        "barriers/waits": 3, "wgmma": 2, "other": 3, "predicates/selects": 1,
        "address/integer": 1, "async copy/TMA": 1,
    }  # fmt: skip
    assert stats.opcodes["IMAD"] == 1 and stats.by_kind["other"] == 3  # IMAD.MOV is a move
    assert stats.wgmma_in_flight == 1 and stats.cp_async_in_flight == 1
    assert stats.loads_in_flight == 2.0  # two copies before the loop, one per trip
    assert stats.ldgsts == 1 and stats.utmaldg == 0 and not stats.a_from_registers
    # Two 64x128x16 wgmma per warpgroup, two warpgroups: 128x128x32 per trip, half a reference step.
    assert stats.trip_macs == 128 * 128 * 32
    assert stats.per_reference_step() == 11 * 8 * 2
    assert stats.kind_per_reference_step("wgmma") == 2 * 8 * 2


def test_no_wgmma_loop_reads_as_none():
    assert sass.analyse(LISTING.replace("HGMMA", "HMMA"), num_warps=4) is None


# Targets a layer still misses with one Triton (notes/kernels.md says why), with the ratio to the
# plain matmul it may not cross: triton version -> {(layer, pass, kernel): ratio}. The targets
# are for Triton 3.6 and 3.9 (CI's legs), which miss none; 3.7 (Python 3.10's torch wheels) compiles
# the stem's weight gradient as 3.6 does (4,192 per step) but the plain matmul leaner (2,320): 1.81x;
# 3.8 likewise (4,096 against 2,320: 1.77x), and, since the zero run's segments (ce09439), schedules
# the stem's input gradient 2 instructions per warp longer (3,936 against its matmul's 3,104: 1.27x,
# where 3,872 was 1.25x; 3.6's and 3.9's loops are unchanged; the stem's input gradient is never run
# in training, where its input is the image).
STEM = "7x7 s2 stem, 224x224, 3 -> 64"
KNOWN_MISSES: dict = {version: {(STEM, "wgrad", "triton-conv"): 1.85} for version in ("3.7", "3.8")}
KNOWN_MISSES["3.8"][(STEM, "dgrad", "triton-conv")] = 1.30


def _representative():
    """Every layer and pass of the report at the configs the package would choose (the untuned
    default and the pruning's first), the plain matmul of the same GEMM and tile, and Inductor's
    forward template at the default: the whole report's targets, with the installed Triton."""
    chosen = []
    for case in mainloop_report.cases(best=1):
        peer = case.kernel == "Inductor" and case.pass_name == "fprop" and case.choice == "default"
        if case.kernel in ("triton-conv", "matmul") or peer:
            chosen.append(case)
    return chosen


@pytest.fixture(scope="module")
def rows():
    return mainloop_report.compile_rows(_representative(), workers=2)


def test_representative_main_loops_hold_the_targets(rows):
    kinds = {(r.case.pass_name, r.case.kernel) for r in rows}
    assert {("fprop", "Inductor"), ("wgrad", "matmul"), ("dgrad", "triton-conv")} <= kinds
    known = KNOWN_MISSES.get(mainloop_report.triton_version(), {})
    missing = [r for r in rows if (r.case.layer, r.case.pass_name, r.case.kernel) in known]
    held = [r for r in rows if r not in missing]
    assert mainloop_report.check_targets(held) == []
    for row in missing:  # within its documented ratio to the matmul, and nothing else broken
        matmul = mainloop_report.reference(rows, row, "matmul")
        assert row.per_step <= known[row.case.layer, row.case.pass_name, row.case.kernel] * matmul.per_step
        assert row.case.layer == STEM and not row.report.spills
    for row in rows:
        if row.case.kernel != "triton-conv":
            continue
        loop = row.report.loop
        assert not row.report.spills, row.case
        if row.case.layer.startswith("7x7"):
            # The stem's fprop reads 3-channel rows element by element, as its matmul (K = 147)
            # does: held to the matmul above. Its backward passes read zero-padded copies in vectors.
            if row.case.pass_name != "fprop":
                assert loop.ldgsts > 0 and loop.wgmma_in_flight >= 1, row.case
        else:
            if row.case.choice == "default":  # the absolute bar, for the 128-wide default tiles
                assert row.per_step <= 960, (row.case, row.per_step)
            assert loop.ldgsts + loop.utmaldg > 0 and not loop.a_from_registers, row.case
            assert loop.wgmma_in_flight >= 1 and loop.loads_in_flight >= 2


def _committed_reports():
    folder = os.path.join(REPO, "notes", "autotune")
    names = sorted(n for n in os.listdir(folder) if re.fullmatch(r"sm90_mainloop-triton\d+\.\d+\.md", n))
    return [os.path.join(folder, name) for name in names]


@pytest.mark.parametrize("path", _committed_reports(), ids=os.path.basename)
def test_committed_report(path):
    """Each committed report (one per Triton it was made with: CI's legs, 3.6 and 3.9) says which
    Triton and commit made it and covers every layer and pass."""
    with open(path) as handle:
        text = handle.read()
    version = re.search(r"triton(\d+\.\d+)\.md$", path).group(1)
    assert re.search(rf"- Triton {re.escape(version)}\.\d+,", text) and "commit " in text
    for label, _ in mainloop_report.LAYERS:
        for pass_name in ("fprop", "dgrad", "wgrad"):
            assert f"| {label}" in text and f"## {pass_name}" in text


@pytest.mark.parametrize("path", _committed_reports(), ids=os.path.basename)
def test_committed_report_shows_the_configs_the_package_chooses_now(path):
    """A change of the default or of the pruning's ranking makes the committed reports stale: each
    must show, per layer and pass, the configs mainloop_cases.chosen_configs picks today."""
    with open(path) as handle:
        text = handle.read()
    for label, problem in layer_problems():
        for pass_name in ("fprop", "dgrad", "wgrad"):
            for choice, config in chosen_configs(problem, pass_name):
                shown = mainloop_report._config_text(
                    (config.block_m, config.block_n, config.block_k, config.num_warps, config.num_stages,
                     config.split_k)
                )  # fmt: skip
                cells = (label, pass_name, "triton-conv", choice, shown)
                row = r"\|\s*" + r"\s*\|\s*".join(re.escape(cell) for cell in cells) + r"\s*\|"
                assert re.search(row, text), f"{os.path.basename(path)} is stale: no row {cells}"


def test_there_is_a_report_for_the_installed_triton_or_it_is_said():
    """Another Triton of the supported range (3.7, 3.8) is held to the targets above by its own
    compiles, without a committed report: a skip that says how to make one."""
    if not os.path.exists(os.path.join(REPO, mainloop_report.default_path())):
        made = ", ".join(os.path.basename(path) for path in _committed_reports())
        pytest.skip(f"no committed report for this Triton ({made} are): `triton-conv sass-report` makes one")
