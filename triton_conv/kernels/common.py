"""@triton.jit helpers shared by the passes' kernels: tile order, im2col indexing, the dot, the epilogue
(next_tap_step: the masked dgrad baseline's tap counter, kernels/dgrad_masked.py)."""

import triton
import triton.language as tl

from ..split_sum import split_sum_groups


@triton.jit
def swizzled_tile(tile_id, tiles_m, tiles_n, GROUP_M: tl.constexpr):
    """Map a linear tile id to (tile_m, tile_n) so that GROUP_M row tiles share B tiles in L2."""
    tiles_in_group = GROUP_M * tiles_n
    group_id = tile_id // tiles_in_group
    first_m = group_id * GROUP_M
    group_rows = min(tiles_m - first_m, GROUP_M)
    tile_m = first_m + (tile_id % tiles_in_group) % group_rows
    tile_n = (tile_id % tiles_in_group) // group_rows
    return tile_m, tile_n


@triton.jit
def as_offset(value, USE_INT64: tl.constexpr):
    """Offsets are int64 only when a tensor has 2**31 elements or more (the int32 math is faster).
    tl.cast, not .to: the JIT turns an int argument equal to 1 into a constexpr, which has no .to."""
    if USE_INT64:
        offset = tl.cast(value, tl.int64)
    else:
        offset = value
    return offset


@triton.jit
def wide_strides(stride_a, stride_b, stride_c, stride_d):
    """A tensor's four strides as int64, for the int64 variants: then every coordinate x stride
    product is int64 (an int32 product wraps before as_offset could widen it)."""
    return (
        tl.cast(stride_a, tl.int64), tl.cast(stride_b, tl.int64),
        tl.cast(stride_c, tl.int64), tl.cast(stride_d, tl.int64),
    )  # fmt: skip


@triton.jit
def split_range(total_iters, split_id, SPLIT_K: tl.constexpr):
    """The [start, end) slice of the reduction's iterations that split `split_id` owns."""
    per_split = tl.cdiv(total_iters, SPLIT_K)
    start = split_id * per_split
    end = min(start + per_split, total_iters)
    return start, end


@triton.jit
def next_tap_step(channel_block, tap_col, tap_row, channel_blocks, tap_cols):
    """Count the reduction's (tap row, tap column, channel block) up by one, channel blocks
    innermost, with compares instead of the div/mod a flat index would need in the loop."""
    channel_block += 1
    wrap = (channel_block == channel_blocks).to(tl.int32)
    channel_block -= wrap * channel_blocks
    tap_col += wrap
    wrap = (tap_col == tap_cols).to(tl.int32)
    tap_col -= wrap * tap_cols
    tap_row += wrap
    return channel_block, tap_col, tap_row


