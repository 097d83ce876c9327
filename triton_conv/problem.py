"""The convolution's geometry, named once: validation, output size and the GEMM view of each pass.

Every launcher, the tuner, the model and the tests describe a convolution with a `ConvProblem`.
Padding is stored per side because padding='same' with an even kernel pads more at the bottom and
right than at the top and left (as torch does); the kernels only need the top/left offsets, the
bottom/right padding only shapes the output size.

A transposed convolution is described by its conv2d view (`from_transposed`): the convolution whose
input gradient it is. Its three passes are that view's passes (TRANSPOSED_PASSES): forward = dgrad,
input gradient = fprop, weight gradient = wgrad with x and dy exchanged. conv1d is a conv2d of
height one.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import NamedTuple

import torch

from .arguments import INT32_MAX, ConvArgumentError, as_int, int_tuple

PASSES = ("fprop", "dgrad", "wgrad")
# The conv2d pass (of the conv2d view) that runs each pass of a transposed convolution.
TRANSPOSED_PASSES = {"fprop": "dgrad", "dgrad": "fprop", "wgrad": "wgrad"}


class GemmShape(NamedTuple):
    """One pass as a GEMM, per group: C[m, n] = sum_k A[m, k] B[k, n]."""

    m: int
    n: int
    k: int


def _is_traced_size(value) -> bool:
    return isinstance(value, torch.Tensor) and value.dim() == 0 and not value.is_floating_point()


def _shape(value, rank: int, name: str) -> tuple[int, ...]:
    # ints; SymInts when torch.compile traces with dynamic shapes; 0-d integer tensors under
    # torch.jit.trace, which records sizes as tensors.
    shape = tuple(int(d) if _is_traced_size(d) else d for d in value)
    if len(shape) != rank or not all(isinstance(d, (int, torch.SymInt)) and d >= 0 for d in shape):
        raise ConvArgumentError(f"{name} must have {rank} non-negative dimensions, got shape {shape}")
    return shape


@dataclass(frozen=True)
class ConvProblem:
    """A 2-D convolution y = conv(x, w): x is (N, C, H, W), w is (K, C/groups, R, S), y is (N, K, P, Q)."""

    batch: int
    in_channels: int
    height: int
    width: int
    out_channels: int
    kernel_h: int
    kernel_w: int
    stride: tuple[int, int] = (1, 1)
    pad_top: int = 0
    pad_left: int = 0
    pad_bottom: int = 0
    pad_right: int = 0
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1

    @classmethod
    def from_shapes(cls, input_shape, weight_shape, stride=1, padding=0, dilation=1, groups=1) -> ConvProblem:
        """Validate torch.nn.functional.conv2d's arguments and name the geometry.

        `input_shape` is (N, C, H, W) (an unbatched (C, H, W) input is the caller's to unsqueeze);
        padding is an int, a pair, 'same' or 'valid'. Raises ConvArgumentError / ConvTypeError
        (RuntimeError and ValueError / TypeError) naming the argument at fault.
        """
        weight_shape = _shape(weight_shape, 4, "weight")
        stride = int_tuple(stride, "stride", 2)
        dilation = int_tuple(dilation, "dilation", 2)
        if not isinstance(padding, str):
            pad_h, pad_w = int_tuple(padding, "padding", 2)
            return cls.from_sides(
                input_shape, weight_shape, stride, (pad_h, pad_w, pad_h, pad_w), dilation, groups
            )
        if padding == "valid":
            return cls.from_sides(input_shape, weight_shape, stride, (0, 0, 0, 0), dilation, groups)
        if padding != "same":
            raise ConvArgumentError(f"padding must be 'same', 'valid', an int or a pair, got {padding!r}")
        if stride != (1, 1):
            raise ConvArgumentError(f"padding='same' needs stride 1, got stride={stride}")
        if 0 in weight_shape[2:]:
            raise ConvArgumentError(
                f"padding='same' needs a non-empty kernel, got weight of shape {weight_shape}"
            )
        # torch pads the extra row/column of an even kernel at the bottom/right.
        total_h = dilation[0] * (weight_shape[2] - 1)
        total_w = dilation[1] * (weight_shape[3] - 1)
        pads = (total_h // 2, total_w // 2, total_h - total_h // 2, total_w - total_w // 2)
        return cls.from_sides(input_shape, weight_shape, stride, pads, dilation, groups)

    @classmethod
    def from_sides(cls, input_shape, weight_shape, stride, padding, dilation, groups) -> ConvProblem:
        """The same checks for the custom ops' form of the arguments: padding is four ints (top,
        left, bottom, right). Degenerate shapes follow torch: no batch or no input channels give an
        empty output (see output_shape), no output channels and an empty image raise.

        The bottom and right padding may be negative: a crop, the last rows or columns that no
        window reads (a transposed convolution's view with output_padding > padding has one).
        """
        batch, in_channels, height, width = _shape(input_shape, 4, "input")
        out_channels, channels_per_group, kernel_h, kernel_w = _shape(weight_shape, 4, "weight")
        stride = int_tuple(stride, "stride", 2)
        dilation = int_tuple(dilation, "dilation", 2)
        pads = int_tuple(padding, "padding", 4)
        groups = as_int(groups, "groups")
        if min(stride) <= 0:
            raise ConvArgumentError(f"stride must be positive, got {stride}")
        if min(dilation) <= 0:
            raise ConvArgumentError(f"dilation must be positive, got {dilation}")
        if min(pads[:2]) < 0:
            raise ConvArgumentError(f"padding must be non-negative, got {pads}")
        if groups <= 0:
            raise ConvArgumentError(f"groups must be positive, got {groups}")
        if out_channels < groups or out_channels % groups:
            raise ConvArgumentError(
                f"groups={groups} must divide the weight's output channels ({out_channels}), which "
                f"cannot be 0: weight has shape {tuple(weight_shape)}"
            )
        if in_channels % groups:
            raise ConvArgumentError(f"groups={groups} must divide the input channels ({in_channels})")
        if channels_per_group * groups != in_channels:
            raise ConvArgumentError(
                f"weight expects {channels_per_group * groups} input channels "
                f"({channels_per_group} per group x groups={groups}), but input has {in_channels}"
            )
        extent_h = dilation[0] * (kernel_h - 1) + 1
        extent_w = dilation[1] * (kernel_w - 1) + 1
        padded_h, padded_w = height + pads[0] + pads[2], width + pads[1] + pads[3]
        if padded_h < extent_h or padded_w < extent_w:
            kernel = f"{extent_h}x{extent_w}: {kernel_h}x{kernel_w}, dilation={dilation}"
            raise ConvArgumentError(
                f"weight's dilated kernel ({kernel}) is larger than the padded input "
                f"({padded_h}x{padded_w}: padding={pads})"
            )
        if max(padded_h, padded_w, extent_h, extent_w) > INT32_MAX:
            raise ConvArgumentError(
                f"padding={pads} and dilation={dilation} make a padded input of {padded_h}x{padded_w} "
                f"and a kernel extent of {extent_h}x{extent_w}; the kernels take at most {INT32_MAX}"
            )
        if in_channels and (kernel_h == 0 or kernel_w == 0):
            raise ConvArgumentError(f"weight must have a non-empty kernel, got shape {tuple(weight_shape)}")
        if in_channels and batch and (height == 0 or width == 0):
            raise ConvArgumentError(
                f"input has an empty image (shape {tuple(input_shape)}): like torch, only an empty "
                "batch or zero input channels are accepted"
            )
        return cls(
            batch, in_channels, height, width, out_channels, kernel_h, kernel_w,
            stride, *pads, dilation, groups,
        )  # fmt: skip

    @classmethod
    def from_transposed(
        cls, input_shape, weight_shape, stride=1, padding=0, output_padding=0, dilation=1, groups=1
    ) -> ConvProblem:
        """Validate torch.nn.functional.conv_transpose2d's arguments (as torch checks them) and
        return the transposed convolution's conv2d view, the convolution whose input gradient it is.

        The transposed convolution maps x (N, C_in, H, W) with w (C_in, C_out/g, R, S) to y (N, C_out,
        H_out, W_out), H_out = (H - 1)·stride - 2·pad + dil·(R - 1) + output_padding + 1. The view
        convolves y-shaped inputs with the same w (its K is C_in) into x-shaped outputs: input (N,
        C_out, H_out, W_out), padding pad at the top and pad - output_padding at the bottom (negative:
        a crop of rows no window reads), so that its output is exactly H x W.
        """
        batch, in_channels, height, width = _shape(input_shape, 4, "input")
        weight_shape = _shape(weight_shape, 4, "weight")
        weight_in, out_per_group, kernel_h, kernel_w = weight_shape
        stride = int_tuple(stride, "stride", 2)
        pads = int_tuple(padding, "padding", 2)
        output_padding = int_tuple(output_padding, "output_padding", 2)
        dilation = int_tuple(dilation, "dilation", 2)
        groups = as_int(groups, "groups")
        for name, values, least in (
            ("stride", stride, 1), ("dilation", dilation, 1), ("padding", pads, 0),
            ("output_padding", output_padding, 0), ("groups", (groups,), 1),
        ):  # fmt: skip
            if min(values) < least:
                raise ConvArgumentError(
                    f"{name} must be {'positive' if least else 'non-negative'}, got {values}"
                )
        if any(o >= max(s, d) for o, s, d in zip(output_padding, stride, dilation)):
            raise ConvArgumentError(
                f"output_padding={output_padding} must be smaller than stride={stride} or "
                f"dilation={dilation} (on each axis)"
            )
        if weight_in < groups or weight_in % groups:
            raise ConvArgumentError(
                f"groups={groups} must divide the weight's input channels ({weight_in}, its first "
                f"dimension), which cannot be 0: weight has shape {weight_shape}"
            )
        if in_channels != weight_in:
            raise ConvArgumentError(f"weight expects {weight_in} input channels, but input has {in_channels}")
        if 0 in (out_per_group, kernel_h, kernel_w):
            raise ConvArgumentError(
                f"weight must have output channels and a kernel, got shape {weight_shape}"
            )
        if batch and (height == 0 or width == 0):
            raise ConvArgumentError(
                f"input has an empty image (shape {tuple(input_shape)}): like torch, only an empty batch "
                "is accepted"
            )
        extents = [d * (k - 1) + 1 for d, k in zip(dilation, (kernel_h, kernel_w))]
        out_h, out_w = (
            (size - 1) * s - 2 * p + e + o
            for size, s, p, e, o in zip((height, width), stride, pads, extents, output_padding)
        )
        least = 1 if batch else 0  # as torch: an empty batch may have an empty output image
        if min(out_h, out_w) < least or max(out_h + 2 * pads[0], out_w + 2 * pads[1], *extents) > INT32_MAX:
            raise ConvArgumentError(
                f"the output would be {out_h}x{out_w} for an input of {height}x{width} (stride={stride}, "
                f"padding={pads}, dilation={dilation}, output_padding={output_padding}): it must be at "
                f"least {least}x{least}, and padded output and kernel extent at most {INT32_MAX}"
            )
        return cls(
            batch, out_per_group * groups, out_h, out_w, in_channels, kernel_h, kernel_w, stride,
            pads[0], pads[1], pads[0] - output_padding[0], pads[1] - output_padding[1], dilation, groups,
        )  # fmt: skip

    def canonical(self) -> ConvProblem:
        """The same convolution with each stride at most the padded input's span (the positions
        the dilated kernel can take): a larger stride leaves one output row, the same whatever its
        value. The ops run this form, so that a huge stride never reaches a kernel (dgrad launches
        one phase per stride step)."""
        span_h = self.height + self.pad_top + self.pad_bottom - self.dilation[0] * (self.kernel_h - 1)
        span_w = self.width + self.pad_left + self.pad_right - self.dilation[1] * (self.kernel_w - 1)
        stride = (min(self.stride[0], max(span_h, 1)), min(self.stride[1], max(span_w, 1)))
        if stride == self.stride:
            return self
        return dataclasses.replace(self, stride=stride)

    # --- sizes -------------------------------------------------------------------------------
    @property
    def out_height(self) -> int:
        span = self.height + self.pad_top + self.pad_bottom - self.dilation[0] * (self.kernel_h - 1)
        return (span - 1) // self.stride[0] + 1

    @property
    def out_width(self) -> int:
        span = self.width + self.pad_left + self.pad_right - self.dilation[1] * (self.kernel_w - 1)
        return (span - 1) // self.stride[1] + 1

    @property
    def in_per_group(self) -> int:
        return self.in_channels // self.groups

    @property
    def out_per_group(self) -> int:
        return self.out_channels // self.groups

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.in_channels, self.height, self.width)

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.out_channels, self.in_per_group, self.kernel_h, self.kernel_w)

    @property
    def output_shape(self) -> tuple[int, int, int, int]:
        """(N, K, P, Q); with no input channels (N, 0, P, Q), because that is what torch's conv2d
        returns (its empty-input path), bias or not."""
        channels = self.out_channels if self.in_channels else 0
        return (self.batch, channels, self.out_height, self.out_width)

    @property
    def is_pointwise(self) -> bool:
        """A 1x1, stride-1, unpadded convolution: fprop is a plain GEMM over NHWC rows."""
        return (
            self.kernel_h == self.kernel_w == 1
            and self.stride == (1, 1)
            and (self.pad_top, self.pad_left, self.pad_bottom, self.pad_right) == (0, 0, 0, 0)
        )

    def with_batch(self, batch: int) -> ConvProblem:
        return ConvProblem(
            batch, self.in_channels, self.height, self.width, self.out_channels,
            self.kernel_h, self.kernel_w, self.stride, self.pad_top, self.pad_left,
            self.pad_bottom, self.pad_right, self.dilation, self.groups,
        )  # fmt: skip

    # --- the GEMM views (per group) -----------------------------------------------------------
    def gemm(self, pass_name: str) -> GemmShape:
        """The GEMM of one pass, per group (see the table in the README)."""
        taps = self.kernel_h * self.kernel_w
        if pass_name == "fprop":
            return GemmShape(
                self.batch * self.out_height * self.out_width,
                self.out_per_group,
                self.in_per_group * taps,
            )
        if pass_name == "dgrad":
            return GemmShape(
                self.batch * self.height * self.width, self.in_per_group, self.out_per_group * taps
            )
        if pass_name == "wgrad":
            return GemmShape(
                self.out_per_group,
                self.in_per_group * taps,
                self.batch * self.out_height * self.out_width,
            )
        raise ValueError(f"pass_name must be one of {PASSES}, got {pass_name!r}")

    def transposed_gemm(self, pass_name: str) -> GemmShape:
        """The GEMM of one pass of the transposed convolution whose conv2d view this is: its forward
        is this view's dgrad (stride phases), its input gradient this view's fprop, its weight
        gradient this view's wgrad (dy and x exchanged), so it batches as dgrad does."""
        if pass_name not in TRANSPOSED_PASSES:
            raise ValueError(f"pass_name must be one of {PASSES}, got {pass_name!r}")
        return self.gemm(TRANSPOSED_PASSES[pass_name])

    def transposed_arguments(self) -> dict:
        """F.conv_transpose2d's stride, padding, output_padding, dilation and groups of the transposed
        convolution whose view this is (from_transposed's inverse): its input is this view's output,
        its output this view's input. Raises ValueError when no transposed convolution has this view
        (padding more at the bottom than at the top, or an output_padding out of range)."""
        extent_h = self.dilation[0] * (self.kernel_h - 1) + 1
        extent_w = self.dilation[1] * (self.kernel_w - 1) + 1
        output_padding = (
            self.height - ((self.out_height - 1) * self.stride[0] - 2 * self.pad_top + extent_h),
            self.width - ((self.out_width - 1) * self.stride[1] - 2 * self.pad_left + extent_w),
        )
        arguments = dict(
            stride=self.stride, padding=(self.pad_top, self.pad_left), output_padding=output_padding,
            dilation=self.dilation, groups=self.groups,
        )  # fmt: skip
        try:
            view = ConvProblem.from_transposed(self.output_shape, self.weight_shape, **arguments)
        except ConvArgumentError as error:
            raise ValueError(f"{self} is the view of no transposed convolution: {error}") from None
        if view.input_shape != self.input_shape:
            raise ValueError(f"{self} is the view of no transposed convolution (rows left unread)")
        return arguments

    def flops(self, pass_name: str = "fprop") -> int:
        """2 x the multiply-adds of one pass over all groups: every (output pixel, tap, c, k) product
        once, the same count for all three passes. (dgrad's GEMM view, N·H·W rows, would count
        stride_h·stride_w times too many: its stride phases skip the products that are zeros.)"""
        if pass_name not in PASSES:
            raise ValueError(f"pass_name must be one of {PASSES}, got {pass_name!r}")
        fprop = self.gemm("fprop")
        return 2 * fprop.m * fprop.n * fprop.k * self.groups

    def dgrad_phases(self) -> list[DgradPhase]:
        """The stride_h x stride_w dense sub-problems of the input gradient (see kernels/dgrad.py)."""
        phases = []
        for phase_h in range(self.stride[0]):
            rows = _phase_axis(
                phase_h, self.height, self.stride[0], self.pad_top, self.dilation[0], self.kernel_h
            )
            for phase_w in range(self.stride[1]):
                cols = _phase_axis(
                    phase_w, self.width, self.stride[1], self.pad_left, self.dilation[1], self.kernel_w
                )
                phases.append(DgradPhase(rows, cols))
        return phases

    def __str__(self) -> str:
        pads = (self.pad_top, self.pad_left, self.pad_bottom, self.pad_right)
        return (
            f"N={self.batch} C={self.in_channels} H={self.height} W={self.width} "
            f"K={self.out_channels} R={self.kernel_h} S={self.kernel_w} stride={self.stride} "
            f"pad(t,l,b,r)={pads} dilation={self.dilation} groups={self.groups}"
        )


