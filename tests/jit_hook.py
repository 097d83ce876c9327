"""The specialisations that launches ask Triton's JIT for, recorded by Triton's own binder for a GPU
target without compiling or launching anything: what the tests compare the compile workers'
recordings with. For a process with TRITON_INTERPRET=0 (the subprocesses of those tests)."""

from __future__ import annotations


def launched_keys(run, target) -> set[tuple[str, str, str]]:
    """(module, kernel, specialisation key) of every launch `run()` makes, for `target` (Triton's
    GPUTarget fields); each launch stops at the cache hook, before it compiles."""
    from triton import knobs

    from triton_conv.campaign.target import use_compile_only_driver

    use_compile_only_driver(target)
    launched: set[tuple[str, str, str]] = set()

    def hook(*, key, fn, **_):
        launched.add((fn.module, fn.name, str(key)))
        return True  # stopped before it compiles: there is no GPU to launch on

    knobs.runtime.jit_cache_hook = hook
    try:
        run()
    finally:
        knobs.runtime.jit_cache_hook = None
    return launched
