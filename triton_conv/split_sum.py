"""The split-K sum's shape: how many splits each group sums and how many partial tiles the
finishing split reads. Pure Python in a module of its own: the kernels call split_sum_groups at
compile time, and Triton keys its cache of compiled kernels on that function's source and place,
so an edit elsewhere in the package leaves the compiled kernels valid."""


def split_sum_groups(split_k: int) -> tuple[int, int]:
    """(splits per group, groups) of the split-K sum (kernels/common.py reduce_splits).

    The split that sums a tile's partials reads them one after another, each read a round trip to
    L2: on the H200 of 2026-12-04 about 0.33 µs per 64x64 fp32 partial (fitted to the campaign's
    timings of one config at 16, 32 and 64 splits: `python bench/since_campaign.py --fit`), so that
    64 splits ran slower than 32 on the layers that most need them. In groups, the last split of
    each group to arrive sums its group, and the last group to finish sums the groups' sums: size +
    groups reads on the path of the last split instead of split_k (16 instead of 64), and one step
    more (the group's sum stored and fenced, a second count), counted as two reads. Taken where that
    is fewer: from 9 splits on, so 8 splits keep the one-level sum. The sum's order stays fixed
    (within each group by split, then by group). The kernels call it at compile time on SPLIT_K
    (kernels/common.py wraps it as a triton.constexpr_function), the launchers and the model on
    the host."""
    split_k = int(split_k)
    size = 1
    while size * size < split_k:  # ceil(sqrt(split_k)), in what the JIT lets such a function use
        size += 1
    groups = (split_k + size - 1) // size
    return (size, groups) if size + groups + 2 < split_k else (split_k, 1)


def split_sum_reads(split_k: int) -> int:
    """Partial tiles the finishing split reads one after another (split_sum_groups; a second level
    counted as two reads more) on the longest path, where the last group to finish is a full one
    (a short last group finishing last reads fewer: 10 instead of 14 at 32 splits); 0 without
    split-K, whose tile never leaves the registers."""
    if int(split_k) == 1:
        return 0
    size, groups = split_sum_groups(split_k)
    return split_k if groups == 1 else size + groups + 2
