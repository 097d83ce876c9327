"""Input gradient by masked gathers: the baseline that stride-phase decomposition (kernels/dgrad.py)
is measured against. Not used by the package's autograd; bench/bench_dgrad_phases.py times both.

dx[n, c, h, w] = sum over (k, r, s) of dy[n, k, p, q] w[k, c, r, s], where p = (h + pad - r * dil) / stride.
One implicit GEMM with M = N * H * W rows (every input pixel), columns = C per group, and a reduction
over (K per group) x ALL R x S taps. A tap whose p is not an integer, or lies outside the output, is
masked to zero: the kernel does the multiply-adds of zero-stuffing dy (about stride_h * stride_w
times the real ones), only without materialising the stuffed tensor.
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
    wide_strides,
    zero_accumulator,
)


@triton.jit
def dgrad_masked_kernel(
    dy_ptr, w_ptr, dx_ptr, workspace_ptr, counter_ptr,
    batch, height, width, in_per_group, out_per_group, out_height, out_width,
    pad_h, pad_w, dil_h, dil_w, kernel_h, kernel_w,
    dy_sn, dy_sk, dy_sp, dy_sq,
    w_sk, w_sc, w_sr, w_ss,
    dx_sn, dx_sc, dx_sh, dx_sw,
    STRIDE_H: tl.constexpr, STRIDE_W: tl.constexpr,
    USE_INT64: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr, SPLIT_K: tl.constexpr,
):  # fmt: skip
    if USE_INT64:  # int64 strides: a coordinate x stride product must not wrap in int32 first
        dy_sn, dy_sk, dy_sp, dy_sq = wide_strides(dy_sn, dy_sk, dy_sp, dy_sq)
        w_sk, w_sc, w_sr, w_ss = wide_strides(w_sk, w_sc, w_sr, w_ss)
        dx_sn, dx_sc, dx_sh, dx_sw = wide_strides(dx_sn, dx_sc, dx_sh, dx_sw)
    group = tl.program_id(1)
    split_id = tl.program_id(2)
    gemm_m = batch * height * width
    tiles_m = tl.cdiv(gemm_m, BLOCK_M)
    tiles_n = tl.cdiv(in_per_group, BLOCK_N)
    tile_m, tile_n = swizzled_tile(tl.program_id(0), tiles_m, tiles_n, GROUP_M)

    # Rows: every input pixel (n, h, w), decoded once; (h + pad) is what tap r = 0 would read.
    offs_m = tile_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = offs_m < gemm_m
    n, h, w = decode_pixels(offs_m, height, width)
    h_pad = h + pad_h
    w_pad = w + pad_w
    dy_n = as_offset(n, USE_INT64) * dy_sn
    # Columns: input channels of this group.
    offs_n = tile_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = offs_n < in_per_group
    in_channel = group * in_per_group + offs_n
    w_cols = as_offset(offs_n, USE_INT64) * w_sc
    # Reduction: output channels of this group.
    offs_k = tl.arange(0, BLOCK_K)
    first_k = group * out_per_group
    dy_chan = as_offset(first_k + offs_k, USE_INT64) * dy_sk
    w_rows = as_offset(first_k + offs_k, USE_INT64) * w_sk
    dy_sk_o = as_offset(dy_sk, USE_INT64)
    w_sk_o = as_offset(w_sk, USE_INT64)
    out_height_u = tl.cast(out_height, tl.uint32)
    out_width_u = tl.cast(out_width, tl.uint32)

    channel_blocks = tl.cdiv(out_per_group, BLOCK_K)
    it, it_end = split_range(kernel_h * kernel_w * channel_blocks, split_id, SPLIT_K)
    channel_block = it % channel_blocks
    r = (it // channel_blocks) // kernel_w
    s = (it // channel_blocks) % kernel_w

    acc = zero_accumulator(BLOCK_M, BLOCK_N, dy_ptr)
    for _ in range(it, it_end):
        channel0 = channel_block * BLOCK_K
        k_ok = offs_k < out_per_group - channel0
        # Every tap, masked: the dot below runs whether or not any row of the tile has a real p.
        hp = h_pad - r * dil_h
        wq = w_pad - s * dil_w
        p = hp // STRIDE_H
        q = wq // STRIDE_W
        a_ok = (
            row_ok
            & (hp >= 0)
            & (wq >= 0)
            & (hp - p * STRIDE_H == 0)
            & (wq - q * STRIDE_W == 0)
            & (p.to(tl.uint32, bitcast=True) < out_height_u)
            & (q.to(tl.uint32, bitcast=True) < out_width_u)
        )
        a_rows = dy_n + as_offset(p, USE_INT64) * dy_sp + as_offset(q, USE_INT64) * dy_sq
        a_cols = dy_chan + channel0 * dy_sk_o
        a = tl.load(dy_ptr + a_rows[:, None] + a_cols[None, :], mask=a_ok[:, None] & k_ok[None, :], other=0.0)
        tap_w = r * w_sr + s * w_ss + channel0 * w_sk_o
        b = tl.load(
            w_ptr + (w_rows + tap_w)[:, None] + w_cols[None, :],
            mask=k_ok[:, None] & col_ok[None, :],
            other=0.0,
        )
        acc = mma(acc, a, b, INPUT_PRECISION, UPCAST)
        channel_block, s, r = next_tap_step(channel_block, s, r, channel_blocks, kernel_w)

    do_store = True
    if SPLIT_K > 1:
        tile_slot = tl.program_id(1) * tl.num_programs(0) + tl.program_id(0)
        acc, do_store = reduce_splits(
            acc, workspace_ptr, counter_ptr, tile_slot, split_id, SPLIT_K, BLOCK_M, BLOCK_N, USE_INT64
        )
    if do_store:
        dx_rows = (
            as_offset(n, USE_INT64) * dx_sn
            + as_offset(h, USE_INT64) * dx_sh
            + as_offset(w, USE_INT64) * dx_sw
        )
        dx_cols = as_offset(in_channel, USE_INT64) * dx_sc
        store_tile(acc, dx_ptr, dx_rows, dx_cols, row_ok, col_ok, dx_ptr, in_channel, False, UPCAST)
