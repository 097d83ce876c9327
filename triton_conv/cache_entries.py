"""What a tuning-cache entry must hold to be used: configs whose fields are all there, whole numbers
within sane bounds, powers of two where KernelConfig wants them, and times that are numbers. An
entry that fails is dropped with a warning (tuning_cache.TuningCache._read) and its key re-tuned,
never launched: a hand-edited or foreign file cannot make conv2d raise or launch a nonsense tile.
"""

from __future__ import annotations

from .configs import CONFIG_BOUNDS, KernelConfig


def _valid_config(values) -> bool:
    """KernelConfig's own checks (CONFIG_BOUNDS), on JSON ints only (64.0 or "64" is no config)."""
    if not isinstance(values, dict) or set(values) != set(CONFIG_BOUNDS):
        return False
    if not all(type(values[name]) is int for name in CONFIG_BOUNDS):
        return False
    try:
        KernelConfig.from_dict(values)
    except (TypeError, ValueError):
        return False
    return True


def valid_entry(key: str, entry) -> bool:
    """An entry TuneResult.from_entry reads without error and whose configs are plausible."""
    if not isinstance(entry, dict) or not _valid_config(entry.get("config")):
        return False
    runner_up = entry.get("runner_up")
    if runner_up is not None and not _valid_config(runner_up):
        return False
    numbers = (entry.get("ms"), entry.get("runner_up_ms"))
    if not all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in numbers):
        return False
    return isinstance(entry.get("problem", ""), str) and isinstance(entry.get("timed_on"), (str, type(None)))
