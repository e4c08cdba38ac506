"""Per-step cost of normpen.torch's modes against the bare optimizer, AdamW and hand-written loops.

One process, 2 threads (``--threads``). Two models: an MLP of about 6.3M
parameters with LayerNorm (a few large tensors) and a small CNN (many small
tensors). Every variant times ``optimizer.step()`` alone (hooks included) on
fixed random gradients, so forward and backward, identical for all, do not
dilute the differences. Variants are interleaved round by round; the time
per step is the minimum over rounds (on a shared machine other load only
ever adds time) of the process's CPU time (waiting for a core does not count;
``--clock wall`` for wall time). The table gives ratios to plain
``Adam(foreach=True)`` and to ``AdamW(foreach=True)``, and for each
hand-written version its time over the normpen mode it replaces; these
machines are shared and noisy, so compare ratios, not absolute times. Not a
test: nothing here asserts a time.

Run: ``.venv/bin/python benchmarks/bench_torch_step.py [--rounds 30] [--steps 5] [--threads 2]``
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from rich.console import Console
from rich.progress import track
from rich.table import Table
from torch import nn

from normpen.penalties.group_lasso import GroupLasso
from normpen.penalties.l1 import L1
from normpen.penalties.l2 import L2
from normpen.penalties.max_norm import MaxNorm
from normpen.torch import Regularizer, Rule

LR, LAM = 1e-3, 1e-2


def mlp():
    return nn.Sequential(
        nn.Linear(512, 2048), nn.LayerNorm(2048), nn.ReLU(),
        nn.Linear(2048, 2048), nn.LayerNorm(2048), nn.ReLU(),
        nn.Linear(2048, 512), nn.LayerNorm(512), nn.ReLU(),
        nn.Linear(512, 10),
    )  # fmt: skip


def cnn():
    layers = []
    for cin, cout in [(3, 32), (32, 32), (32, 64), (64, 64), (64, 128), (128, 128)]:
        layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10))


def weights(model):
    """The tensors normpen's default selection takes: weights of Linear and Conv layers."""
    return [m.weight for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def adam(params):
    return torch.optim.Adam(params, lr=LR, foreach=True)


# ---- the variants: each builds (model copy) -> step function ---------------------------------------


def plain_adam(model):
    return adam(model.parameters()).step


def torch_adamw(model):
    decay = {id(p) for p in weights(model)}
    groups = [
        {"params": [p for p in model.parameters() if id(p) in decay], "weight_decay": LAM},
        {"params": [p for p in model.parameters() if id(p) not in decay], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=LR, foreach=True).step


def normpen(rule):
    def build(model):
        reg = Regularizer(model, rule())
        return reg.wrap(adam(model.parameters())).step

    return build


def normpen_in_loss(rule):
    """A coupled or lagrangian rule: its term's value and backward belong to the step's cost."""

    def build(model):
        reg = Regularizer(model, rule())
        opt = reg.wrap(adam(model.parameters()))

        def step():
            reg.penalty().backward()  # accumulates into the fixed gradients; harmless for timing
            opt.step()

        return step

    return build


def hand_l2_in_loss(model):
    opt = adam(model.parameters())
    params = weights(model)

    def step():
        (LAM / 2 * sum((p * p).sum() for p in params)).backward()
        opt.step()

    return step


def by_hand(before=None, after=None):
    """Adam with a Python loop over the weights before or after its step, as users write it."""

    def build(model):
        opt = adam(model.parameters())
        params = weights(model)

        def step():
            with torch.no_grad():
                for p in params if before else ():
                    before(p)
                opt.step()
                for p in params if after else ():
                    after(p)

        return step

    return build


def hand_decay(p):
    p.mul_(1 - LR * LAM)


def hand_soft_threshold(p):
    p.copy_(torch.sign(p) * torch.clamp(p.abs() - LR * LAM, min=0))


def hand_group_threshold(p):
    norms = p.reshape(p.shape[0], -1).norm(dim=1).reshape((-1,) + (1,) * (p.ndim - 1))
    weight = (p[0].numel()) ** 0.5
    p.mul_(torch.clamp(1 - LR * LAM * weight / norms.clamp_min(1e-30), min=0))


def hand_group_threshold_per_group(p):
    """The formula of seed 004 written group by group, as a first implementation reads."""
    threshold = LR * LAM * (p[0].numel()) ** 0.5
    for row in p:
        norm = row.norm()
        if norm <= threshold:
            row.zero_()
        else:
            row.mul_(1 - threshold / norm)


VARIANTS = {
    "Adam": plain_adam,
    "AdamW(weight_decay)": torch_adamw,
    "Adam + normpen coupled L2 (term + backward)": normpen_in_loss(lambda: Rule(L2(LAM), mode="coupled")),
    "Adam + hand-written L2 term (+ backward)": hand_l2_in_loss,
    "Adam + normpen decoupled L2": normpen(lambda: Rule(L2(LAM), mode="decoupled")),
    "Adam + hand-written decay loop": by_hand(before=hand_decay),
    "Adam + normpen proximal L1": normpen(lambda: Rule(L1(LAM), mode="proximal")),
    "Adam + hand-written soft-threshold loop": by_hand(after=hand_soft_threshold),
    "Adam + normpen proximal group lasso": normpen(lambda: Rule(GroupLasso(LAM, "rows"), mode="proximal")),
    "Adam + hand-written group-threshold loop": by_hand(after=hand_group_threshold),
    "Adam + hand-written per-group loop": by_hand(after=hand_group_threshold_per_group),
    "Adam + normpen constrained max-norm": normpen(
        lambda: Rule(MaxNorm(1.0), mode="constrained", radius=0.5)
    ),
    "Adam + normpen lagrangian L2 (term + backward)": normpen_in_loss(
        lambda: Rule(L2(1.0), mode="lagrangian", budget=10.0, dual_lr=1e-3)
    ),
}


CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}


def measure(make_model, rounds, steps, clock):
    """Best-of-rounds ms per optimizer step of every variant, interleaved round by round."""
    torch.manual_seed(0)
    base = make_model()
    grads = [torch.randn_like(p) * 1e-2 for p in base.parameters()]
    runs = {}
    for name, build in VARIANTS.items():
        model = copy.deepcopy(base)  # a deep copy does not carry .grad: give each copy the same gradients
        for p, g in zip(model.parameters(), grads, strict=True):
            p.grad = g.clone()
        step = build(model)
        step()  # warm up: optimizer state, buckets, first-step checks
        runs[name] = (step, [])
    for _ in track(range(rounds), description=f"{make_model.__name__}", transient=True):
        for step, times in runs.values():
            start = clock()
            for _ in range(steps):
                step()
            times.append((clock() - start) / steps * 1e3)
    return {name: min(times) for name, (_, times) in runs.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    console = Console()
    for make_model in (mlp, cnn):
        count = sum(p.numel() for p in make_model().parameters())
        ms = measure(make_model, args.rounds, args.steps, CLOCKS[args.clock])
        title = f"{make_model.__name__}: {count / 1e6:.2f}M parameters, {args.clock} ms per optimizer step"
        table = Table(title=title)
        for column in ("variant", "ms/step", "vs Adam", "vs AdamW", "vs normpen"):
            table.add_column(column, justify="left" if column == "variant" else "right")
        ours = None
        for name, value in ms.items():
            ours = value if "normpen" in name else ours if "hand" in name else None
            versus = f"{value / ours:.2f}x" if "hand" in name else ""
            table.add_row(name, f"{value:.2f}", f"{value / ms['Adam']:.3f}",
                          f"{value / ms['AdamW(weight_decay)']:.3f}", versus)  # fmt: skip
        console.print(table)


if __name__ == "__main__":
    main()
