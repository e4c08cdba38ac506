"""Shared pieces of the normpen.torch tests: the optimizer registry, small models, hand-written references.

:data:`OPTIMIZERS` is the registry every mode test runs over (as torch.optim's
own tests do): a name and a factory ``params -> optimizer``, with the
optimizer's own weight decay off so that the regularizer is the only one.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import os
import socket
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

OPTIMIZERS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.05),
    "sgd_momentum": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
    "sgd_nesterov": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, dampening=0),
    "adam": lambda p: torch.optim.Adam(p, lr=1e-2),
    "adam_amsgrad": lambda p: torch.optim.Adam(p, lr=1e-2, amsgrad=True),
    "adam_foreach": lambda p: torch.optim.Adam(p, lr=1e-2, foreach=True),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.0),
    "nadam": lambda p: torch.optim.NAdam(p, lr=1e-2),
    "radam": lambda p: torch.optim.RAdam(p, lr=1e-2),
    "adamax": lambda p: torch.optim.Adamax(p, lr=1e-2),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=1e-3),
    "rmsprop_centered": lambda p: torch.optim.RMSprop(p, lr=1e-3, centered=True, momentum=0.5),
    "adagrad": lambda p: torch.optim.Adagrad(p, lr=5e-2),
    "adadelta": lambda p: torch.optim.Adadelta(p, lr=1.0),
    "rprop": lambda p: torch.optim.Rprop(p, lr=1e-3),
    "asgd": lambda p: torch.optim.ASGD(p, lr=1e-2),
}


class ConvNet(nn.Module):
    """A conv layer (4-D kernel), a Linear with LayerNorm, a head: weights, biases and norm parameters."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3)
        self.fc = nn.Linear(27, 6)
        self.norm = nn.LayerNorm(6)
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        h = torch.relu(self.conv(x)).flatten(1)
        return self.head(torch.relu(self.norm(self.fc(h))))


def conv_net(seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    return ConvNet().to(dtype)


def conv_batches(steps, seed=1, dtype=torch.float64, n=8):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(n, 2, 5, 5, generator=g, dtype=dtype), torch.randn(n, 2, generator=g, dtype=dtype))
        for _ in range(steps)
    ]


def mse_step(model, optimizer, batch, extra=None):
    """One step of mean squared error; ``extra()`` (e.g. ``reg.penalty``) is added to the loss."""
    x, y = batch
    optimizer.zero_grad()
    loss = ((model(x) - y) ** 2).mean()
    if extra is not None:
        loss = loss + extra()
    loss.backward()
    optimizer.step()


def twin(model):
    """An independent copy of ``model`` (same values, separate tensors)."""
    return copy.deepcopy(model)


def named(model, names):
    params = dict(model.named_parameters())
    return [params[n] for n in names]


def assert_same(a, b, exact=False, rtol=1e-10, atol=1e-12):
    """Parameters of two models agree (bit for bit with ``exact``)."""
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        if exact:
            assert torch.equal(p, q), name
        else:
            torch.testing.assert_close(p, q, rtol=rtol, atol=atol, msg=name)


@contextlib.contextmanager
def gloo_group(rank, port, world, timeout_s):
    """Inside a worker of :func:`run_on_ranks`: join the ``world``-process gloo group on loopback ``port``
    as ``rank``, with one torch thread per process (the two cores are shared), and leave it on exit.

    When the body ends without an error the process exits at once (``os._exit(0)``) after leaving the
    group: about one gloo worker exit in ten aborts in the interpreter's teardown ("terminate called
    without an active exception", SIGABRT, seen after DDP and DCP runs) although the group was destroyed
    and the results were written. An error in the body still raises and reaches :func:`run_on_ranks`."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=timeout_s)
    )
    try:
        yield
    finally:
        dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_on_ranks(worker, out_dir, world, timeout_s):
    """Run ``worker(rank, port, out_dir)`` in ``world`` spawned processes on a free loopback port and return
    what each rank saved as ``out_dir/rank{r}.pt``; fails when they have not finished after ``timeout_s``.

    The port is free when probed but may be taken by another process before rank 0 binds it (the
    probe must close first); a start that fails on exactly that ("address already in use") is retried
    once on a fresh port. Every other failure is raised as it is."""
    try:
        _run_once(worker, out_dir, world, timeout_s)
    except mp.ProcessRaisedException as error:
        if "address already in use" not in str(error).lower():
            raise
        _run_once(worker, out_dir, world, timeout_s)
    return [torch.load(Path(out_dir) / f"rank{r}.pt", weights_only=True) for r in range(world)]


def _run_once(worker, out_dir, world, timeout_s):
    """One start of ``world`` workers on a port that was free when probed (see :func:`run_on_ranks`)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    context = mp.spawn(worker, args=(port, str(out_dir)), nprocs=world, join=False)
    deadline = time.monotonic() + timeout_s
    try:
        while not context.join(timeout=1):
            assert time.monotonic() < deadline, f"the {world} workers did not finish in {timeout_s} s"
    finally:
        for process in context.processes:
            if process.is_alive():
                process.terminate()
