"""PyTorch Inductor's Triton convolution templates, rendered for one layer without a GPU.

Inductor keeps each template as Jinja source (torch/_inductor/kernel/conv.py: `conv2d_template`;
from torch 2.13 also `conv2d_bwd_input_template` and `conv2d_bwd_weight_template`). Its code generator
fills the template's hooks (`def_kernel`, `size`, `stride`, `store_output`) from graph buffers; here
they are filled from a ConvProblem with static shapes, as Inductor specialises them: sizes and
strides become literals, block sizes and the layer's constants become `tl.constexpr` defines at the
top of the kernel, exactly where Inductor writes them. The main loop is the template's own; only the
epilogue (Inductor's generated store) is written more plainly. The rendered module is written to a
cache folder and compiled through triton_conv.compile_check like the package's kernels.

Inductor's config list (its CUDA heuristics, scaled to the layer's GEMM as Inductor scales it) and
the installed torch's launch rules (the forward template's 4-warp cap for unrolled-off kernels where
torch has it) decide the config; this module only renders.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import tempfile

import torch

from .problem import ConvProblem

# pass -> (the conv module's template name, its two inputs' names, what they are)
TEMPLATES = {
    "fprop": ("conv2d_template", ("X", "W"), ("x", "w")),
    "dgrad": ("conv2d_bwd_input_template", ("dY", "W"), ("dy", "w")),
    "wgrad": ("conv2d_bwd_weight_template", ("X", "dY"), ("x", "dy")),
}
_TL_TYPES = {torch.float16: "tl.float16", torch.bfloat16: "tl.bfloat16", torch.float32: "tl.float32"}


def _conv_module():
    from torch._inductor.kernel import conv

    return conv


def has_template(pass_name: str) -> bool:
    """Whether the installed torch has Inductor's Triton template for this pass."""
    return hasattr(_conv_module(), TEMPLATES[pass_name][0])


def _channels_last_strides(shape) -> tuple[int, int, int, int]:
    n, c, h, w = shape
    return (h * w * c, 1, w * c, c)


def _shapes(problem: ConvProblem) -> dict:
    return {
        "x": problem.input_shape,
        "w": problem.weight_shape,
        "dy": problem.output_shape,
        "y": problem.output_shape,
        "dx": problem.input_shape,
        "dw": problem.weight_shape,
    }


def inductor_configs(pass_name: str, problem: ConvProblem, dtype: torch.dtype) -> list[tuple]:
    """[(BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages)] that Inductor would try for this layer:
    its CUDA conv configs scaled to the layer (Inductor passes N·H·W, out channels, in channels),
    with the installed torch's warp cap on the forward template when the kernel is not 1x1."""
    from torch._inductor.graph import GraphLowering
    from torch._inductor.template_heuristics.triton import CUDAConfigHeuristic
    from torch._inductor.virtualized import V

    heuristic = CUDAConfigHeuristic()
    pixels = problem.batch * problem.height * problem.width
    graph = GraphLowering(torch.fx.symbolic_trace(torch.nn.Identity()))
    with V.set_graph_handler(graph):
        configs = list(
            heuristic.get_conv_configs()(
                pixels, problem.out_channels, problem.in_channels, dtype_size=dtype.itemsize
            )
        )
    capped = "min(cfg.num_warps, 4)" in inspect.getsource(_conv_module().convolution)
    unrolled = problem.kernel_h == problem.kernel_w == 1
    found = []
    for config in configs:
        warps = config.num_warps
        if pass_name == "fprop" and capped and not unrolled:
            warps = min(warps, 4)
        entry = (
            config.kwargs["BLOCK_M"],
            config.kwargs["BLOCK_N"],
            config.kwargs["BLOCK_K"],
            warps,
            config.num_stages,
        )
        if entry not in found:
            found.append(entry)
    return found


def render(
    pass_name: str, problem: ConvProblem, dtype: torch.dtype, block_m: int, block_n: int, block_k: int
):
    """(source, kernel name) of Inductor's template for `pass_name` on this layer, channels_last."""
    template_name, inputs, tensors = TEMPLATES[pass_name]
    template = getattr(_conv_module(), template_name).template
    shapes = _shapes(problem)
    output = {"fprop": "y", "dgrad": "dx", "wgrad": "dw"}[pass_name]
    named = dict(zip(inputs, tensors, strict=True))
    kernel_name = f"inductor_{pass_name}_{template_name}"
    constants = dict(
        KERNEL_H=problem.kernel_h, KERNEL_W=problem.kernel_w,
        STRIDE_H=problem.stride[0], STRIDE_W=problem.stride[1],
        PADDING_H=problem.pad_top, PADDING_W=problem.pad_left,
        GROUPS=problem.groups, ALLOW_TF32=dtype == torch.float32,
    )  # fmt: skip
    if pass_name == "fprop":
        constants["UNROLL"] = problem.kernel_h == problem.kernel_w == 1
    else:
        constants.update(DILATION_H=problem.dilation[0], DILATION_W=problem.dilation[1])
    constants.update(BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k)

    def tensor_of(name):
        return output if name is None else named[name]

    def size(name, index):
        return str(shapes[tensor_of(name)][index])

    def stride(name, index=None):
        return str(_channels_last_strides(shapes[tensor_of(name)])[index])

    def def_kernel(*names):
        lines = ["@triton.jit", f"def {kernel_name}({', '.join(f'arg_{n}' for n in names)}, out_ptr0):"]
        lines += [f"    {key} : tl.constexpr = {value}" for key, value in constants.items()]
        lines.append("    INDEX_DTYPE : tl.constexpr = tl.int32")
        lines += [f"    {n} = arg_{n}" for n in names]
        return "\n".join(lines)

    def store_output(indices, val, mask=None, val_shape=None, **_):
        out_strides = _channels_last_strides(shapes[output])
        offset = " + ".join(f"({index}) * {step}" for index, step in zip(indices, out_strides, strict=True))
        return f"tl.store(out_ptr0 + ({offset}), ({val}).to({_TL_TYPES[dtype]}), mask={mask})"

    body = template.render(
        def_kernel=def_kernel, size=size, stride=stride, store_output=store_output, **constants
    )
    source = "import triton\nimport triton.language as tl\n\n\n" + body + "\n"
    return source, kernel_name


def write_module(source: str, folder: str | None = None) -> tuple[str, str]:
    """Write a rendered template where compile_check's workers can import it: (module name, path)."""
    folder = folder or os.path.join(tempfile.gettempdir(), "triton_conv_inductor")
    os.makedirs(folder, exist_ok=True)
    name = "inductor_" + hashlib.sha256(source.encode()).hexdigest()[:16]
    path = os.path.join(folder, name + ".py")
    if not os.path.exists(path):
        with open(path + ".tmp", "w") as handle:
            handle.write(source)
        os.replace(path + ".tmp", path)
    return name, path
