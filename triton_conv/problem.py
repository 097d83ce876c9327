"""The convolution's geometry, named once: output size and the GEMM view of each pass.

Every launcher, the tuner, the model and the tests describe a convolution with a `ConvProblem`.
Padding is stored per side because padding='same' with an even kernel pads more at the bottom and
right than at the top and left (as torch does); the kernels only need the top/left offsets, the
bottom/right padding only shapes the output size.

A transposed convolution is described by its conv2d view (`from_transposed`): the convolution whose
input gradient it is. Its three passes are that view's passes (TRANSPOSED_PASSES): forward = dgrad,
input gradient = fprop, weight gradient = wgrad with x and dy exchanged. conv1d is a conv2d of
height one.

The constructors' checks (torch's, on shapes alone) are in geometry_checks.py; dgrad's stride phases
in stride_phases.py.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch.fx.experimental.symbolic_shapes import guard_or_true

from .arguments import ConvArgumentError
from .geometry_checks import conv2d_fields, sided_conv2d_fields, transposed_view_fields
from .stride_phases import DgradPhase, dgrad_phases

PASSES = ("fprop", "dgrad", "wgrad")
# The conv2d pass (of the conv2d view) that runs each pass of a transposed convolution.
TRANSPOSED_PASSES = {"fprop": "dgrad", "dgrad": "fprop", "wgrad": "wgrad"}


class GemmShape(NamedTuple):
    """One pass as a GEMM, per group: C[m, n] = sum_k A[m, k] B[k, n]."""

    m: int
    n: int
    k: int


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
        return cls(*conv2d_fields(input_shape, weight_shape, stride, padding, dilation, groups))

    @classmethod
    def from_sides(cls, input_shape, weight_shape, stride, padding, dilation, groups) -> ConvProblem:
        """The same checks for the custom ops' form of the arguments: padding is four ints (top,
        left, bottom, right). Degenerate shapes follow torch: no batch or no input channels give an
        empty output (see output_shape), no output channels and an empty image raise.

        The bottom and right padding may be negative: a crop, the last rows or columns that no
        window reads (a transposed convolution's view with output_padding > padding has one).
        """
        return cls(*sided_conv2d_fields(input_shape, weight_shape, stride, padding, dilation, groups))

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
        return cls(
            *transposed_view_fields(
                input_shape, weight_shape, stride, padding, output_padding, dilation, groups
            )
        )

    def canonical(self) -> ConvProblem:
        """The same convolution with each stride at most the padded input's span (the positions
        the dilated kernel can take): a larger stride leaves one output row, the same whatever its
        value; and a dilation of 1 on an axis of one tap, where it spaces nothing. The ops run this
        form, so that a huge stride never reaches a kernel (dgrad launches one phase per stride
        step), nor a dilation past int32 that the geometry checks cannot see (a one-tap axis's
        dilated extent is 1 whatever its dilation).

        While torch.compile or torch.export traces (sizes that may be symbolic: dynamo shows them to
        this code as ints), the problem is left as it is: comparing a symbolic size with the stride
        would add a guard that torch's own convolution does not, or fail on a data-dependent size;
        the op's real call canonicalizes the sizes it is given."""
        span_h = self.height + self.pad_top + self.pad_bottom - self.dilation[0] * (self.kernel_h - 1)
        span_w = self.width + self.pad_left + self.pad_right - self.dilation[1] * (self.kernel_w - 1)
        if torch.compiler.is_compiling() or not (type(span_h) is int and type(span_w) is int):
            return self
        stride = (min(self.stride[0], max(span_h, 1)), min(self.stride[1], max(span_w, 1)))
        taps = (self.kernel_h, self.kernel_w)
        dilation = tuple(1 if count == 1 else d for count, d in zip(taps, self.dilation, strict=True))
        if stride == self.stride and dilation == self.dilation:
            return self
        return dataclasses.replace(self, stride=stride, dilation=dilation)

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
        # A channel count torch.compile marks unbacked (data-dependent) is taken as nonzero, as
        # torch's own shape function takes it: a guard on it cannot be made.
        channels = self.out_channels if guard_or_true(self.in_channels != 0) else 0
        return (self.batch, channels, self.out_height, self.out_width)

    @property
    def pads(self) -> tuple[int, int, int, int]:
        """(top, left, bottom, right): the order the ops take their padding in."""
        return (self.pad_top, self.pad_left, self.pad_bottom, self.pad_right)

    @property
    def is_pointwise(self) -> bool:
        """A 1x1, stride-1, unpadded convolution: fprop is a plain GEMM over NHWC rows."""
        return self.kernel_h == self.kernel_w == 1 and self.stride == (1, 1) and not any(self.pads)

    def with_batch(self, batch: int) -> ConvProblem:
        return dataclasses.replace(self, batch=batch)

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
        """The stride_h x stride_w dense sub-problems of the input gradient (see stride_phases.py)."""
        return dgrad_phases(self)

    @property
    def phase_count(self) -> int:
        """stride_h x stride_w: dgrad's stride phases, which its one launch runs side by side."""
        return self.stride[0] * self.stride[1]

    def dgrad_launch_rows(self) -> int:
        """GEMM rows of each stride phase's tiles in dgrad's one launch: phase 0's, which has the most
        rows of any phase (ceil division), so every phase gets its row tiles."""
        return self.batch * self.dgrad_image_rows()

    def dgrad_image_rows(self) -> int:
        """One image's share of dgrad_launch_rows: phase 0's input pixels, ceil(H / stride_h) x
        ceil(W / stride_w) (stride_phases' count of phase 0, without building the phases: the
        launch path asks for it on every call)."""
        return -(-self.height // self.stride[0]) * -(-self.width // self.stride[1])

    def dgrad_most_taps(self) -> int:
        """The taps of dgrad's longest phase, which is not phase 0 in general (a 3x3 stride-2 conv's
        phases have 1, 2, 2 and 4 taps): its tiles' reductions are the launch's critical path."""
        return max(phase.rows.taps * phase.cols.taps for phase in self.dgrad_phases())

    def __str__(self) -> str:
        return (
            f"N={self.batch} C={self.in_channels} H={self.height} W={self.width} "
            f"K={self.out_channels} R={self.kernel_h} S={self.kernel_w} stride={self.stride} "
            f"pad(t,l,b,r)={self.pads} dilation={self.dilation} groups={self.groups}"
        )
