"""torch.fx tracing that keeps triton-conv's modules as modules.

torch.fx's default tracer keeps only torch.nn's own modules as graph nodes (leaves) and traces
through every other module, ours included: a converted model's graph calls triton_conv.conv2d and
its kin directly. What a module does around its forward then happens once, at trace time: a forward
hook's effect is baked into the graph (or lost), and a pre-hook that assigns the weight (prune, the
legacy weight_norm) leaves an fx Proxy in the module until its next call. torch's modules, as
leaves, keep their hooks running on every call of the graph. `symbolic_trace` here traces as torch's
does for its own modules: Conv1d, Conv2d and ConvTranspose2d of this package are leaves too.
"""

from __future__ import annotations

import torch

from .nn import Conv1d, Conv2d, ConvTranspose2d

MODULES = (Conv1d, Conv2d, ConvTranspose2d)


class Tracer(torch.fx.Tracer):
    """torch.fx.Tracer for which triton-conv's modules are leaves, as torch.nn's are."""

    def is_leaf_module(self, module: torch.nn.Module, module_qualified_name: str) -> bool:
        return isinstance(module, MODULES) or super().is_leaf_module(module, module_qualified_name)


def symbolic_trace(root: torch.nn.Module, concrete_args: dict | None = None) -> torch.fx.GraphModule:
    """torch.fx.symbolic_trace with triton-conv's modules kept as call_module nodes (Tracer)."""
    tracer = Tracer()
    graph = tracer.trace(root, concrete_args)
    name = root.__class__.__name__ if isinstance(root, torch.nn.Module) else root.__name__
    return torch.fx.GraphModule(tracer.root, graph, name)