@triton.jit
def axis_taps(first, taps, step, size):
    """[lo, hi): the taps j < taps of an axis whose position first + j * step (step > 0) lies in
    [0, size). They always form one run, so no loop over taps is needed."""
    lo = tl.where(first < 0, (step - 1 - first) // step, 0)
    hi = tl.minimum(tl.where(first < size, (size - 1 - first) // step + 1, 0), taps)
    return tl.minimum(lo, hi), hi


@triton.jit
def tap_bits(lo_h, hi_h, lo_w, hi_w, taps_w, every_row):
    """Bit r * taps_w + s set for each tap (r, s) a row may read: rows r in [lo_h, hi_h), columns s
    in [lo_w, hi_w), with R·S <= 31. `every_row` is the scalar with bit r * taps_w set for every r.
    The column run is multiplied into each kept row's place (no carries: it is below 2**taps_w)."""
    cols = ((1 << hi_w) - 1) ^ ((1 << lo_w) - 1)
    rows = every_row & (((1 << (hi_h * taps_w)) - 1) ^ ((1 << (lo_h * taps_w)) - 1))
    return cols * rows


@triton.jit
def decode_pixels(index, height, width):
    """Split a flat (n, row, col) pixel index into its three coordinates."""
    col = index % width
    rest = index // width
    return rest // height, rest % height, col


@triton.jit
def zero_accumulator(BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, operand_ptr):
    """fp32 accumulation for every dtype but float64 (gradcheck), which keeps float64."""
    if operand_ptr.dtype.element_ty == tl.float64:
        return tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float64)
    else:
        return tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)


@triton.jit
def widen(value, acc_dtype: tl.constexpr, UPCAST: tl.constexpr):
    """`value` in the accumulator's dtype. Under the interpreter (UPCAST), bf16 is widened on the
    bits (a bf16 is an fp32's high half), since its own conversion loses subnormals: 3·2^-133 came
    out as 2^-127, 2^-130 as 0."""
    if UPCAST and value.dtype == tl.bfloat16:
        out = (value.to(tl.uint16, bitcast=True).to(tl.uint32) << 16).to(tl.float32, bitcast=True)
    else:
        out = value.to(acc_dtype)
    return out


@triton.jit
def mma(acc, a, b, INPUT_PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    """acc += a @ b in the accumulator's dtype (fp32, or fp64 for gradcheck: Triton 3.6 needs
    out_dtype named for that). UPCAST works around the interpreter's wrong bf16 dot (CPU only)."""
    if UPCAST:
        a = widen(a, tl.float32, UPCAST)
        b = widen(b, tl.float32, UPCAST)
    return tl.dot(a, b, acc, input_precision=INPUT_PRECISION, out_dtype=acc.dtype)


# (splits per group, groups) of reduce_splits' two-level sum: split_sum.split_sum_groups, whose
# docstring says why, called by the kernels at compile time.
split_groups = triton.constexpr_function(split_sum_groups)


@triton.constexpr_function
def split_counters(split_k):
    """Arrival counters per output tile: one per group, and one more for the groups when there
    are several. The launchers size their counter buffers by it."""
    groups = split_groups(split_k)[1]
    return 1 if groups == 1 else groups + 1


@triton.constexpr_function
def splits_per_group(split_k):
    """split_groups' group size."""
    return split_groups(split_k)[0]


@triton.jit
def _sum_partials(workspace_ptr, tile_base, tile_elems, local, first, end, step, total):
    """total plus the workspace's partial tiles first, first + step, ... (before end), in order. The
    bounds are runtime values: a constexpr trip count was unrolled into all its tiles' loads in
    flight at once, which spilled a TF32 dgrad."""
    for slot in range(first, end, step):
        total += tl.load(workspace_ptr + tile_base + slot * tile_elems + local)
    return total


@triton.jit
def reduce_splits(
    acc,
    workspace_ptr,
    counter_ptr,
    tile_slot,
    split_id,
    SPLIT_K: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    USE_INT64: tl.constexpr,
):
    """Deterministic split-K: every split parks its partial tile in the workspace; the last split
    of its group to arrive sums the group's partials in split order, and (with several groups,
    split_groups) the last group to finish sums the groups' sums in group order, so the bits never
    depend on arrival order. Every caller puts its splits on grid axis 2, SPLIT_K of them.

    Call only when SPLIT_K > 1. Returns (sum, is_last); only the split with is_last set may run
    the epilogue. Each counter is reset to zero by the split that saw it complete.
    """
    GROUP_SIZE: tl.constexpr = splits_per_group(SPLIT_K)
    COUNTERS: tl.constexpr = split_counters(SPLIT_K)
    tile_elems = BLOCK_M * BLOCK_N
    local = tl.arange(0, BLOCK_M)[:, None] * BLOCK_N + tl.arange(0, BLOCK_N)[None, :]
    tile_base = as_offset(tile_slot, USE_INT64) * SPLIT_K * tile_elems
    tl.store(workspace_ptr + tile_base + split_id * tile_elems + local, acc)
    # One thread does the atomic: its release makes the whole CTA's partial visible only once every
    # thread's stores are ordered before it, which a CTA barrier does (Triton's compiles put one
    # there today only because shared memory is reused at this point; this one does not rely on it).
    tl.debug_barrier()
    splits = tl.num_programs(2)  # SPLIT_K, as a runtime bound (_sum_partials)
    counters = counter_ptr + as_offset(tile_slot, USE_INT64) * COUNTERS
    first = split_id // GROUP_SIZE * GROUP_SIZE
    end = min(first + GROUP_SIZE, SPLIT_K)
    # acq_rel: our partial is visible before the count moves; the last split sees all partials.
    arrived = tl.atomic_add(counters + split_id // GROUP_SIZE, 1, sem="acq_rel")
    is_last = arrived == end - first - 1
    total = tl.zeros_like(acc)
    if is_last:
        total = _sum_partials(workspace_ptr, tile_base, tile_elems, local, first, end, 1, total)
        tl.store(counters + split_id // GROUP_SIZE, 0)
        if COUNTERS > 1:
            # The group's sum replaces its first partial, which only this split reads.
            tl.store(workspace_ptr + tile_base + first * tile_elems + local, total)
            tl.debug_barrier()
            finished = tl.atomic_add(counters + COUNTERS - 1, 1, sem="acq_rel")
            is_last = finished == COUNTERS - 2
            if is_last:
                total = _sum_partials(
                    workspace_ptr, tile_base, tile_elems, local, 0, splits, GROUP_SIZE, tl.zeros_like(acc)
                )
                tl.store(counters + COUNTERS - 1, 0)
    return total, is_last


@triton.jit
def cast_output(value, out_dtype: tl.constexpr, UPCAST: tl.constexpr):
    """`value` in the output's dtype, rounded to nearest even. Compiled code rounds so; Triton's
    interpreter (3.6 to 3.9) truncates fp32 to bf16, which left half of all outputs one unit in the
    last place short of torch's, so under it (UPCAST: bf16 in the interpreter) the rounding is done
    on the bits: add half a bf16 unit less one, plus the kept part's lowest bit, then keep the high
    16 bits (as bits: its conversion also turned subnormals into other numbers). An overflow becomes
    inf as torch's does; a NaN stays a NaN."""
    if UPCAST and out_dtype == tl.bfloat16:
        bits = value.to(tl.float32).to(tl.uint32, bitcast=True)
        rounded = bits + 0x7FFF + ((bits >> 16) & 1)
        rounded = tl.where(value != value, bits | 0x400000, rounded)
        out = (rounded >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)
    else:
        out = value.to(out_dtype)
    return out


@triton.jit
def store_tile(
    acc,
    out_ptr,
    row_offsets,
    col_offsets,
    row_mask,
    col_mask,
    bias_ptr,
    bias_index,
    HAS_BIAS: tl.constexpr,
    UPCAST: tl.constexpr,
):
    """Add the bias (in the accumulator's dtype) to each column, cast to the output's dtype, and
    store with the output's strides."""
    if HAS_BIAS:
        bias = widen(tl.load(bias_ptr + bias_index, mask=col_mask, other=0.0), acc.dtype, UPCAST)
        acc = acc + bias[None, :]
    out = cast_output(acc, out_ptr.dtype.element_ty, UPCAST)
    tl.store(
        out_ptr + row_offsets[:, None] + col_offsets[None, :],
        out,
        mask=row_mask[:, None] & col_mask[None, :],
    )
