"""Weight gradient as an implicit GEMM: dw[k, (r, s, c)] = sum over npq of dy[k, npq] im2col(x)[npq, (r,s,c)].

Rows are the output channels of one group (program axis 1 picks the group); columns are the filter's
(r, s, c) with c innermost, the order of a KRSC weight. The reduction runs over every output pixel of
every image: the batch only lengthens it, so split-K over N·P·Q (axis 2) is what fills a GPU when
K x C·R·S makes few tiles, and the splits are summed in a fixed order (reduce_splits) so the bits do
not depend on which split finishes last.

The bias gradient, a row sum of dy, is computed by extra programs of the same launch (program ids
past the weight tiles): a dot with ones inside the main loop made every step wait for its wgmma.
"""

import triton
import triton.language as tl

from .common import (
    as_offset,
    axis_taps,
    cast_output,
    decode_pixels,
    mma,
    reduce_splits,
    split_counters,
    split_range,
    store_tile,
    swizzled_tile,
    widen,
    zero_accumulator,
)


@triton.jit
def bias_grad_tile(
    dy_ptr, db_ptr, db_workspace_ptr, counter_ptr, tile_m, group, split_id, steps,
    out_per_group, gemm_k, out_height, out_width, dy_sn, dy_sk, dy_sp, dy_sq,
    USE_INT64: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, SPLIT_K: tl.constexpr,
    UPCAST: tl.constexpr,
):  # fmt: skip
    """db for BLOCK_M output channels: dy summed over the split's share of N·P·Q in fp32, the
    splits reduced in a fixed order like the weight tiles (reduce_splits)."""
    offs_m = tile_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = offs_m < out_per_group
    channel = as_offset(group * out_per_group + offs_m, USE_INT64)
    it, it_end = split_range(steps, split_id, SPLIT_K)
    offs_k = tl.arange(0, BLOCK_K)
    total = tl.zeros((BLOCK_M,), dtype=tl.float64 if dy_ptr.dtype.element_ty == tl.float64 else tl.float32)
    for step in range(it, it_end):
        npq = as_offset(step, USE_INT64) * BLOCK_K + offs_k
        n, p, q = decode_pixels(npq, out_height, out_width)
        cols = n * dy_sn + p * dy_sp + q * dy_sq
        tile = tl.load(
            dy_ptr + channel[:, None] * dy_sk + cols[None, :],
            mask=row_ok[:, None] & (npq < gemm_k)[None, :],
            other=0.0,
        )
        total += tl.sum(widen(tile, total.dtype, UPCAST), axis=1)
    do_store = True
    if SPLIT_K > 1:
        slot = group * tl.cdiv(out_per_group, BLOCK_M) + tile_m
        summed, do_store = reduce_splits(
            total[:, None], db_workspace_ptr, counter_ptr, slot, split_id, SPLIT_K, BLOCK_M, 1, USE_INT64
        )
        total = tl.sum(summed, axis=1)
    if do_store:
        tl.store(db_ptr + channel, cast_output(total, db_ptr.dtype.element_ty, UPCAST), mask=row_ok)


