"""The reduction loop in a kernel's machine code (SASS), read without a GPU.

nvdisasm -c prints one instruction per line with its address and labels for branch targets. The main
loop is the innermost loop (a backward branch and the code between its target and itself) that holds
the wgmma (HGMMA) instructions. Each of its instructions is counted once by kind: what one trip
through the loop issues per warp, whichever branches inside it are taken. Instructions predicated
on `!PT` (never true) are fillers the scheduler never runs and are not counted.

One 128x128x64 step of tensor work takes a Hopper SM's tensor cores 512 cycles, in which its four
schedulers have 2,048 issue slots: `per_reference_step` scales a loop to that step (instructions
per warp x warps x the multiply-adds of the reference step / the multiply-adds of one trip).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

REFERENCE_STEP = (128, 128, 64)  # BM x BN x BK of the step every loop is scaled to
# The kinds an instruction is counted as (_KIND_OF; "other" for the rest), in the report's column order.
KINDS = ("wgmma", "async copy/TMA", "address/integer", "predicates/selects", "barriers/waits", "other")

_LINE = re.compile(
    r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_]*)((?:\.[A-Za-z0-9_]+)*)\s*([^;]*);"
)
_LABEL = re.compile(r"^(\.L\w+):")
_TARGET = re.compile(r"`\((\.L\w+)\)")
_HGMMA_SHAPE = re.compile(r"HGMMA\.(\d+)x(\d+)x(\d+)")

_KIND_OF = {
    "HGMMA": "wgmma",
    **dict.fromkeys(
        ("LDGSTS", "LDGDEPBAR", "UTMALDG", "UTMASTG", "UTMAPF", "UTMACCTL", "UTMACMDFLUSH", "UBLKCP"),
        "async copy/TMA",
    ),
    **dict.fromkeys(
        ("BAR", "DEPBAR", "WARPGROUP", "SYNCS", "MEMBAR", "FENCE", "ERRBAR", "WARPSYNC", "ARRIVES"),
        "barriers/waits",
    ),
    **dict.fromkeys(
        ("ISETP", "UISETP", "FSETP", "DSETP", "PSETP", "PLOP3", "UPLOP3", "SEL", "USEL", "FSEL")
        + ("P2R", "R2P", "VOTE", "VOTEU"),
        "predicates/selects",
    ),
    **dict.fromkeys(
        ("IADD3", "UIADD3", "IADD", "VIADD", "IMAD", "UIMAD", "IMUL", "LEA", "ULEA", "SHF", "USHF")
        + ("LOP3", "ULOP3", "IABS", "IMNMX", "UIMNMX", "VIMNMX", "VIADDMNMX", "SGXT", "USGXT")
        + ("BMSK", "UBMSK", "FLO", "UFLO", "POPC", "UPOPC", "BREV", "UBREV", "PRMT", "UPRMT", "ISCADD"),
        "address/integer",
    ),
}


@dataclass(frozen=True)
class Instruction:
    address: int
    opcode: str  # with its modifiers, e.g. "HGMMA.64x128x16.F32.BF16"
    operands: str
    predicate: str  # "" or e.g. "@P5", "@!PT"

    @property
    def base(self) -> str:
        return self.opcode.split(".", 1)[0]

    @property
    def never_runs(self) -> bool:
        return self.predicate.strip() == "@!PT"

    @property
    def kind(self) -> str:
        if self.opcode.startswith("IMAD.MOV"):
            return "other"  # a move, spelt as a multiply-add
        return _KIND_OF.get(self.base, "other")


def parse(sass: str) -> tuple[list[Instruction], dict[str, int]]:
    """Instructions in address order and each label's address (of the instruction after it)."""
    instructions: list[Instruction] = []
    labels: dict[str, int] = {}
    pending: list[str] = []
    for line in sass.splitlines():
        label = _LABEL.match(line.strip())
        if label:
            pending.append(label.group(1))
            continue
        found = _LINE.search(line)
        if not found:
            continue
        address = int(found.group(1), 16)
        for name in pending:
            labels[name] = address
        pending = []
        instructions.append(
            Instruction(
                address,
                found.group(3) + found.group(4),
                found.group(5).strip(),
                (found.group(2) or "").strip(),
            )
        )
    return instructions, labels


def loops(instructions: list[Instruction], labels: dict[str, int]) -> list[tuple[int, int]]:
    """(first, last) instruction indices of every loop: a branch back to an earlier label."""
    index_of = {ins.address: i for i, ins in enumerate(instructions)}
    found = []
    for i, ins in enumerate(instructions):
        if ins.base != "BRA" or ins.never_runs:
            continue
        target = _TARGET.search(ins.operands)
        if target and target.group(1) in labels:
            start = index_of.get(labels[target.group(1)])
            if start is not None and start <= i:
                found.append((start, i))
    return found


