"""Weight gradient as an implicit GEMM: dw[k, (r, s, c)] = sum over npq of dy[k, npq] im2col(x)[npq, (r,s,c)].

Rows are the output channels of one group (program axis 1 picks the group); columns are the filter's
(r, s, c) with c innermost, the order of a KRSC weight. The reduction runs over every output pixel of
every image: the batch only lengthens it, so split-K over N·P·Q (axis 2) is what fills a GPU when
K x C·R·S makes few tiles, and the splits are summed in a fixed order (reduce_splits) so the bits do
not depend on which split finishes last. The bias gradient is a row sum of dy; the tiles of the first
column block load exactly those dy tiles anyway, so they sum them on the way (no second pass over dy).
"""

import triton
import triton.language as tl

from .common import (
    as_offset,
    decode_pixels,
    mma,
    reduce_splits,
    split_range,
    store_tile,
    swizzled_tile,
    zero_accumulator,
)


@triton.jit
def wgrad_kernel(
    dy_ptr, x_ptr, dw_ptr, db_ptr, workspace_ptr, db_workspace_ptr, counter_ptr,
    batch, height, width, in_per_group, out_per_group, out_height, out_width,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, kernel_h, kernel_w,
    dy_sn, dy_sk, dy_sp, dy_sq,
    x_sn, x_sc, x_sh, x_sw,
    dw_sk, dw_sc, dw_sr, dw_ss,
    HAS_BIAS: tl.constexpr, DB_BY_DOT: tl.constexpr,
    DY_K_UNIT: tl.constexpr, X_C_UNIT: tl.constexpr, DW_C_UNIT: tl.constexpr,
    ONE_TAP_TILES: tl.constexpr,
    POINTWISE: tl.constexpr,
    USE_INT64: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr, SPLIT_K: tl.constexpr,
):  # fmt: skip
    gemm_n = in_per_group * kernel_h * kernel_w
    tiles_m = tl.cdiv(out_per_group, BLOCK_M)
    tiles_n = tl.cdiv(gemm_n, BLOCK_N)
    tile_m, tile_n = swizzled_tile(tl.program_id(0), tiles_m, tiles_n, GROUP_M)
    group = tl.program_id(1)
    split_id = tl.program_id(2)

    # Rows: output channels of this group.
    offs_m = tile_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = offs_m < out_per_group
    out_channel = as_offset(group * out_per_group + offs_m, USE_INT64)
    dy_rows = out_channel if DY_K_UNIT else out_channel * dy_sk

    # Columns: filter taps (r, s) and input channels c, decoded once per tile.
    col0 = tile_n * BLOCK_N
    offs_n = col0 + tl.arange(0, BLOCK_N)
    col_ok = offs_n < gemm_n
    if ONE_TAP_TILES:
        # C/g is a multiple of BLOCK_N (or R·S = 1): the whole tile lies in one tap, so r and s are
        # scalars, the channels visibly run contiguously (vector loads) and the padding mask below
        # depends on the reduction index only, not on the column.
        tap = col0 // in_per_group
        c = col0 % in_per_group + tl.arange(0, BLOCK_N)
    else:
        tap = offs_n // in_per_group
        c = offs_n % in_per_group
    r = tap // kernel_w
    s = tap - r * kernel_w
    tap_h = r * dil_h
    tap_w = s * dil_w
    x_chan = as_offset(group * in_per_group + c, USE_INT64)
    x_cols = as_offset(tap_h, USE_INT64) * x_sh + as_offset(tap_w, USE_INT64) * x_sw
    if X_C_UNIT:
        x_cols += x_chan
    else:
        x_cols += x_chan * x_sc

    # The reduction index npq: the split's first block is decoded once; after that (n, p, q) advance
    # by BLOCK_K as mixed-radix digits (one compare-and-carry per digit suffices because each digit
    # of BLOCK_K is below its radix), so the loop does no vector div/mod, the costliest integer ops
    # on a GPU. Past the end of the reduction n reaches `batch`, which is the mask.
    steps = tl.cdiv(as_offset(batch, USE_INT64) * out_height * out_width, BLOCK_K)
    it, it_end = split_range(steps, split_id, SPLIT_K)
    n, p, q = decode_pixels(it * BLOCK_K + tl.arange(0, BLOCK_K), out_height, out_width)
    step_q = BLOCK_K % out_width
    step_p = (BLOCK_K // out_width) % out_height
    step_n = BLOCK_K // (out_width * out_height)

    acc = zero_accumulator(BLOCK_M, BLOCK_N, x_ptr)
    # The first column block's tiles sum dy's rows too; constant false without a bias.
    sums_bias = (tile_n == 0) & HAS_BIAS
    db_acc = tl.zeros((BLOCK_M,), dtype=acc.dtype)
    # Row sums of dy by a dot with ones keep `a` an MMA operand only, so its loads stay async and
    # out of registers; exact for 16-bit and fp64 inputs, but TF32 would round dy, so fp32 with
    # TF32 sums in registers instead (see DB_BY_DOT in the launcher).
    db_tile = zero_accumulator(BLOCK_M, 16, x_ptr)
    # Under the interpreter's bf16 upcast the dot runs in fp32, and Triton 3.6's interpreter has no
    # bf16 tl.full: the ones take the dtype the dot will see.
    if UPCAST:
        ones = tl.full((BLOCK_K, 16), 1.0, dtype=tl.float32)
    else:
        ones = tl.full((BLOCK_K, 16), 1.0, dtype=dy_ptr.dtype.element_ty)
    for _ in range(it, it_end):
        npq_ok = n < batch
        n_off = as_offset(n, USE_INT64)
        top = p * stride_h - pad_h
        left = q * stride_w - pad_w
        dy_cols = n_off * dy_sn + as_offset(p, USE_INT64) * dy_sp + as_offset(q, USE_INT64) * dy_sq
        a = tl.load(
            dy_ptr + dy_rows[:, None] + dy_cols[None, :], mask=row_ok[:, None] & npq_ok[None, :], other=0.0
        )
        x_rows = n_off * x_sn + as_offset(top, USE_INT64) * x_sh + as_offset(left, USE_INT64) * x_sw
        if POINTWISE:
            b_ok = npq_ok[:, None] & col_ok[None, :]
        elif ONE_TAP_TILES:
            ih = top + tap_h
            iw = left + tap_w
            inside = npq_ok & (ih >= 0) & (ih < height) & (iw >= 0) & (iw < width)
            b_ok = inside[:, None] & col_ok[None, :]
        else:
            ih = top[:, None] + tap_h[None, :]
            iw = left[:, None] + tap_w[None, :]
            b_ok = (npq_ok[:, None] & col_ok[None, :]) & (ih >= 0) & (ih < height) & (iw >= 0) & (iw < width)
        b = tl.load(x_ptr + x_rows[:, None] + x_cols[None, :], mask=b_ok, other=0.0)
        acc = mma(acc, a, b, INPUT_PRECISION, UPCAST)
        if sums_bias:
            if DB_BY_DOT:
                db_tile = mma(db_tile, a, ones, INPUT_PRECISION, UPCAST)
            else:
                db_acc += tl.sum(a.to(db_acc.dtype), axis=1)

        q += step_q
        carry = (q >= out_width).to(tl.int32)
        q -= carry * out_width
        p += step_p + carry
        carry = (p >= out_height).to(tl.int32)
        p -= carry * out_height
        n += step_n + carry

    if DB_BY_DOT:  # every column of db_tile holds the row sums; take the first
        db_acc = tl.sum(tl.where(tl.arange(0, 16)[None, :] == 0, db_tile, 0.0), axis=1)
    do_store = True
    if SPLIT_K > 1:
        row_slot = group * tiles_m + tile_m
        db_local = tl.arange(0, BLOCK_M)
        db_base = as_offset(row_slot, USE_INT64) * SPLIT_K * BLOCK_M
        if sums_bias:
            # Parked before reduce_splits' release, so the last split to arrive sees all partials.
            tl.store(db_workspace_ptr + db_base + split_id * BLOCK_M + db_local, db_acc)
        acc, do_store = reduce_splits(
            acc, workspace_ptr, counter_ptr, row_slot * tiles_n + tile_n, split_id,
            SPLIT_K, BLOCK_M, BLOCK_N, USE_INT64,
        )  # fmt: skip
        if sums_bias & do_store:
            db_acc = tl.zeros_like(db_acc)
            for split in range(SPLIT_K):
                db_acc += tl.load(db_workspace_ptr + db_base + split * BLOCK_M + db_local)
    if do_store:
        dw_rows = out_channel * dw_sk
        dw_cols = as_offset(r, USE_INT64) * dw_sr + as_offset(s, USE_INT64) * dw_ss
        if DW_C_UNIT:
            dw_cols += as_offset(c, USE_INT64)
        else:
            dw_cols += as_offset(c, USE_INT64) * dw_sc
        store_tile(acc, dw_ptr, dw_rows, dw_cols, row_ok, col_ok, db_ptr, 0, False)
        if sums_bias:
            tl.store(db_ptr + out_channel, db_acc.to(db_ptr.dtype.element_ty), mask=row_ok)