@triton.jit
def wgrad_kernel(
    dy_ptr, dy_desc, x_ptr, x_desc, dw_ptr, db_ptr, workspace_ptr, db_workspace_ptr, counter_ptr,
    batch, height, width, in_per_group, out_per_group, out_height, out_width,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, kernel_h, kernel_w,
    dy_sn, dy_sk, dy_sp, dy_sq,
    x_sn, x_sc, x_sh, x_sw,
    dw_sk, dw_sc, dw_sr, dw_ss,
    x_lin, q_extra,
    HAS_BIAS: tl.constexpr,
    DY_K_UNIT: tl.constexpr, X_C_UNIT: tl.constexpr, DW_C_UNIT: tl.constexpr,
    ONE_TAP_TILES: tl.constexpr, COLUMNS_ALIGNED: tl.constexpr,
    TAP_CHANNELS: tl.constexpr, LINEAR_ROWS: tl.constexpr, Q_EXTRA: tl.constexpr,
    DY_TMA: tl.constexpr, X_TMA: tl.constexpr,
    USE_INT64: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr, SPLIT_K: tl.constexpr,
):  # fmt: skip
    """Specialisations, chosen by the launcher (launchers/wgrad.py) from the tensors:
    ONE_TAP_TILES: C/g is a multiple of BLOCK_N (or R·S = 1), so a column tile lies in one tap: the
        tap is a scalar, the channels run contiguously and a reduction row's padding test is one
        per row, not per column.
    COLUMNS_ALIGNED: BLOCK_N divides C/g, so no column tile runs past the group's channels. Else a
        one-tap tile (R·S = 1) wraps its columns past the group to real channels, as fprop's do:
        they are never stored, and unwrapped they read past x's end (the last group's).
    TAP_CHANNELS: x is the launcher's zero-padded NHWC copy with TAP_CHANNELS channels per group (a
        few-channel stem): a column tile spans BLOCK_N / TAP_CHANNELS whole taps, so the padding
        test is one per (row, tap) and each tap's channels load as one vector. Only the group's
        real channels are stored.
    LINEAR_ROWS: x's pixels under the output grid, (n, p·stride_h, q·stride_w), lie x_lin elements
        apart in (n, p, q) order plus q·q_extra (H = P·stride_h and NHWC-like strides, or the padded
        copy): a reduction row's x address is then a multiply-add of its flat index, and with no q
        term (Q_EXTRA false: stride_w 1) it moves by one scalar per step.
    Q_EXTRA: q_extra != 0, so each row also carries its q (a stride_w > 1 layer's extra term).
    DY_TMA: dy is a row-major (N·P·Q, K) matrix (NHWC memory): its [BLOCK_K, BLOCK_M] tiles come
        through a TMA descriptor (dy_desc), which also zero-fills the reduction's tail.
    X_TMA: with DY_TMA, a 1x1 stride-1 unpadded layer's x is a row-major (N·H·W, C) matrix too: its
        [BLOCK_K, BLOCK_N] tiles come through x_desc, so both operands are plain GEMM tiles.
    Each reduction row (an output pixel) carries its coordinates and its x offset from step to
    step: adding BLOCK_K to a flat pixel index is one carry per coordinate, no division."""
    if TAP_CHANNELS:  # x's layout is the launcher's own: strides that are whole vectors of channels
        x_sw = tl.num_programs(1) * TAP_CHANNELS
        x_sh = width * x_sw
        x_sn = height * x_sh
        x_channels = TAP_CHANNELS
        if LINEAR_ROWS:  # as the launcher's (a whole number of pixels), so they keep x's alignment
            x_lin = (stride_h * width * tl.num_programs(1)) // out_width * TAP_CHANNELS
            q_extra = stride_w * x_sw - x_lin
    else:
        x_channels = in_per_group
    gemm_n = x_channels * kernel_h * kernel_w
    gemm_k = batch * out_height * out_width
    tiles_m = tl.cdiv(out_per_group, BLOCK_M)
    tiles_n = tl.cdiv(gemm_n, BLOCK_N)
    group = tl.program_id(1)
    split_id = tl.program_id(2)
    steps = tl.cdiv(as_offset(batch, USE_INT64) * out_height * out_width, BLOCK_K)
    if HAS_BIAS and tl.program_id(0) >= tiles_m * tiles_n:
        bias_grad_tile(
            dy_ptr, db_ptr, db_workspace_ptr,
            counter_ptr + tl.num_programs(1) * tiles_m * tiles_n * split_counters(SPLIT_K),
            tl.program_id(0) - tiles_m * tiles_n, group, split_id, steps,
            out_per_group, gemm_k, out_height, out_width, dy_sn, dy_sk, dy_sp, dy_sq,
            USE_INT64, BLOCK_M, BLOCK_K, SPLIT_K, UPCAST,
        )  # fmt: skip
    else:
        tile_m, tile_n = swizzled_tile(tl.program_id(0), tiles_m, tiles_n, GROUP_M)

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
            tap = col0 // in_per_group
            if COLUMNS_ALIGNED:
                c = tl.multiple_of(col0 - tap * in_per_group, BLOCK_N) + tl.arange(0, BLOCK_N)
            else:  # R·S = 1: tap 0
                c = offs_n % in_per_group
        else:
            tap = offs_n // x_channels
            c = offs_n % x_channels
        if TAP_CHANNELS:
            col_ok &= c < in_per_group  # what is stored; a padding channel only reads x's zeros
        r = tap // kernel_w
        s = tap - r * kernel_w
        tap_h = r * dil_h
        tap_w = s * dil_w
        x_chan = as_offset(group * x_channels + c, USE_INT64)
        x_chan = x_chan if X_C_UNIT else x_chan * x_sc

        # The reduction: the split's first BLOCK_K output pixels u = (n, p, q), decoded once; after
        # that each row's coordinates advance by BLOCK_K as mixed-radix digits (each digit of
        # BLOCK_K is below its radix, so one compare-and-carry per digit suffices).
        it, it_end = split_range(steps, split_id, SPLIT_K)
        offs_k = tl.arange(0, BLOCK_K)
        u = it * BLOCK_K + offs_k
        n, p, q = decode_pixels(u, out_height, out_width)
        n, p, q = n.to(tl.int32), p.to(tl.int32), q.to(tl.int32)  # coordinates: 32-bit even when u is not
        step_q = BLOCK_K % out_width
        step_p = (BLOCK_K // out_width) % out_height
        step_n = BLOCK_K // (out_width * out_height)
        remaining = gemm_k - it * BLOCK_K  # reduction rows from this step's first to the end
        x_sh_st = as_offset(stride_h, USE_INT64) * x_sh
        x_sw_st = as_offset(stride_w, USE_INT64) * x_sw
        tap_offset = as_offset(tap_h - pad_h, USE_INT64) * x_sh + as_offset(tap_w - pad_w, USE_INT64) * x_sw
        if ONE_TAP_TILES:
            # A row reads the tile's tap when p·stride + r·dil - pad lies in [0, H) (a run of p,
            # [lo_p, hi_p)) and likewise q. Rows carry their coordinates shifted by lo, so each test
            # is one unsigned compare (the carries compare against the shifted ends instead).
            lo_p, hi_p = axis_taps(tap_h - pad_h, out_height, stride_h, height)
            lo_q, hi_q = axis_taps(tap_w - pad_w, out_width, stride_w, width)
            span_q = tl.cast(hi_q - lo_q, tl.uint32)
            b_base = x_ptr + tap_offset + x_chan[None, :]
        else:
            lo_p = 0
            hi_p = out_height
            lo_q = 0
            b_base = x_ptr + (tap_offset + x_chan)[None, :]
            if LINEAR_ROWS:  # (TAP_CHANNELS) each column's tap: its runs of valid p·Q + q and of q
                col_lo_p, col_hi_p = axis_taps(tap_h - pad_h, out_height, stride_h, height)
                col_lo_q, col_hi_q = axis_taps(tap_w - pad_w, out_width, stride_w, width)
                col_lo_pq = (col_lo_p * out_width)[None, :]
                col_span_pq = tl.cast((col_hi_p - col_lo_p) * out_width, tl.uint32)[None, :]
                col_span_q = tl.cast(col_hi_q - col_lo_q, tl.uint32)[None, :]
                col_lo_q = col_lo_q[None, :]
        if LINEAR_ROWS:
            # x is N·P·Q pixel rows deep in steps of x_lin (H = P·stride_h, NHWC-like strides): pixel
            # (n, p·stride_h, q·stride_w) sits at u·x_lin + q·q_extra, so a row's address moves by a
            # scalar per step (plus a q term when stride_w > 1). p is carried as pq = p·Q + q (its run
            # of valid p is a run of pq), which needs no carry from q.
            # 64-bit in the int64 variant: a step of BLOCK_K rows, or q pixels along a row, can pass
            # 2**31 elements even when x_lin and q_extra themselves fit in 32 bits
            row_pitch = as_offset(x_lin, USE_INT64)
            q_pitch = as_offset(q_extra, USE_INT64)
            b_rows = (as_offset(u, USE_INT64) * row_pitch + lo_q * q_pitch)[:, None]
            if not Q_EXTRA:  # a scalar step per trip: pointers kept; with a q term, a row's offset
                b_rows = b_base + b_rows  # is summed first, then one pointer add per vector
            pq = (p - lo_p) * out_width + q
            span_pq = tl.cast((hi_p - lo_p) * out_width, tl.uint32)
            end_pq = (out_height - lo_p) * out_width
            b_step = row_pitch * BLOCK_K
            pq = pq[:, None]
        else:
            if ONE_TAP_TILES:
                span_p = tl.cast(hi_p - lo_p, tl.uint32)
            end_p = out_height - lo_p
            n = n[:, None]
            p = (p - lo_p)[:, None]
        # Row state as [BLOCK_K, 1], the x tile's rows, so it lives in the load's own layout. Offsets
        # are recomputed from it, never carried: carried, Triton 3.9 loses their alignment and the x
        # tile is no longer loaded asynchronously.
        q = (q - lo_q)[:, None]
        end_q = out_width - lo_q
        rows = offs_k[:, None]
        height_u = tl.cast(height, tl.uint32)
        width_u = tl.cast(width, tl.uint32)

        acc = zero_accumulator(BLOCK_M, BLOCK_N, x_ptr)
        for i in range(it, it_end):
            live = rows < remaining
            if DY_TMA:
                row = tl.cast(i * BLOCK_K, tl.int32)  # a descriptor's coordinates are 32-bit
                a = dy_desc.load([row, group * out_per_group + tile_m * BLOCK_M]).T
            else:
                dy_u = u + (i - it) * BLOCK_K
                dy_n, dy_p, dy_q = decode_pixels(dy_u, out_height, out_width)
                dy_row = as_offset(dy_n, USE_INT64) * dy_sn + dy_p * dy_sp + dy_q * dy_sq
                a = tl.load(
                    dy_ptr + dy_rows[:, None] + dy_row[None, :], mask=row_ok[:, None] & live.T, other=0.0
                )
            if X_TMA:
                b = x_desc.load([tl.cast(i * BLOCK_K, tl.int32), group * in_per_group + col0])
            else:
                if LINEAR_ROWS:
                    if Q_EXTRA:
                        b_ptrs = b_base + (b_rows + ((i - it) * b_step + q * q_pitch))
                    else:
                        b_ptrs = b_rows + (i - it) * b_step
                    ok_p = pq.to(tl.uint32, bitcast=True) < span_pq
                else:
                    b_ptrs = b_base + (
                        as_offset(n, USE_INT64) * x_sn + (p + lo_p) * x_sh_st + (q + lo_q) * x_sw_st
                    )
                    ok_p = (p.to(tl.uint32, bitcast=True) < span_p) if ONE_TAP_TILES else True
                if ONE_TAP_TILES:
                    inside = live & ok_p & (q.to(tl.uint32, bitcast=True) < span_q)
                elif LINEAR_ROWS:
                    in_p = (pq - col_lo_pq).to(tl.uint32, bitcast=True) < col_span_pq
                    inside = live & in_p & ((q - col_lo_q).to(tl.uint32, bitcast=True) < col_span_q)
                else:  # each column its own tap: the padding test is per element (per vector with
                    # TAP_CHANNELS, where a column past the taps reads inside x and is not stored)
                    ih = (p * stride_h + (tap_h - pad_h)[None, :]).to(tl.uint32, bitcast=True)
                    iw = (q * stride_w + (tap_w - pad_w)[None, :]).to(tl.uint32, bitcast=True)
                    inside = live if TAP_CHANNELS else live & col_ok[None, :]
                    inside &= (ih < height_u) & (iw < width_u)  # 0 <= ih < height in one compare
                b = tl.load(b_ptrs, mask=inside, other=0.0)
            acc = mma(acc, a, b, INPUT_PRECISION, UPCAST)

            q += step_q
            carry_q = q >= end_q
            q = tl.where(carry_q, q - out_width, q)
            if LINEAR_ROWS:
                pq += step_p * out_width + step_q
                pq = tl.where(pq >= end_pq, pq - out_height * out_width, pq)
            else:
                p += step_p + carry_q.to(tl.int32)
                carry_p = p >= end_p
                p = tl.where(carry_p, p - out_height, p)
                n += step_n + carry_p.to(tl.int32)
            remaining -= BLOCK_K

        do_store = True
        if SPLIT_K > 1:
            slot = (group * tiles_m + tile_m) * tiles_n + tile_n
            acc, do_store = reduce_splits(
                acc, workspace_ptr, counter_ptr, slot, split_id, SPLIT_K, BLOCK_M, BLOCK_N, USE_INT64
            )
        if do_store:
            dw_rows = out_channel * dw_sk
            dw_cols = as_offset(r, USE_INT64) * dw_sr + as_offset(s, USE_INT64) * dw_ss
            if DW_C_UNIT:
                dw_cols += as_offset(c, USE_INT64)
            else:
                dw_cols += as_offset(c, USE_INT64) * dw_sc
            store_tile(acc, dw_ptr, dw_rows, dw_cols, row_ok, col_ok, db_ptr, 0, False, UPCAST)