def main_loop(instructions: list[Instruction], labels: dict[str, int]) -> tuple[int, int] | None:
    """The innermost loop that holds HGMMA instructions, or None when no loop does."""
    holding = [
        (first, last)
        for first, last in loops(instructions, labels)
        if any(ins.base == "HGMMA" for ins in instructions[first : last + 1])
    ]
    return min(holding, key=lambda span: span[1] - span[0]) if holding else None


@dataclass(frozen=True)
class LoopStats:
    """What one trip through the main loop issues per warp, and what the loop keeps in flight."""

    per_warp: int  # instructions issued per warp per trip (fillers predicated on !PT excluded)
    by_kind: dict  # kind -> instructions per warp per trip
    opcodes: dict  # base opcode -> instructions per warp per trip
    trip_macs: int  # multiply-adds of one trip, whole CTA (from the HGMMA shapes and warpgroups)
    wgmma_in_flight: int | None  # WARPGROUP.DEPBAR.LE gsb0, N in the loop: the smallest N (0 serialises)
    cp_async_in_flight: int | None  # DEPBAR.LE SB0, N in the loop (cp.async groups left in flight)
    loads_in_flight: float | None  # async copies issued before the loop / per trip: stages ahead
    ldgsts: int
    utmaldg: int
    register_loads: int  # LDG/LDS/STS in the loop: operands moved through registers
    a_from_registers: bool  # an HGMMA reads its A operand from registers rather than shared memory
    num_warps: int = 0
    fillers: int = 0
    text: str = field(default="", repr=False)

    def per_reference_step(self) -> float:
        """Instructions x warps per 128x128x64 step of one CTA (the issue slots the step uses)."""
        m, n, k = REFERENCE_STEP
        return self.per_warp * self.num_warps * (m * n * k) / self.trip_macs

    def kind_per_reference_step(self, kind: str) -> float:
        m, n, k = REFERENCE_STEP
        return self.by_kind.get(kind, 0) * self.num_warps * (m * n * k) / self.trip_macs


def _in_flight(loop: list[Instruction], opcode: str, operand: str) -> int | None:
    values = [
        int(found.group(1), 16)
        for ins in loop
        if ins.opcode == opcode and not ins.never_runs
        for found in [re.search(operand + r",\s*0x([0-9a-f]+)", ins.operands)]
        if found
    ]
    return min(values) if values else None


def analyse(sass: str, num_warps: int) -> LoopStats | None:
    """The main loop of a kernel's SASS (nvdisasm -c output), or None when it has no HGMMA loop."""
    instructions, labels = parse(sass)
    span = main_loop(instructions, labels)
    if span is None:
        return None
    first, last = span
    loop = instructions[first : last + 1]
    issued = [ins for ins in loop if not ins.never_runs]
    warpgroups = max(1, num_warps // 4)
    macs = 0
    for ins in issued:
        shape = _HGMMA_SHAPE.match(ins.opcode)
        if shape:
            m, n, k = map(int, shape.groups())
            macs += m * n * k * warpgroups
    async_ops = ("LDGSTS", "UTMALDG", "UBLKCP")
    per_trip = sum(ins.base in async_ops for ins in issued)
    before = sum(ins.base in async_ops for ins in instructions[:first])
    return LoopStats(
        per_warp=len(issued),
        by_kind=dict(Counter(ins.kind for ins in issued)),
        opcodes=dict(Counter(ins.base for ins in issued)),
        trip_macs=macs,
        wgmma_in_flight=_in_flight(loop, "WARPGROUP.DEPBAR.LE", "gsb0"),
        cp_async_in_flight=_in_flight(loop, "DEPBAR.LE", "SB0"),
        loads_in_flight=before / per_trip if per_trip else None,
        ldgsts=sum(ins.base == "LDGSTS" for ins in issued),
        utmaldg=sum(ins.base == "UTMALDG" for ins in issued),
        register_loads=sum(ins.base in ("LDG", "LDS", "STS", "LDSM") for ins in issued),
        a_from_registers=any(
            ins.base == "HGMMA" and not ins.operands.split(",")[1].strip().startswith("gdesc")
            for ins in issued
        ),
        num_warps=num_warps,
        fillers=len(loop) - len(issued),
        text="\n".join(f"{i.predicate:>6} {i.opcode} {i.operands}" for i in loop),
    )
