"""normpen.torch inside the frameworks: PyTorch Lightning and transformers' Trainer (tiny local models).

Lightning's automatic optimization passes a closure to ``optimizer.step``;
its checkpoints hold the optimizer's state dict, and so the regularizer's;
``precision="bf16-true"`` casts the model after the regularizer is built.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch.utils.data import DataLoader
from torch_cases import assert_same, conv_batches, conv_net

from normpen.penalties.group_lasso import GroupLasso
from normpen.penalties.l2 import L2
from normpen.penalties.nuclear import Nuclear
from normpen.torch import Regularizer, Rule

lightning = pytest.importorskip("lightning")


class Module(lightning.LightningModule):
    """conv_net trained on mean squared error; ``rules`` None means a plain AdamW."""

    def __init__(self, rules=None, seed=0, dtype=torch.float32):
        super().__init__()
        self.net = conv_net(seed, dtype)
        self.regularizer = None if rules is None else Regularizer(self.net, rules())

    def training_step(self, batch, index):
        x, y = batch
        loss = ((self.net(x) - y) ** 2).mean()
        return loss if self.regularizer is None else loss + self.regularizer.penalty()

    def configure_optimizers(self):
        if self.regularizer is None:
            return torch.optim.AdamW(self.parameters(), lr=1e-2, weight_decay=0.1)
        return self.regularizer.wrap(torch.optim.Adam(self.parameters(), lr=1e-2))


def _fit(module, batches, ckpt_path=None, **options):
    trainer = lightning.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **options,
    )
    trainer.fit(module, DataLoader(batches, batch_size=None), ckpt_path=ckpt_path)
    return trainer


def _decoupled():
    return [Rule(L2(0.1), mode="decoupled", candidates="all")]


@pytest.mark.parametrize(("accumulate", "precision"), [(1, "32-true"), (2, "32-true"), (1, "bf16-mixed")])
def test_lightning_with_decoupled_l2_on_adam_is_adamw_bit_for_bit(accumulate, precision):
    batches = conv_batches(12 * accumulate, dtype=torch.float32)
    regularized, plain = Module(_decoupled), Module()
    for module in (regularized, plain):
        _fit(module, batches, max_steps=12, accumulate_grad_batches=accumulate, precision=precision)
    # AdamW's decay p *= 1 - lr * wd and the kernel's _foreach_mul_ are the same correctly rounded multiply
    # by the same double, then the same Adam update: bit equal in float32 and bf16
    assert_same(regularized.net, plain.net, exact=True)


def _constrained():
    return [
        Rule(L2(0.05), mode="decoupled"),
        Rule(L2(1.0), mode="lagrangian", budget=0.05, dual_lr=0.5, select="fc.weight"),
    ]


def test_a_lightning_checkpoint_resumes_the_regularizer_bit_identical(tmp_path):
    batches = conv_batches(3, dtype=torch.float32)  # epochs: a max_steps stop is resumed as mid-epoch
    straight = Module(_constrained)
    _fit(straight, batches, max_epochs=2)

    first = Module(_constrained)
    trainer = _fit(first, batches, max_epochs=1)
    trainer.save_checkpoint(tmp_path / "half.ckpt")
    resumed = Module(_constrained, seed=5)  # the multiplier starts at 0 until the checkpoint loads
    _fit(resumed, batches, max_epochs=2, ckpt_path=tmp_path / "half.ckpt")

    assert_same(resumed.net, straight.net, exact=True)  # the same operations in the same order
    multiplier = straight.regularizer.rules[1].multiplier
    assert multiplier.item() > 0 and torch.equal(resumed.regularizer.rules[1].multiplier, multiplier)


def test_bf16_true_casts_after_building_and_the_decay_follows():
    batches = conv_batches(4, dtype=torch.float32)
    cast_by_lightning = Module(lambda: [Rule(L2(3.0), mode="decoupled")])
    built_on_bf16 = Module(seed=0)
    built_on_bf16.net.to(torch.bfloat16)
    built_on_bf16.regularizer = Regularizer(built_on_bf16.net, Rule(L2(3.0), mode="decoupled"))
    for module in (cast_by_lightning, built_on_bf16):
        _fit(module, batches, max_steps=4, precision="bf16-true")
    assert cast_by_lightning.net.fc.weight.dtype == torch.bfloat16
    assert_same(cast_by_lightning.net, built_on_bf16.net, exact=True)  # same bf16 tensors, same operations
    assert set(cast_by_lightning.regularizer.state_dict()["residuals"]) == {
        "conv.weight",
        "fc.weight",
        "head.weight",
    }


# ---- transformers: selection by structure and the Trainer -------------------------------------------

transformers = pytest.importorskip("transformers")


def _hf_models():
    """Tiny random models built from configs (nothing downloaded), one per architecture family."""
    torch.manual_seed(0)
    t = transformers
    small = {"num_attention_heads": 2, "vocab_size": 97, "max_position_embeddings": 16}
    decoder = {**small, "num_hidden_layers": 1, "hidden_size": 32, "num_key_value_heads": 1}
    return {
        "gpt2": t.GPT2LMHeadModel(
            t.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=97, n_positions=16)
        ),
        "bert": t.BertModel(t.BertConfig(num_hidden_layers=1, hidden_size=32, intermediate_size=37, **small)),
        "llama": t.LlamaForCausalLM(t.LlamaConfig(intermediate_size=37, **decoder)),
        "mixtral": t.MixtralForCausalLM(
            t.MixtralConfig(intermediate_size=24, num_local_experts=3, num_experts_per_tok=2, **decoder)
        ),
    }


@pytest.fixture(scope="module")
def hf_models():
    return _hf_models()


def _hf_decay_names(model):
    """The parameters transformers' Trainer gives weight decay (its own rule, read from its source)."""
    args = transformers.TrainingArguments(output_dir="unused", report_to=[], use_cpu=True)
    return set(transformers.Trainer(model=model, args=args).get_decay_parameter_names(model))


