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
    decode_pixels,
    mma,
    next_tap_step,
    reduce_splits,
    split_range,
    store_tile,
    swizzled_tile,
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
    POINTWISE: tl.constexpr,
    USE_INT64: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr, SPLIT_K: tl.constexpr,
):  # fmt: skip
    gemm_m = batch * out_height * out_width
    tiles_m = tl.cdiv(gemm_m, BLOCK_M)
    tiles_n = tl.cdiv(out_per_group, BLOCK_N)
    tile_m, tile_n = swizzled_tile(tl.program_id(0), tiles_m, tiles_n, GROUP_M)
    group = tl.program_id(1)
    split_id = tl.program_id(2)

    # Rows: output pixels (n, p, q), decoded once.
    offs_m = tile_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = offs_m < gemm_m
    n, p, q = decode_pixels(offs_m, out_height, out_width)
    top = p * stride_h - pad_h
    left = q * stride_w - pad_w
    x_rows = as_offset(n, USE_INT64) * x_sn + as_offset(top, USE_INT64) * x_sh + left * x_sw
    # Columns: output channels of this group.
    offs_n = tile_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = offs_n < out_per_group
    out_channel = group * out_per_group + offs_n
    w_cols = as_offset(out_channel, USE_INT64) * w_sk

    offs_k = tl.arange(0, BLOCK_K)
    first_channel = group * in_per_group
    if X_C_UNIT:
        x_chan = first_channel + offs_k
    else:
        x_chan = as_offset(first_channel + offs_k, USE_INT64) * x_sc
    if W_C_UNIT:
        w_chan = offs_k
    else:
        w_chan = offs_k * w_sc

    channel_blocks = tl.cdiv(in_per_group, BLOCK_K)
    it, it_end = split_range(kernel_h * kernel_w * channel_blocks, split_id, SPLIT_K)
    # Decode the split's first (r, s, channel block) once; the loop then counts up without div/mod.
    channel_block = it % channel_blocks
    r = (it // channel_blocks) // kernel_w
    s = (it // channel_blocks) % kernel_w

    acc = zero_accumulator(BLOCK_M, BLOCK_N, x_ptr)
    for _ in range(it, it_end):
        channel0 = channel_block * BLOCK_K
        k_ok = offs_k < in_per_group - channel0
        if POINTWISE:
            a_ok = row_ok
        else:
            ih = top + r * dil_h
            iw = left + s * dil_w
            a_ok = row_ok & (ih >= 0) & (ih < height) & (iw >= 0) & (iw < width)
        tap_x = r * dil_h * x_sh + s * dil_w * x_sw
        if X_C_UNIT:
            a_ptrs = x_ptr + (x_rows + tap_x)[:, None] + (x_chan + channel0)[None, :]
        else:
            a_ptrs = x_ptr + (x_rows + tap_x)[:, None] + (x_chan + channel0 * x_sc)[None, :]
        a = tl.load(a_ptrs, mask=a_ok[:, None] & k_ok[None, :], other=0.0)
        tap_w = r * w_sr + s * w_ss + channel0 * w_sc
        b_ptrs = w_ptr + (w_chan + tap_w)[:, None] + w_cols[None, :]
        b = tl.load(b_ptrs, mask=k_ok[:, None] & col_ok[None, :], other=0.0)
        acc = mma(acc, a, b, INPUT_PRECISION, UPCAST)

        channel_block, s, r = next_tap_step(channel_block, s, r, channel_blocks, kernel_w)

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
        store_tile(acc, y_ptr, y_rows, y_cols, row_ok, col_ok, bias_ptr, out_channel, HAS_BIAS)
