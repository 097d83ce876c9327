"""Tile configurations: what a kernel launch is parameterised by, and the default choice."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .problem import GemmShape


def _is_power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


@dataclass(frozen=True)
class KernelConfig:
    """One tile shape and schedule. Blocks are powers of two and at least 16 (a GPU dot's minimum)."""

    block_m: int = 64
    block_n: int = 64
    block_k: int = 32
    group_m: int = 8
    split_k: int = 1
    num_warps: int = 4
    num_stages: int = 3

    def __post_init__(self):
        for name in ("block_m", "block_n", "block_k"):
            value = getattr(self, name)
            if not isinstance(value, int) or not _is_power_of_two(value) or value < 16:
                raise ValueError(f"config.{name} must be a power of two >= 16, got {value!r}")
        for name in ("group_m", "split_k", "num_warps", "num_stages"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"config.{name} must be a positive int, got {value!r}")
        if not _is_power_of_two(self.num_warps):
            raise ValueError(f"config.num_warps must be a power of two, got {self.num_warps}")

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return (
            f"{self.block_m}x{self.block_n}x{self.block_k} g{self.group_m} s{self.split_k} "
            f"w{self.num_warps} st{self.num_stages}"
        )


def _fit(size: int, lo: int, hi: int) -> int:
    """The smallest power of two >= size, clamped to [lo, hi]."""
    block = lo
    while block < size and block < hi:
        block *= 2
    return block


def default_config(shape: GemmShape, element_size: int) -> KernelConfig:
    """A reasonable config without tuning: big tiles for big GEMMs, no wider than the problem."""
    block_m = 128 if shape.m >= 4096 else 64
    block_n = _fit(shape.n, 16, 128)
    block_k = _fit(shape.k, 16, 64 if element_size <= 2 else 32)
    num_warps = 8 if block_m * block_n >= 128 * 128 else 4
    return KernelConfig(block_m, block_n, block_k, 8, 1, num_warps, 3)