@pytest.mark.parametrize("name", ["gpt2", "bert", "llama", "mixtral"])
def test_default_selection_is_trainers_decay_set_with_embeddings_all_and_leaves_out_positions_by_default(
    hf_models, name
):
    model = hf_models[name]
    everything = Regularizer(model, Rule(L2(0.1), mode="decoupled", embeddings="all"))
    by_name = dict(model.named_parameters(remove_duplicate=False))  # the Trainer lists tied aliases too
    trainer_tensors = {id(by_name[n]) for n in _hf_decay_names(model)}
    assert {id(by_name[n]) for n in everything.names(everything.rules[0])} == trainer_tensors
    default = Regularizer(model, Rule(L2(0.1), mode="decoupled"))
    summary = default.summary().to_dict()["rules"][0]
    left = {row["name"]: row["reason"] for row in summary["left_out"]}
    positional = {"gpt2": {"transformer.wpe.weight"}, "bert": {"embeddings.position_embeddings.weight"}}
    assert set(left) == positional.get(name, set())
    assert all("positional embedding" in why for why in left.values())
    assert {row["name"] for row in summary["taken"]} == set(default.names(default.rules[0]))


def test_fused_experts_and_the_router_are_taken_and_a_spectrum_per_expert_is_refused(hf_models):
    mixtral = hf_models["mixtral"]
    reg = Regularizer(mixtral, Rule(L2(0.1), mode="decoupled"))
    experts = {"model.layers.0.mlp.experts.gate_up_proj", "model.layers.0.mlp.experts.down_proj"}
    assert experts | {"model.layers.0.mlp.gate.weight"} <= set(reg.names(reg.rules[0]))
    with pytest.raises(ValueError, match="one spectrum per expert"):
        Regularizer(mixtral, Rule(Nuclear(0.1), mode="proximal", select="*experts.down_proj"))


def _experts_and_conv1d(hf_models):
    """Mixtral's fused experts (E, out, in) and a GPT-2 Conv1D (in, out), with their matrices (out, in)."""
    experts = copy.deepcopy(hf_models["mixtral"].model.layers[0].mlp.experts)
    torch.manual_seed(0)
    conv1d = transformers.pytorch_utils.Conv1D(6, 4)
    return [
        (experts, "down_proj", lambda w: list(w)),
        (conv1d, "weight", lambda w: [w.T]),
    ]


@pytest.mark.parametrize("groups", ["rows", "cols"])
def test_row_and_column_groups_are_each_experts_and_conv1d_output_units(hf_models, groups):
    # rows = output units, cols = input features of each (out, in) matrix; the prox is separable over
    # groups, so it equals the prox of each expert's matrix: float32 rounding of the same operations bounds
    # the difference. Groups have at most 32 entries (down_proj is 3 x 32 x 24): a group norm is within
    # 32 eps32, the prox adds a division, a product and a subtraction, (32 + 8) eps32 = 4.8e-6 relative to
    # the largest entry (x - t x / ||x|| cancels); a sum of the 3 * 32 group norms adds 96 eps32: 1.6e-5.
    for module, name, matrices in _experts_and_conv1d(hf_models):
        param = getattr(module, name)
        with torch.no_grad():
            param.mul_(4.0)  # some groups above, some below the threshold
        penalty = GroupLasso(0.2, groups)
        coupled = Regularizer(module, Rule(penalty, mode="coupled", select=name))
        expected_value = sum(float(penalty.value(m.detach())) for m in matrices(param))
        torch.testing.assert_close(
            coupled.penalty().detach(), torch.as_tensor(expected_value), rtol=2e-5, atol=0
        )
        expected = [penalty.prox(m.detach(), 0.5) for m in matrices(param)]
        reg = Regularizer(module, Rule(penalty, mode="proximal", select=name))
        param.grad = torch.zeros_like(param)
        reg.wrap(torch.optim.SGD([param], lr=0.5)).step()
        zeroed = 0
        for got, want in zip(matrices(param), expected, strict=True):
            want = torch.as_tensor(want)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))
            zeroed += int((got == 0).all(dim=1 if groups == "rows" else 0).sum())
        assert zeroed > 0
        # constrained (the generic kernel's path): the sum of the experts' group norms lands on the radius
        radius = 0.5 * sum(float(penalty.norm(m.detach())) for m in matrices(param))
        ball = Regularizer(module, Rule(penalty, mode="constrained", radius=radius, select=name))
        with torch.no_grad():
            param.mul_(3.0)
        ball.wrap(torch.optim.SGD([param], lr=0.0)).step()
        norm = sum(float(penalty.norm(m.detach())) for m in matrices(param))
        assert norm == pytest.approx(radius, rel=2e-5)  # float32 sums of 96 group norms: as the value above


