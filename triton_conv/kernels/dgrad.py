"""Input gradient as an implicit GEMM, one dense sub-problem per stride phase.

dx[n, c, h, w] = sum over (k, r, s) of dy[n, k, p, q] w[k, c, r, s], where h + pad - r * dil = p * stride.
With stride > 1 most (h, r) pairs have no integer p, so zero-stuffing dy would spend most multiply-adds
on zeros. Instead the input rows h = first + i * stride of one phase are reached only by the taps
r = tap0 + j * tap_step, which read p = out_first + i - j * out_step (ConvProblem.dgrad_phases names
the same numbers on the host): each of the stride_h * stride_w phases is a dense stride-1 GEMM with
M = N * rows * cols, columns = C per group and a reduction over (K per group) x (the phase's taps).

All phases share one launch: program axis 1 is group x phase, axis 0 counts tiles of the largest
phase (a smaller phase's surplus tiles do no work), axis 2 splits the reduction.

With TAP_BITS a row whose tap reads padding takes its BLOCK_K channels from `zeros_ptr` (the
launcher's never-written run of ZERO_SEGMENTS x BLOCK_K zeros) instead of a masked load from dy:
the copy then needs no mask, which Triton 3.9 turns into four more instructions per 16-byte
vector. Each program reads its own segment of the run (its linear id modulo ZERO_SEGMENTS): with
one segment, every padding row of every CTA copies the same bytes, and those 16-byte copies
(cp.async.cg, past the L1) all queue at the one L2 slice that holds them.

HAS_BIAS adds a bias per column (input channel) in the epilogue: the transposed convolution's forward
is this pass, and its bias belongs there.
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

# Segments of the zero run (TAP_BITS), about the CTAs an H200 holds at once (132 SMs, up to 8
# each at the search space's tiles), so that few resident programs share one. The launcher sizes
# the run by it: 128 KB for bf16 at BLOCK_K 64.
ZERO_SEGMENTS = tl.constexpr(1024)


@triton.jit
def phase_axis(phase, size, stride, pad, dil, kernel, tap_step):
    """(rows, tap0, taps, out_first) of one axis of a phase, as stride_phases.PhaseAxis defines them.

    Scalar math per program, not a table: a device-side table costs a host-to-device copy per call
    and does not survive CUDA-graph capture.
    """
    rows = (size - phase + stride - 1) // stride
    # At most one r in [0, tap_step) solves r * dil = phase + pad (mod stride); tap0 = kernel: none.
    tap0 = phase * 0 + kernel  # a tensor even when `kernel` is specialised to a constexpr
    for r in range(0, tap_step):
        hit = ((phase + pad - r * dil) % stride == 0) & (r < kernel)
        tap0 = tl.where(hit, r, tap0)
    taps = tl.where(tap0 < kernel, (kernel - 1 - tap0) // tap_step + 1, 0)
    # An exact division when the phase has taps (and unused when it has none).
    out_first = (phase + pad - tap0 * dil) // stride
    return rows, tap0, taps, out_first


@triton.jit
def dgrad_kernel(
    dy_ptr, w_ptr, bias_ptr, dx_ptr, zeros_ptr, workspace_ptr, counter_ptr,
    batch, height, width, in_per_group, out_per_group, out_height, out_width,
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, kernel_h, kernel_w, tap_step_h, tap_step_w,
    dy_sn, dy_sk, dy_sp, dy_sq,
    w_sk, w_sc, w_sr, w_ss,
    dx_sn, dx_sc, dx_sh, dx_sw,
    HAS_BIAS: tl.constexpr,
    DY_K_UNIT: tl.constexpr, W_C_UNIT: tl.constexpr, DX_C_UNIT: tl.constexpr,
    POINTWISE: tl.constexpr, CHANNELS_ALIGNED: tl.constexpr, TAP_BITS: tl.constexpr, W_DENSE: tl.constexpr,
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
    phases = stride_h * stride_w
    group = tl.program_id(1) // phases
    phase = tl.program_id(1) % phases
    phase_h = phase // stride_w
    phase_w = phase % stride_w
    rows_h, tap0_h, taps_h, out_first_h = phase_axis(
        phase_h, height, stride_h, pad_h, dil_h, kernel_h, tap_step_h
    )
    rows_w, tap0_w, taps_w, out_first_w = phase_axis(
        phase_w, width, stride_w, pad_w, dil_w, kernel_w, tap_step_w
    )
    out_step_h = tap_step_h * dil_h // stride_h
    out_step_w = tap_step_w * dil_w // stride_w

    # Tiles are counted for the largest phase (phase 0); a smaller phase's surplus tiles run no
    # iteration and store nothing. Masking beats an early return, which cost ~30 registers on sm_90.
    gemm_m = batch * rows_h * rows_w
    tiles_m = tl.cdiv(batch * tl.cdiv(height, stride_h) * tl.cdiv(width, stride_w), BLOCK_M)
    tiles_n = tl.cdiv(in_per_group, BLOCK_N)
    tile_m, tile_n = swizzled_tile(tl.program_id(0), tiles_m, tiles_n, GROUP_M)
    live = tile_m * BLOCK_M < gemm_m
    split_id = tl.program_id(2)

    # Rows: input pixels (n, i, j) of the phase, decoded once; (p_row, q_row) is what tap j = 0 reads.
    offs_m = tile_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = offs_m < gemm_m
    if POINTWISE:  # rows past the end wrap to real ones, as a plain matmul's do (never stored)
        n, i, j = decode_pixels(offs_m % max(gemm_m, 1), max(rows_h, 1), max(rows_w, 1))
        p_row = out_first_h + i
    else:
        n, i, j = decode_pixels(offs_m, max(rows_h, 1), max(rows_w, 1))
        # A row past the phase's end gets p_row = -1, which every tap's bounds check rejects.
        p_row = tl.where(row_ok, out_first_h + i, -1)
    q_row = out_first_w + j
    dy_rows = (
        as_offset(n, USE_INT64) * dy_sn
        + as_offset(p_row, USE_INT64) * dy_sp
        + as_offset(q_row, USE_INT64) * dy_sq
    )
    # Where each row's dx goes, computed now: one offset per row lives across the loop, not (n, i, j).
    dx_rows = (
        as_offset(n, USE_INT64) * dx_sn
        + as_offset(phase_h + i * stride_h, USE_INT64) * dx_sh
        + as_offset(phase_w + j * stride_w, USE_INT64) * dx_sw
    )
    # Columns: input channels of this group; past the group they wrap to real ones (never stored),
    # or, with W_DENSE (the launcher's zero-padded copy of a few-channel weight), read its zeros.
    offs_n = tile_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = offs_n < in_per_group
    in_channel = group * in_per_group + offs_n
    w_cols = as_offset(offs_n if W_DENSE else offs_n % in_per_group, USE_INT64)
    w_cols = w_cols if W_C_UNIT else w_cols * w_sc

    # Reduction: output channels of this group (the GEMM's K) for each of the phase's taps.
    offs_k = tl.arange(0, BLOCK_K)
    first_k = group * out_per_group
    dy_chan = as_offset(first_k + offs_k, USE_INT64)
    dy_chan = dy_chan if DY_K_UNIT else dy_chan * dy_sk
    w_rows = as_offset(first_k + offs_k, USE_INT64) * w_sk + (tap0_h * w_sr + tap0_w * w_ss)
    # Loop-invariant pointers: a step adds one scalar offset to each.
    a_base = dy_ptr + dy_rows[:, None] + dy_chan[None, :]
    b_base = w_ptr + w_rows[:, None] + w_cols[None, :]

    dy_sk_o = 1 if DY_K_UNIT else as_offset(dy_sk, USE_INT64)
    w_sk_o = as_offset(w_sk, USE_INT64)
    dy_back_h = as_offset(out_step_h, USE_INT64) * dy_sp  # dy offset from one tap row to the next
    dy_back_w = as_offset(out_step_w, USE_INT64) * dy_sq
    w_step_h = tap_step_h * w_sr
    w_step_w = tap_step_w * w_ss
    out_height_u = tl.cast(out_height, tl.uint32)
    out_width_u = tl.cast(out_width, tl.uint32)

    channel_blocks = tl.cdiv(out_per_group, BLOCK_K)
    it, it_end = split_range(taps_h * taps_w * channel_blocks, split_id, SPLIT_K)
    it_end = tl.where(live, it_end, it)
    # Decode the split's first (tap row, tap column, channel block) once, then count up.
    channel_block = it % channel_blocks
    jr = (it // channel_blocks) // max(taps_w, 1)
    js = (it // channel_blocks) % max(taps_w, 1)
    blocks_left = channel_blocks - channel_block
    a_offset = channel_block * BLOCK_K * dy_sk_o - (jr * dy_back_h + js * dy_back_w)
    b_offset = channel_block * BLOCK_K * w_sk_o + (jr * w_step_h + js * w_step_w)
    # At the end of a tap's channels: back to channel 0 and on to the next tap column (or row).
    a_next_col = -dy_back_w - (channel_blocks - 1) * BLOCK_K * dy_sk_o
    a_next_row = taps_w * dy_back_w - dy_back_h
    b_next_col = w_step_w - (channel_blocks - 1) * BLOCK_K * w_sk_o
    b_next_row = w_step_h - taps_w * w_step_w
    if TAP_BITS:
        # Tap (jr, js) reads p = p_row - jr * out_step_h: count it from the far end so positions grow.
        lo_h, hi_h = axis_taps(out_height - 1 - p_row, taps_h, out_step_h, out_height)
        lo_w, hi_w = axis_taps(out_width - 1 - q_row, taps_w, out_step_w, out_width)
        cols = max(taps_w, 1)
        first_cols = ((1 << (taps_h * cols)) - 1) // ((1 << cols) - 1)  # bits jr·taps_w, every jr
        tap_bad = ~tap_bits(lo_h, hi_h, lo_w, hi_w, cols, first_cols)[:, None]
        tap_bit = 1 << (jr * cols + js)
        # The linear program id wraps in int32 past 2**31 programs (nothing bounds the grid's
        # product), where `%` goes negative: its magnitude is a segment all the same. (Masking the
        # low bits is as right, but ptxas then schedules the stem's loop 2 instructions longer.)
        program = tl.program_id(0) + tl.num_programs(0) * (tl.program_id(1) + tl.num_programs(1) * split_id)
        # A segment is BLOCK_K elements: the same contiguity and alignment as dy's channels.
        zero_run = zeros_ptr + tl.abs(program % ZERO_SEGMENTS) * BLOCK_K + offs_k[None, :]

    acc = zero_accumulator(BLOCK_M, BLOCK_N, dy_ptr)
    for _ in range(it, it_end):
        a_ptrs = a_base + a_offset
        if POINTWISE:
            a_mask = None
        elif TAP_BITS:  # a pointer select, no mask: rows whose tap reads padding read zeros
            a_ptrs = tl.where((tap_bad & tap_bit) != 0, zero_run, a_ptrs)
            a_mask = None
        else:
            # 0 <= p < out_height in one unsigned compare.
            p = (p_row - jr * out_step_h).to(tl.uint32, bitcast=True)
            q = (q_row - js * out_step_w).to(tl.uint32, bitcast=True)
            a_mask = ((p < out_height_u) & (q < out_width_u))[:, None]
        if CHANNELS_ALIGNED:
            b = tl.load(b_base + b_offset)
        else:
            k_ok = offs_k < out_per_group - (channel_blocks - blocks_left) * BLOCK_K
            a_mask = k_ok[None, :] if a_mask is None else a_mask & k_ok[None, :]
            b = tl.load(b_base + b_offset, mask=k_ok[:, None], other=0.0)
        if a_mask is None:
            a = tl.load(a_ptrs)
        else:
            a = tl.load(a_ptrs, mask=a_mask, other=0.0)
        acc = mma(acc, a, b, INPUT_PRECISION, UPCAST)

        # Next (tap row, tap column, channel block), channel blocks innermost (inline: fprop's
        # comment says why).
        blocks_left -= 1
        tap_done = blocks_left == 0
        blocks_left = tl.where(tap_done, channel_blocks, blocks_left)
        if TAP_BITS:
            tap_bit = tl.where(tap_done, tap_bit << 1, tap_bit)
            row_done = tap_done & ((tap_bit & first_cols) != 0)
        else:
            js += tap_done.to(tl.int32)
            row_done = js == taps_w
            js = tl.where(row_done, 0, js)
            jr += row_done.to(tl.int32)
        a_offset += tl.where(
            row_done, a_next_col + a_next_row, tl.where(tap_done, a_next_col, BLOCK_K * dy_sk_o)
        )
        b_offset += tl.where(
            row_done, b_next_col + b_next_row, tl.where(tap_done, b_next_col, BLOCK_K * w_sk_o)
        )

    # A phase no tap reaches (1x1 stride 2) runs no iteration and stores its zeros (or bias) here.
    do_store = True
    if SPLIT_K > 1:
        tile_slot = tl.program_id(1) * tl.num_programs(0) + tl.program_id(0)
        acc, do_store = reduce_splits(
            acc, workspace_ptr, counter_ptr, tile_slot, split_id, SPLIT_K, BLOCK_M, BLOCK_N, USE_INT64
        )
    if do_store:
        dx_cols = as_offset(in_channel, USE_INT64)
        dx_cols = dx_cols if DX_C_UNIT else dx_cols * dx_sc
        store_tile(acc, dx_ptr, dx_rows, dx_cols, row_ok, col_ok, bias_ptr, in_channel, HAS_BIAS, UPCAST)
