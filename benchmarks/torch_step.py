"""Per-step cost of normpen.torch's modes against the bare optimizer, AdamW and hand-written code.

One process, 2 threads (``--threads``; ``OMP_WAIT_POLICY=PASSIVE`` unless
set: on a loaded machine threads spinning while they wait for a busy core
otherwise count as CPU time). Three models: an MLP of about 6.3M
parameters with LayerNorm (a few large tensors), a small CNN (many small
tensors) and two transformer encoder blocks (attention's fused
``in_proj_weight``, its output projection, the MLP, LayerNorms). Every
variant times ``optimizer.step()`` alone (hooks included) on fixed random
gradients, so forward and backward, identical for all, do not
dilute the differences. Variants are interleaved: ``--rounds`` rounds, in
each every variant runs ``--steps`` steps, the order rotated by one variant
per round (no variant always runs after the same one). The time of a step
is the process's CPU time (waiting for a core does not count; ``--clock
wall`` for wall time). ``ms/step`` is the median over all steps
(``--statistic min`` for the fastest). The ratios are paired: per round, the
variant's median step over Adam's (or AdamW's) median step of the same
round, so a load change between rounds moves both; the table gives the
median of these per-round ratios and their spread, the quartiles
``[q1, q3]`` over the rounds. ``--variants`` keeps the variants whose name
contains one of the given strings (Adam and AdamW always run).

The peers: torch's ``AdamW(foreach=True)``, and for every normpen mode the
code a user writes by hand on top of ``Adam(foreach=True)``, indented under
it: the per-tensor Python loop with ordinary torch ops (``hand: per-tensor``),
the group lasso's per-group loop, and the fastest hand-vectorised version
written here (``(fastest)``: multi-tensor ops and preallocated buffers, i.e.
normpen's own algorithm written out). The table gives ratios to ``Adam`` and
``AdamW``, the cost added to Adam, and each hand-written version's time and
added cost over the normpen mode it replaces. Decoupled L2 runs three times: as
built by default on one param group (``atomic_decay=True``: the decay first
copies the weights it overwrites, to undo it if the step then fails), with
``atomic_decay=False`` (the decay alone, AdamW's own operation), and on the
weights / rest param groups AdamW has here (as transformers' Trainer builds
them), where the weights' group is handed to Adam's own decoupled decay
(AdamW's code). These
machines are shared and noisy: compare ratios, not absolute times. Not a
test: nothing here asserts a time.

``--fsdp`` also times the step under FSDP2 (``fully_shard``, two gloo
processes of one thread each; each rank updates half the rows, the column
group norms are all-reduced).

Run: ``.venv/bin/python benchmarks/torch_step.py [--rounds 40] [--steps 5] [--threads 2]
[--models mlp cnn transformer] [--statistic median|min] [--variants "group lasso"] [--fsdp]``
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read by OpenMP when torch loads it

import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.markup import escape  # noqa: E402
from rich.progress import track  # noqa: E402
from rich.table import Table  # noqa: E402
from torch import nn  # noqa: E402

from normpen.penalties.group_lasso import GroupLasso  # noqa: E402
from normpen.penalties.l1 import L1  # noqa: E402
from normpen.penalties.l2 import L2  # noqa: E402
from normpen.penalties.max_norm import MaxNorm  # noqa: E402
from normpen.torch import Regularizer, Rule  # noqa: E402

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


def transformer():
    """Two pre-norm transformer encoder blocks (width 512, 8 heads, MLP 2048), as torch builds them."""
    block = nn.TransformerEncoderLayer(512, 8, 2048, batch_first=True, norm_first=True)
    return nn.TransformerEncoder(block, num_layers=2, enable_nested_tensor=False)


def weights(model):
    """The tensors normpen's default selection takes here: every tensor with 2 or more dimensions
    (Linear and Conv weights, attention's in_proj_weight; these models have no other such tensor)."""
    return [p for p in model.parameters() if p.ndim >= 2]


def adam(params):
    return torch.optim.Adam(params, lr=LR, foreach=True)


# ---- the variants: each builds (model copy) -> step function ---------------------------------------


def plain_adam(model):
    return adam(model.parameters()).step


def decay_groups(model):
    """The param groups transformers' Trainer and timm build: the weights, then the rest."""
    decay = {id(p) for p in weights(model)}
    return [
        {"params": [p for p in model.parameters() if id(p) in decay]},
        {"params": [p for p in model.parameters() if id(p) not in decay]},
    ]


def torch_adamw(model):
    decayed, rest = decay_groups(model)
    groups = [{**decayed, "weight_decay": LAM}, {**rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=LR, foreach=True).step


def normpen(rule, grouped=False, **options):
    """Adam wrapped by a regularizer of the one rule ``rule()`` (``options`` go to ``Regularizer``), on
    one param group, or on :func:`decay_groups` with ``grouped``."""

    def build(model):
        reg = Regularizer(model, rule(), **options)
        return reg.wrap(adam(decay_groups(model) if grouped else model.parameters())).step

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


def by_hand(after=None, before=None):
    """Adam with hand-written code run on the weights before or after its step.

    ``after``/``before`` is a factory ``weights -> update()``, built once
    (what a user precomputes), called on every step under ``no_grad``.
    """

    def build(model):
        opt = adam(model.parameters())
        params = weights(model)
        pre = before(params) if before else None
        post = after(params) if after else None

        def step():
            with torch.no_grad():
                if pre:
                    pre()
                opt.step()
                if post:
                    post()

        return step

    return build


def per_tensor(update):
    """A Python loop over the weight tensors, ``update(p)`` on each: the code a user writes first."""
    return lambda params: lambda: [update(p) for p in params]


def decay(p):
    p.mul_(1 - LR * LAM)


def decay_foreach(params):
    """Fastest by hand: one multi-tensor multiply (what AdamW runs)."""
    return lambda: torch._foreach_mul_(params, 1 - LR * LAM)


def soft_threshold(p):
    """The textbook formula sign(x) max(|x| - t, 0)."""
    p.copy_(torch.sign(p) * torch.clamp(p.abs() - LR * LAM, min=0))


def softshrink_in_place(params):
    """Fastest by hand: ``softshrink`` written into each tensor (one read, one write per entry)."""

    def update():
        for p in params:
            torch._C._nn.softshrink(p, LR * LAM, out=p)

    return update


def group_weight(p):
    """sqrt(|g|): the size of one row group (an output unit or filter)."""
    return p[0].numel() ** 0.5


def group_threshold(p):
    """Row-group soft threshold of one tensor, vectorised over its rows: x_g max(1 - t w_g/||x_g||, 0)."""
    norms = p.reshape(p.shape[0], -1).norm(dim=1).reshape((-1,) + (1,) * (p.ndim - 1))
    p.mul_(torch.clamp(1 - LR * LAM * group_weight(p) / norms.clamp_min(1e-30), min=0))


def group_threshold_per_group(p):
    """The formula written group by group, as a first implementation reads."""
    threshold = LR * LAM * group_weight(p)
    for row in p:
        norm = row.norm()
        if norm <= threshold:
            row.zero_()
        else:
            row.mul_(1 - threshold / norm)


def group_threshold_fused(params):
    """Fastest by hand in torch operations: every row norm into one preallocated vector, the factors in
    four ops on it, one multi-tensor multiply (normpen's algorithm before its compiled one-pass row
    kernel, written out; it still serves GPU tensors)."""
    counts = [p.shape[0] for p in params]
    shapes = [(c,) + (1,) * (p.ndim - 1) for c, p in zip(counts, params, strict=True)]
    norms = torch.empty(sum(counts))
    factors, denominators = torch.empty_like(norms), torch.empty_like(norms)
    weights_per_row = [torch.full((c,), group_weight(p)) for c, p in zip(counts, params, strict=True)]
    thresholds = LR * LAM * torch.cat(weights_per_row)
    norm_views = [v.view(s) for v, s in zip(norms.split(counts), shapes, strict=True)]
    factor_views = [v.view(s) for v, s in zip(factors.split(counts), shapes, strict=True)]
    dims = [tuple(range(1, p.ndim)) for p in params]

    def update():
        for p, d, out in zip(params, dims, norm_views, strict=True):
            torch.linalg.vector_norm(p, dim=d, keepdim=True, out=out)
        torch.sub(norms, thresholds, out=factors).clamp_min_(0)
        factors.div_(torch.clamp_min(norms, 1e-30, out=denominators))
        torch._foreach_mul_(params, factor_views)

    return update


#: name -> (builder, the normpen variant a hand-written one replaces, or None)
L2_, L1_, GL_ = "normpen decoupled L2", "normpen proximal L1", "normpen proximal group lasso"
L2N_ = "normpen decoupled L2 (atomic_decay=False)"
L2G_ = "normpen decoupled L2 (decay / no-decay groups)"
GLC_ = "normpen proximal group lasso (cols)"
COUPLED = "normpen coupled L2 (term + backward)"
VARIANTS = {
    "Adam": (plain_adam, None),
    "AdamW(weight_decay)": (torch_adamw, None),
    L2_: (normpen(lambda: Rule(L2(LAM), mode="decoupled")), None),
    "  hand: per-tensor decay loop": (by_hand(before=per_tensor(decay)), L2_),
    "  hand: foreach decay (fastest)": (by_hand(before=decay_foreach), L2_),
    L2N_: (normpen(lambda: Rule(L2(LAM), mode="decoupled"), atomic_decay=False), None),
    L2G_: (normpen(lambda: Rule(L2(LAM), mode="decoupled"), grouped=True), None),
    L1_: (normpen(lambda: Rule(L1(LAM), mode="proximal")), None),
    "  hand: per-tensor sign(x)max(|x|-t,0)": (by_hand(after=per_tensor(soft_threshold)), L1_),
    "  hand: softshrink in place (fastest)": (by_hand(after=softshrink_in_place), L1_),
    GL_: (normpen(lambda: Rule(GroupLasso(LAM, "rows"), mode="proximal")), None),
    "  hand: per-tensor group threshold": (by_hand(after=per_tensor(group_threshold)), GL_),
    "  hand: per-group loop": (by_hand(after=per_tensor(group_threshold_per_group)), GL_),
    "  hand: fused foreach (fastest)": (by_hand(after=group_threshold_fused), GL_),
    GLC_: (normpen(lambda: Rule(GroupLasso(LAM, "cols"), mode="proximal")), None),
    "normpen constrained max-norm": (
        normpen(lambda: Rule(MaxNorm(1.0), mode="constrained", radius=0.5)),
        None,
    ),
    COUPLED: (normpen_in_loss(lambda: Rule(L2(LAM), mode="coupled")), None),
    "  hand: L2 term (+ backward)": (hand_l2_in_loss, COUPLED),
    "normpen lagrangian L2 (term + backward)": (
        normpen_in_loss(lambda: Rule(L2(1.0), mode="lagrangian", budget=10.0, dual_lr=1e-3)),
        None,
    ),
}


CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}
STATISTICS = {"min": min, "median": statistics.median}


def chosen(names, wanted):
    """The variants of ``names`` that contain one of the ``wanted`` strings, and the two peers."""
    return [n for n in names if n in ("Adam", "AdamW(weight_decay)") or any(w in n for w in wanted)]


def interleaved(steps_of, rounds, steps, clock, progress=range):
    """The times (ms) of every single step of the step functions ``steps_of`` (name -> step), per round.

    Every round runs each function ``steps`` times, the order rotated by one
    per round. Returns name -> one list of ``steps`` times per round.
    """
    names = list(steps_of)
    times = {name: [] for name in names}
    for r in progress(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            step, own = steps_of[name], []
            for _ in range(steps):
                start = clock()
                step()
                own.append((clock() - start) * 1e3)
            times[name].append(own)
    return times


def measure(make_model, rounds, steps, clock, names):
    """The step times (ms) of the variants ``names`` on copies of one model, per round (``interleaved``)."""
    torch.manual_seed(0)
    base = make_model()
    grads = [torch.randn_like(p) * 1e-2 for p in base.parameters()]
    steps_of = {}
    for name in names:
        build = VARIANTS[name][0]
        model = copy.deepcopy(base)  # a deep copy does not carry .grad: give each copy the same gradients
        for p, g in zip(model.parameters(), grads, strict=True):
            p.grad = g.clone()
        steps_of[name] = build(model)
        steps_of[name]()  # warm up: optimizer state, buckets, first-step checks

    def progress(n):
        return track(range(n), description=f"{make_model.__name__}", transient=True)

    return interleaved(steps_of, rounds, steps, clock, progress)


def summarise(times, statistic):
    """Per variant: its time (``statistic`` over all steps, ms) and its paired ratios to Adam and AdamW.

    A ratio is per round the variant's median step over the peer's median
    step of the same round; returned as ``(median, q1, q3)`` over the rounds.
    """
    per_round = {name: [statistics.median(r) for r in rounds] for name, rounds in times.items()}

    def ratios(name, peer):
        values = [a / b for a, b in zip(per_round[name], per_round[peer], strict=True)]
        q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
        return median, q1, q3

    return {
        name: (
            STATISTICS[statistic]([t for r in rounds for t in r]),
            ratios(name, "Adam"),
            ratios(name, "AdamW(weight_decay)"),
        )
        for name, rounds in times.items()
    }


#: What ``--fsdp`` times on the sharded model: the peers and the modes FSDP2 runs.
FSDP_VARIANTS = (
    "Adam",
    "AdamW(weight_decay)",
    L2_,
    L2N_,
    L2G_,
    L1_,
    GL_,
    GLC_,
    "normpen constrained max-norm",
)


def _fsdp_worker(rank, world, port, make_model, rounds, steps, clock, names, out):
    """One rank: every variant on its own fully_shard-ed copy, fixed gradients, step times per round."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    mesh = init_device_mesh("cpu", (world,))
    steps_of = {}
    for name in names:
        torch.manual_seed(0)
        model = make_model()
        for module in [*model.modules()][::-1]:
            if any(p.requires_grad for p in module.parameters(recurse=False)) or module is model:
                fully_shard(module, mesh=mesh)
        torch.manual_seed(1)
        for p in model.parameters():
            p.grad = torch.randn_like(p) * 1e-2
        steps_of[name] = VARIANTS[name][0](model)
        steps_of[name]()
    times = interleaved(steps_of, rounds, steps, CLOCKS[clock])
    if rank == 0:
        torch.save(times, out)
    dist.destroy_process_group()


def measure_fsdp(make_model, rounds, steps, clock, names, world=2):
    """Rank 0's step times (ms, per round) of the variants ``names`` under FSDP2 (gloo, ``world`` ranks)."""
    import socket
    import tempfile

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as folder:
        out = f"{folder}/ms.pt"
        mp.spawn(_fsdp_worker, args=(world, port, make_model, rounds, steps, clock, names, out), nprocs=world)
        return torch.load(out, weights_only=True)


def two_pass_floor(adamw_ratio):
    """What two passes over the weights cost, each as dear as AdamW's decay (one ``_foreach_mul_``),
    from AdamW's ratio to Adam.

    A group soft threshold in torch operations takes two: every group's norm
    is complete before any of its entries is rescaled (a block-fused version
    in torch operations, norms and rescale per cache-sized block of rows,
    measured no faster: its per-block operations cost what the cache saves).
    normpen's compiled kernel for row groups of CPU tensors takes one pass
    (each row rescaled while it is in the L1 cache), so it measures under
    this; column groups still take two (every row is read before any
    column's norm is known).
    """
    return f"two passes over the weights (2 x AdamW's decay): {1 + 2 * (adamw_ratio - 1):.3f} x Adam"


def spread(ratio):
    """A paired ratio ``(median, q1, q3)`` as text."""
    median, q1, q3 = ratio
    return f"{median:.3f} [{q1:.3f}, {q3:.3f}]"


def table(title, summary):
    """The rows of one model: time, ratios to Adam and AdamW, and each hand-written version against normpen.

    ``added`` is the cost over plain Adam, and for a hand-written version the
    ratio of its added cost to the normpen mode's (n/a when normpen's is
    within the noise, at or below 0).
    """
    adam_ms = summary["Adam"][0]
    out = Table(title=escape(title), caption=two_pass_floor(summary["AdamW(weight_decay)"][1][0]))
    columns = ("variant", "ms/step", "vs Adam [q1, q3]", "vs AdamW [q1, q3]", "added ms", "hand/normpen",
               "added: hand/normpen")  # fmt: skip
    for column in columns:
        out.add_column(escape(column), justify="left" if column == "variant" else "right")
    for name, (value, to_adam, to_adamw) in summary.items():
        replaces = VARIANTS[name][1]
        total = added = ""
        if replaces in summary:
            ours = summary[replaces][0]
            total = f"{value / ours:.2f}x"
            added = f"{(value - adam_ms) / (ours - adam_ms):.2f}x" if ours > adam_ms else "n/a"
        out.add_row(name, f"{value:.2f}", spread(to_adam), spread(to_adamw), f"{value - adam_ms:+.2f}", total,
                    added)  # fmt: skip
    return out


MODELS = {"mlp": mlp, "cnn": cnn, "transformer": transformer}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu")
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS))
    parser.add_argument("--statistic", choices=sorted(STATISTICS), default="median")
    parser.add_argument("--variants", nargs="+", default=[""], help="keep the variants that contain one")
    parser.add_argument("--fsdp", action="store_true", help="also time the models under FSDP2, 2 processes")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    console = Console(width=160)
    which = "fastest" if args.statistic == "min" else "median"
    for name in args.models:
        make_model = MODELS[name]
        count = sum(p.numel() for p in make_model().parameters())
        names = chosen(VARIANTS, args.variants)
        times = measure(make_model, args.rounds, args.steps, CLOCKS[args.clock], names)
        setting = (
            f"{args.clock} ms per optimizer step ({which}), OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, "
            f"{args.rounds} rounds x {args.steps} steps, ratios: median [q1, q3] of per-round ratios"
        )
        title = f"{name}: {count / 1e6:.2f}M parameters, {args.threads} thread(s), {setting}"
        console.print(table(title, summarise(times, args.statistic)))
        if args.fsdp:
            names = chosen(FSDP_VARIANTS, args.variants)
            times = measure_fsdp(make_model, args.rounds, args.steps, args.clock, names)
            title = f"{name} under FSDP2, 2 gloo processes of 1 thread, rank 0: {setting}"
            console.print(table(title, summarise(times, args.statistic)))


if __name__ == "__main__":
    main()