def test_a_default_selection_leaving_out_much_warns_and_names_it():
    class Tokens(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.pos_embed = torch.nn.Parameter(torch.zeros(64, 8))
            self.norm = torch.nn.RMSNorm(8)
            self.mix = torch.nn.Parameter(torch.zeros(8, 8))  # a custom matrix: taken

    with pytest.warns(UserWarning, match=r"leaves out 512 of .* 576 .*pos_embed \(64, 8\): a positional"):
        reg = Regularizer(Tokens(), Rule(L2(0.1), mode="decoupled"))
    assert reg.names(reg.rules[0]) == ["mix"]
    assert "no: a positional embedding" in str(reg.summary())


@pytest.mark.parametrize("grouped", [False, True], ids=["one group", "reg.param_groups()"])
def test_trainer_with_the_wrapped_optimizer_is_trainers_own_adamw_bit_for_bit(tmp_path, grouped):
    """One param group (the regularizer decays its weights), or the Trainer's decay / no-decay groups from
    ``reg.param_groups()`` (the decay group handed to Adam's own decoupled decay): both are the Trainer's
    AdamW, bit for bit."""

    def train(optimizers):
        torch.manual_seed(0)
        model = transformers.GPT2LMHeadModel(
            transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=97, n_positions=16)
        )
        ids = torch.randint(0, 97, (8, 12), generator=torch.Generator().manual_seed(1))
        data = [{"input_ids": row, "labels": row} for row in ids]
        args = transformers.TrainingArguments(
            output_dir=str(tmp_path),
            max_steps=4,
            per_device_train_batch_size=2,
            learning_rate=1e-2,
            weight_decay=0.1,
            report_to=[],
            use_cpu=True,
            save_strategy="no",
            logging_strategy="no",
            disable_tqdm=True,
            seed=0,
            dataloader_num_workers=0,
            optim="adamw_torch",  # torch.optim.AdamW (foreach): the bit-for-bit twin of Adam + decoupled L2
        )
        made = optimizers(model) if optimizers else (None, None)
        transformers.Trainer(model=model, args=args, train_dataset=data, optimizers=made).train()
        return model

    def wrapped_adam(model):
        reg = Regularizer(model, Rule(L2(0.1), mode="decoupled", embeddings="all"))
        adam = reg.wrap(torch.optim.Adam(reg.param_groups() if grouped else model.parameters(), lr=1e-2))
        assert len(reg._wrapped[0].handed) == grouped
        return adam, transformers.get_linear_schedule_with_warmup(adam, 0, 4)

    assert_same(train(wrapped_adam), train(None), exact=True)


# ---- accelerate: save_state / load_state carry the regularizer ---------------------------------------

accelerate = pytest.importorskip("accelerate")


def _accelerated(seed):
    torch.manual_seed(seed)
    accelerator = accelerate.Accelerator(cpu=True)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))
    rules = [
        Rule(L2(0.05), mode="decoupled"),
        Rule(L2(1.0), mode="lagrangian", budget=0.0, dual_lr=0.5, select="0.weight"),
    ]
    reg = Regularizer(model, rules)
    adam = reg.wrap(torch.optim.Adam(model.parameters(), lr=1e-2))
    model, adam = accelerator.prepare(model, adam)
    return accelerator, model, reg, adam


def _accelerated_steps(accelerator, model, reg, adam, batches):
    for x, y in batches:
        adam.zero_grad()
        accelerator.backward(((model(x) - y) ** 2).mean() + reg.penalty())
        adam.step()


def test_accelerate_save_and_load_state_resume_the_regularizer_bit_identical(tmp_path):
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(8, 4, generator=g), torch.randn(8, 1, generator=g)) for _ in range(6)]
    straight = _accelerated(0)
    _accelerated_steps(*straight, batches)
    first = _accelerated(0)
    _accelerated_steps(*first, batches[:3])
    first[0].save_state(str(tmp_path))
    resumed = _accelerated(5)  # other weights and a zero multiplier until the state loads
    resumed[0].load_state(str(tmp_path))
    _accelerated_steps(*resumed, batches[3:])
    assert_same(resumed[1], straight[1], exact=True)
    multiplier = straight[2].rules[1].multiplier
    assert multiplier.item() > 0 and torch.equal(resumed[2].rules[1].multiplier, multiplier)
