"""A converted model trains under DistributedDataParallel (gloo, two CPU processes, interpreter)."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

# gloo on two CPU processes, each running the kernels through the interpreter.
pytestmark = pytest.mark.interpreter


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 4, 3, stride=2, groups=2))


def _worker(rank, world, port, inputs, queue):
    os.environ["TRITON_INTERPRET"] = "1"
    import triton_conv
    from triton_conv.launchers.common import launch_counts

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    model = nn.parallel.DistributedDataParallel(triton_conv.convert_model(_model().double()))
    model(inputs[rank]).square().sum().backward()
    # numpy arrays travel by value: a tensor would travel as shared memory that dies with this process.
    grads = [p.grad.numpy().copy() for p in model.parameters()]
    queue.put((rank, grads, launch_counts["wgrad_kernel"]))
    # The result reaches the parent before any teardown, and the model (which holds the process
    # group) goes before the group does: once, a rank's exit hung with the group's destructor
    # joining gloo's threads under the GIL at interpreter exit, its result still in the queue.
    queue.close()
    queue.join_thread()
    del model
    dist.destroy_process_group()


def test_ddp_gradients_match_torch():
    inputs = torch.randn(2, 2, 3, 9, 8, dtype=torch.float64)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    context = mp.get_context("spawn")
    queue = context.Queue()
    processes = [context.Process(target=_worker, args=(r, 2, port, inputs, queue)) for r in range(2)]
    for process in processes:
        process.start()
    results = dict(
        (rank, (grads, launches)) for rank, grads, launches in (queue.get(timeout=300) for _ in range(2))
    )
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    # DDP averages gradients over ranks: the same as torch's model on the whole batch, halved.
    reference = _model().double()
    reference(inputs.flatten(0, 1)).square().sum().div(2).backward()
    for rank in range(2):
        grads, launches = results[rank]
        assert launches == 2, "each rank ran the Triton weight-gradient kernel per convolution"
        for got, ref in zip(grads, reference.parameters()):
            assert torch.allclose(torch.from_numpy(got), ref.grad, rtol=1e-10, atol=1e-12)