class PhaseAxis(NamedTuple):
    """One axis of a dgrad stride phase: input rows first, first + stride, ...; kernel taps tap0,
    tap0 + tap_step, ...

    Input row h = first + i * stride reads output row p = out_first + i - j * out_step for the
    j-th tap r = tap0 + j * tap_step: every (i, j) pair is a real multiply-add, none is a zero.
    """

    first: int  # first input row of the phase
    count: int  # input rows in the phase
    tap0: int  # first kernel tap that reaches this phase (taps >= kernel size when none does)
    tap_step: int
    taps: int  # number of taps that reach the phase
    out_first: int  # output row read by (i=0, tap0)
    out_step: int  # output rows between consecutive taps


def _phase_axis(phase: int, size: int, stride: int, pad: int, dilation: int, kernel: int):
    count = max(0, -(-(size - phase) // stride))
    # Tap r reaches input row h when (h + pad - r * dilation) is a multiple of the stride.
    tap0 = next((r for r in range(kernel) if (phase + pad - r * dilation) % stride == 0), kernel)
    tap_step = stride // math.gcd(stride, dilation)
    taps = 0 if tap0 >= kernel else (kernel - 1 - tap0) // tap_step + 1
    out_first = (phase + pad - tap0 * dilation) // stride if taps else 0
    out_step = tap_step * dilation // stride
    return PhaseAxis(phase, count, tap0, tap_step, taps, out_first, out_step)


class DgradPhase(NamedTuple):
    rows: PhaseAxis
    cols: PhaseAxis
