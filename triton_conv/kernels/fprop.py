"""Forward convolution as an implicit GEMM: y[m, k] = sum over (r, s, c) of x_im2col[m, rsc] w[rsc, k].

Rows m = (n, p, q) fold the batch into the GEMM's M; columns are output channels of one group
(program axis 1); axis 2 splits the reduction (split-K) for problems too small to fill the GPU.
The reduction runs over filter taps (r, s) outside and channel blocks inside, so the channel
dimension, innermost in NHWC, is the one the loads stream along. No im2col buffer is built: each
row's (n, p, q) is decoded once per tile and the loop only adds scalar offsets.
"""

import triton
import triton.language as tl

from .common import (
    as_offset,
    axis_taps,
    decode_pixels,
    mma,
    reduce_splits,
    split_range,
    store_tile,
    swizzled_tile,
    tap_bits,
    wide_strides,
    zero_accumulator,
)


@triton.jit
def fprop_kernel(
    x_ptr, w_ptr, bias_ptr, y_ptr, workspace_ptr, counter_ptr,
    batch, height, width, in_per_group, out_per_group, out_height, out_width,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, kernel_h, kernel_w,
    x_sn, x_sc, x_sh, x_sw,
    w_sk, w_sc, w_sr, w_ss,
    y_sn, y_sk, y_sp, y_sq,
    HAS_BIAS: tl.constexpr,
    X_C_UNIT: tl.constexpr, W_C_UNIT: tl.constexpr, Y_K_UNIT: tl.constexpr,
    POINTWISE: tl.constexpr, CHANNELS_ALIGNED: tl.constexpr, W_MATRIX: tl.constexpr,
    TAP_BITS: tl.constexpr, ROW_SPANS: tl.constexpr,
    USE_INT64: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr, SPLIT_K: tl.constexpr,
):  # fmt: skip
    """Specialisations, chosen by the launcher (launchers/fprop.py) from the tensors:
    CHANNELS_ALIGNED: BLOCK_K divides C/g, so no step straddles two taps or needs a channel mask.
    W_MATRIX: the weight is a row-major (K, R·S·C/g) matrix (KRSC memory); with CHANNELS_ALIGNED
        step i reads its columns i·BLOCK_K onwards, like a plain GEMM's B.
    TAP_BITS: R·S <= 31; each row's padding test for every tap is a bit mask built once per tile,
        and a step tests its tap with one AND.
    ROW_SPANS: few channels (C/g < 16, one group, dilation_w 1, NHWC x, KRSC w): the reduction
        walks each tap row's S·C contiguous elements as one channel run.
    Rows past the GEMM and columns past the group wrap around to real ones (as a plain matmul's
    do): their results are never stored, and no load needs a mask for them."""
    if USE_INT64:  # int64 strides: a coordinate x stride product must not wrap in int32 first
        x_sn, x_sc, x_sh, x_sw = wide_strides(x_sn, x_sc, x_sh, x_sw)
        w_sk, w_sc, w_sr, w_ss = wide_strides(w_sk, w_sc, w_sr, w_ss)
        y_sn, y_sk, y_sp, y_sq = wide_strides(y_sn, y_sk, y_sp, y_sq)
    gemm_m = batch * out_height * out_width
    tiles_m = tl.cdiv(gemm_m, BLOCK_M)
    tiles_n = tl.cdiv(out_per_group, BLOCK_N)
    tile_m, tile_n = swizzled_tile(tl.program_id(0), tiles_m, tiles_n, GROUP_M)
    group = tl.program_id(1)
    split_id = tl.program_id(2)

    # Rows: output pixels (n, p, q), decoded once.
    offs_m = tile_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = offs_m < gemm_m
    n, p, q = decode_pixels(offs_m % gemm_m, out_height, out_width)
    top = p * stride_h - pad_h
    left = q * stride_w - pad_w
    x_rows = as_offset(n, USE_INT64) * x_sn + as_offset(top, USE_INT64) * x_sh + left * x_sw
    # Columns: output channels of this group.
    offs_n = tile_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = offs_n < out_per_group
    out_channel = group * out_per_group + offs_n
    w_cols = as_offset(group * out_per_group + offs_n % out_per_group, USE_INT64) * w_sk

    offs_k = tl.arange(0, BLOCK_K)
    first_channel = group * in_per_group
    if X_C_UNIT:
        x_chan = first_channel + offs_k
        x_step_c = 1
    else:
        x_chan = as_offset(first_channel + offs_k, USE_INT64) * x_sc
        x_step_c = x_sc
    # Loop-invariant pointers: a step adds one scalar offset to each.
    a_base = x_ptr + x_rows[:, None] + x_chan[None, :]
    # A unit channel stride, or (ROW_SPANS) a KRSC weight whose (s, c) run is contiguous even when
    # its one channel's stride is not 1.
    unit_c: tl.constexpr = W_C_UNIT or ROW_SPANS
    w_chan = offs_k if unit_c else offs_k * w_sc
    w_sc = 1 if unit_c else w_sc
    b_base = w_ptr + w_chan[:, None] + w_cols[None, :]
    dx_tap_h = as_offset(dil_h, USE_INT64) * x_sh
    dx_tap_w = as_offset(dil_w, USE_INT64) * x_sw

    if ROW_SPANS:
        # A tap row's (s, c) pairs are contiguous in NHWC x and KRSC w: walk them as one channel
        # run of S·C (a 3-channel stem then loads 21 of every 32 elements, not 3 of 16). Each row
        # reads inside the image only for s in [lo_w, hi_w), a per-element range of the run.
        taps_w = 1
        channels = kernel_w * in_per_group
        lo_w, hi_w = axis_taps(left, kernel_w, 1, width)
        span_lo = (lo_w * in_per_group)[:, None]
        span_hi = (hi_w * in_per_group)[:, None]
    else:
        taps_w = kernel_w
        channels = in_per_group
    channel_blocks = tl.cdiv(channels, BLOCK_K)
    it, it_end = split_range(kernel_h * taps_w * channel_blocks, split_id, SPLIT_K)
    # Decode the split's first (r, s, channel block) once; the loop then counts without div/mod.
    channel_block = it % channel_blocks
    r = (it // channel_blocks) // taps_w
    s = (it // channel_blocks) % taps_w
    blocks_left = channel_blocks - channel_block  # channel blocks left in this tap, this one included
    a_offset = r * dx_tap_h + s * dx_tap_w + channel_block * BLOCK_K * x_step_c
    b_offset = r * w_sr + s * w_ss + channel_block * BLOCK_K * w_sc
    # At the end of a tap's channels: back to channel 0 and on to the next tap column (or row).
    next_col = dx_tap_w - (channel_blocks - 1) * BLOCK_K * x_step_c
    next_row = dx_tap_h - taps_w * dx_tap_w
    w_next_col = w_ss - (channel_blocks - 1) * BLOCK_K * w_sc
    w_next_row = w_sr - taps_w * w_ss
    if TAP_BITS:
        lo_h, hi_h = axis_taps(top, kernel_h, dil_h, height)
        if ROW_SPANS:
            lo_w, hi_w = 0, 1  # one 'tap column': the run's range test does the rest
        else:
            lo_w, hi_w = axis_taps(left, kernel_w, dil_w, width)
        first_cols = ((1 << (kernel_h * taps_w)) - 1) // ((1 << taps_w) - 1)  # bits r·S, every r
        # [BLOCK_M, 1], the taps a row may NOT read: a step's test is one AND against zero.
        tap_bad = ~tap_bits(lo_h, hi_h, lo_w, hi_w, taps_w, first_cols)[:, None]
        tap_bit = 1 << (r * taps_w + s)

    acc = zero_accumulator(BLOCK_M, BLOCK_N, x_ptr)
    for _ in range(it, it_end):
        channel0 = (channel_blocks - blocks_left) * BLOCK_K
        if POINTWISE:
            if CHANNELS_ALIGNED:
                a = tl.load(a_base + a_offset)
            else:
                a = tl.load(a_base + a_offset, mask=(offs_k < channels - channel0)[None, :], other=0.0)
        else:
            if TAP_BITS:
                a_mask = (tap_bad & tap_bit) == 0
            else:
                ih = top + r * dil_h
                a_mask = ((ih >= 0) & (ih < height))[:, None]
                if not ROW_SPANS:  # a row span's columns are tested by the run's own range below
                    iw = left + s * dil_w
                    a_mask = a_mask & ((iw >= 0) & (iw < width))[:, None]
            if ROW_SPANS:
                j = channel0 + offs_k[None, :]
                a_mask = a_mask & (j >= span_lo) & (j < span_hi)
            elif not CHANNELS_ALIGNED:
                a_mask = a_mask & (offs_k < in_per_group - channel0)[None, :]
            a = tl.load(a_base + a_offset, mask=a_mask, other=0.0)
        if CHANNELS_ALIGNED:
            b = tl.load(b_base + b_offset)
        else:
            b = tl.load(b_base + b_offset, mask=(offs_k < channels - channel0)[:, None], other=0.0)
        acc = mma(acc, a, b, INPUT_PRECISION, UPCAST)

        # Next (r, s, channel block), channel blocks innermost. Inline, as dgrad's: one shared
        # helper returning every counter made r and s loop-carried under TAP_BITS too, which moved
        # registers (fprop 254 to 226) and dgrad's stride-2 loop (624 to 632 per step) on Triton 3.9.
        blocks_left -= 1
        tap_done = blocks_left == 0
        blocks_left = tl.where(tap_done, channel_blocks, blocks_left)
        if TAP_BITS:
            tap_bit = tl.where(tap_done, tap_bit << 1, tap_bit)
            row_done = tap_done & ((tap_bit & first_cols) != 0)
        else:
            s += tap_done.to(tl.int32)
            row_done = s == taps_w
            s = tl.where(row_done, 0, s)
            r += row_done.to(tl.int32)
        a_offset += tl.where(tap_done, next_col, BLOCK_K * x_step_c) + tl.where(row_done, next_row, 0)
        if CHANNELS_ALIGNED & W_MATRIX:  # the reduction index of the next step
            b_offset += BLOCK_K
        else:
            b_offset += tl.where(tap_done, w_next_col, BLOCK_K * w_sc) + tl.where(row_done, w_next_row, 0)

    do_store = True
    if SPLIT_K > 1:
        tile_slot = group * tiles_m * tiles_n + tile_m * tiles_n + tile_n
        acc, do_store = reduce_splits(
            acc, workspace_ptr, counter_ptr, tile_slot, split_id, SPLIT_K, BLOCK_M, BLOCK_N, USE_INT64
        )
    if do_store:
        y_rows = as_offset(n, USE_INT64) * y_sn + p * y_sp + q * y_sq
        if Y_K_UNIT:
            y_cols = as_offset(out_channel, USE_INT64)
        else:
            y_cols = as_offset(out_channel, USE_INT64) * y_sk
        store_tile(acc, y_ptr, y_rows, y_cols, row_ok, col_ok, bias_ptr, out_channel, HAS_BIAS, UPCAST)
