"""normpen.torch inside the frameworks: PyTorch Lightning and transformers' Trainer (tiny local models).

Lightning's automatic optimization passes a closure to ``optimizer.step``;
its checkpoints hold the optimizer's state dict, and so the regularizer's;
``precision="bf16-true"`` casts the model after the regularizer is built.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader
from torch_cases import assert_same, conv_batches, conv_net

from normpen.penalties.l2 import L2
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


@pytest.mark.parametrize("accumulate", [1, 2])
def test_lightning_with_decoupled_l2_on_adam_is_adamw_bit_for_bit(accumulate):
    batches = conv_batches(12 * accumulate, dtype=torch.float32)
    regularized, plain = Module(_decoupled), Module()
    for module in (regularized, plain):
        _fit(module, batches, max_steps=12, accumulate_grad_batches=accumulate)
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

    assert_same(resumed.net, straight.net, exact=True)
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
    assert_same(cast_by_lightning.net, built_on_bf16.net, exact=True)
    assert set(cast_by_lightning.regularizer.state_dict()["residuals"]) == {
        "conv.weight",
        "fc.weight",
        "head.weight",
    }
