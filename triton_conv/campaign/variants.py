"""What the precompile step compiles: the launches a campaign will make, the kernel binaries
(Triton's specializations) they collapse into, and how those are shared out among the workers.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ..problem import ConvProblem


@dataclass(frozen=True)
class LaunchJob:
    """One launch the campaign (or a tuning) will make: a pass of a problem with a config, bf16 etc.,
    channels_last (a transposed convolution's pass of its view: runners.launch_with_config)."""

    pass_name: str
    problem: ConvProblem
    config: object  # KernelConfig
    dtype: str
    transposed: bool = False
    # None: a campaign item's tensors (runners.make_inputs, channels_last); True or False: a tuning's
    # (tuning.random_inputs in that layout, launched as tuning.pass_runner does): tune_model's jobs
    layout: bool | None = None
    tf32: bool | None = None  # an fp32 tuning's TF32 setting (another kernel each way); None: as is


@dataclass(frozen=True)
class Variant:
    """One kernel binary: the kernel (module, name) and Triton's specialization of it."""

    module: str
    kernel: str
    key: str  # Triton's in-memory cache key of the specialization
    specialization: str  # JSON that JITFunction.preload takes
    jobs: int  # how many of the recorded launches use it

    @property
    def pass_name(self) -> str:
        return self.kernel.removesuffix("_kernel")

    @property
    def short_key(self) -> str:
        """16 hex digits of the specialization key's sha256: its name in compile.json."""
        return hashlib.sha256(f"{self.module}.{self.kernel} {self.key}".encode()).hexdigest()[:16]


# Relative compile cost by kernel, for spreading the work evenly (wgrad's bias-gradient dot and
# split-K reduction make it the heaviest; costs.py holds the absolute seconds).
WEIGHT = {"fprop": 1.0, "dgrad": 1.0, "wgrad": 2.0}


def shares(variants: list[Variant], workers: int) -> list[list[Variant]]:
    """Longest-first onto the least-loaded worker (LPT), by WEIGHT."""
    loads = [[0.0, []] for _ in range(max(1, workers))]
    for variant in sorted(variants, key=lambda v: -WEIGHT.get(v.pass_name, 1.0)):
        least = min(loads, key=lambda load: load[0])
        least[0] += WEIGHT.get(variant.pass_name, 1.0)
        least[1].append(variant)
    return [share for _, share in loads if share]


def variants_json(variants: list[Variant]) -> list[dict]:
    """Each variant's kernel, short key and how many recorded launches share it (for compile.json)."""
    return [{"kernel": v.kernel, "key": v.short_key, "launches": v.jobs} for v in variants]
