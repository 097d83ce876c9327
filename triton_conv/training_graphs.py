"""The training check's step replayed from a CUDA graph (`training_check --cuda-graph`): the same
model, data, SGD and autocast as training_check.train, with the whole step (forward, backward,
optimizer) captured once and replayed, so that no Python runs per convolution.

Why: the H200 campaign of 2026-12-04 measured triton-conv's host time per pass at 97-166 µs against
cuDNN's 13-27 µs (notes/batching.md, "Host time per call"), more than the pass's device time in
nearly every ResNet-50 layer up to N=128, and the eager step at 0.29 of torch's speed. A replayed
graph issues the same kernels without the host: the two runs' step times then compare the kernels
(and torch's own non-convolution kernels, alike in both), which is the comparison a user who
captures the step (torch.cuda.graphs, or torch.compile's mode="reduce-overhead") gets.

The capture follows torch's documented whole-network pattern: warm-up steps on a side stream (the
optimizer's momentum buffers and every pass's tuned config exist before the capture: triton-conv
times nothing while a stream captures), the gradients set to None so that backward allocates them
from the graph's pool, autocast without its cast cache (a cached cast made outside the graph would
be read from memory the graph does not own), then one captured step. Each timed step copies its
batch into the graph's static input and replays.
"""

from __future__ import annotations

import time

import torch

from .training_summary import run_summary, training_step

GRAPH_WARMUP = 3  # eager steps on a side stream before the capture, at least (torch's example)


def train_graphed(net, data, args, device: torch.device, dtype: torch.dtype | None) -> dict:
    """args.steps SGD steps on the fixed batches in turn, as training_check.train, of which the
    first max(args.warmup, GRAPH_WARMUP) run eagerly on a side stream and the rest replay one
    captured step; the median step time is the replays'. `dtype`: autocast's (None: none, fp32).
    Same keys as train's result, with `eager_steps` and `capture_seconds` added."""
    from .launchers.common import launch_counts

    if device.type != "cuda":
        raise ValueError(f"--cuda-graph needs a CUDA device, got {device}")
    eager_steps = max(args.warmup, GRAPH_WARMUP)
    if args.steps <= eager_steps:
        raise ValueError(
            f"--cuda-graph needs --steps above the {eager_steps} eager warm-up steps, got {args.steps}"
        )
    optimizer = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=0.9)
    net.train()
    static_x = torch.empty_like(data[0][0])
    static_y = torch.empty_like(data[0][1])

    def step():
        return training_step(net, optimizer, static_x, static_y, dtype, cache_enabled=False)

    torch.cuda.empty_cache()
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    launched_before = dict(launch_counts)
    losses, seconds = [], []
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for index in range(eager_steps):
            x, y = data[index % len(data)]
            torch.cuda.synchronize(device)
            start = time.perf_counter()
            static_x.copy_(x)
            static_y.copy_(y)
            optimizer.zero_grad(set_to_none=True)
            loss = step()
            torch.cuda.synchronize(device)
            seconds.append(time.perf_counter() - start)
            losses.append(loss.item())
    torch.cuda.current_stream(device).wait_stream(side)

    graph = torch.cuda.CUDAGraph()
    optimizer.zero_grad(set_to_none=True)
    start = time.perf_counter()
    # On the warm-up's stream: libraries (cuBLAS for the classifier) keep workspaces per stream,
    # and the warm-up made them there.
    with torch.cuda.graph(graph, stream=side):
        static_loss = step()
    torch.cuda.synchronize(device)
    capture_seconds = time.perf_counter() - start

    for index in range(eager_steps, args.steps):
        x, y = data[index % len(data)]
        torch.cuda.synchronize(device)
        start = time.perf_counter()
        static_x.copy_(x)
        static_y.copy_(y)
        graph.replay()
        torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - start)
        losses.append(static_loss.item())
    peak = torch.cuda.max_memory_allocated(device)
    result = run_summary(losses, seconds, seconds[eager_steps:], args.batch, peak, before, launched_before)
    return {**result, "eager_steps": eager_steps, "capture_seconds": capture_seconds}
