"""tests/launch_census.py keys a launch as Triton's JIT specialises it: what it counts is what a GPU
run compiles."""

import torch

from triton_conv.launchers.common import LaunchSpec

from .launch_census import variant_key


def _spec(*args, **constexprs):
    return LaunchSpec(
        kernel=torch.nn.Identity, grid=(1, 1, 1), args=args, constexprs=constexprs, num_warps=4, num_stages=3
    )


def test_integers_are_told_apart_where_triton_specialises_them():
    keys = {n: variant_key(_spec(n)) for n in (1, 2, 3, 16, 32, 2**31)}
    assert keys[2] == keys[3] and keys[16] == keys[32]
    assert len({keys[1], keys[2], keys[16], keys[2**31]}) == 4


def test_tensors_by_dtype_and_alignment_and_constexprs_by_value():
    storage = torch.zeros(64, dtype=torch.float16)
    assert variant_key(_spec(storage)) == variant_key(_spec(storage[8:]))  # 16 bytes on: aligned
    assert variant_key(_spec(storage)) != variant_key(_spec(storage[1:]))
    assert variant_key(_spec(storage)) != variant_key(_spec(storage.float()))
    assert variant_key(_spec(BLOCK_M=64)) != variant_key(_spec(BLOCK_M=128))
    assert variant_key(_spec(True)) == variant_key(_spec(False)) != variant_key(_spec(1.0))
