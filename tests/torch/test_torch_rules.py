"""Which parameter gets what: the default selection by module type, select, claims and clear errors."""

from __future__ import annotations

import gc

import pytest
import torch
from torch import nn

from normpen.penalties.group_lasso import GroupLasso
from normpen.penalties.l1 import L1
from normpen.penalties.l2 import L2
from normpen.penalties.max_norm import MaxNorm
from normpen.penalties.spectral import Spectral
from normpen.torch import Regularizer, Rule
from normpen.torch.rules import parameter_entries


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(h)) + self.shortcut(x))


class ResNetStyle(nn.Module):
    """A small ResNet written here (no torchvision), with a learned temperature and a gate vector."""

    def __init__(self, classes=5):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.stem_norm = nn.GroupNorm(2, 4)
        self.layer1 = Block(4, 4, 1)
        self.layer2 = Block(4, 8, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, classes)
        self.temperature = nn.Parameter(torch.tensor(1.0))
        self.gate = nn.Parameter(torch.ones(classes))

    def forward(self, x):
        h = self.layer2(self.layer1(torch.relu(self.stem_norm(self.stem(x)))))
        return self.fc(self.pool(h).flatten(1)) * self.gate / self.temperature


RESNET_WEIGHTS = [
    "stem.weight",
    "layer1.conv1.weight",
    "layer1.conv2.weight",
    "layer2.conv1.weight",
    "layer2.conv2.weight",
    "layer2.shortcut.0.weight",
    "fc.weight",
]


def _selected(model, **rule_kwargs):
    reg = Regularizer(model, Rule(L2(0.1), mode="decoupled", **rule_kwargs))
    return reg.names(reg.rules[0])


def test_default_selection_on_a_resnet_takes_conv_and_linear_weights_only():
    model = ResNetStyle()
    assert _selected(model) == RESNET_WEIGHTS
    model(torch.randn(2, 3, 8, 8))  # and the model is a working one


class Zoo(nn.Module):
    """Every layer type of the default table, plus norm layers, a tied weight and a frozen one."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 6)
        self.bag = nn.EmbeddingBag(10, 6)
        self.attn = nn.MultiheadAttention(6, 2)
        self.cross = nn.MultiheadAttention(6, 2, kdim=4, vdim=5)
        self.lstm = nn.LSTM(6, 3, proj_size=2)
        self.bilinear = nn.Bilinear(3, 4, 2)
        self.up = nn.ConvTranspose2d(2, 3, 2)
        self.conv1d = nn.Conv1d(2, 2, 3)
        self.conv3d = nn.Conv3d(1, 2, 2)
        self.norms = nn.ModuleList(
            [nn.LayerNorm(6), nn.BatchNorm1d(6), nn.InstanceNorm2d(3, affine=True), nn.RMSNorm(6)]
        )
        self.out = nn.Linear(6, 10, bias=False)
        self.out.weight = self.embed.weight  # tied
        self.frozen = nn.Linear(3, 3)
        self.frozen.weight.requires_grad_(False)


def test_default_selection_covers_every_layer_type_and_nothing_else():
    assert _selected(Zoo()) == [
        "embed.weight",
        "bag.weight",
        "attn.in_proj_weight",
        "attn.out_proj.weight",
        "cross.q_proj_weight",
        "cross.k_proj_weight",
        "cross.v_proj_weight",
        "cross.out_proj.weight",
        "lstm.weight_ih_l0",
        "lstm.weight_hh_l0",
        "lstm.weight_hr_l0",
        "bilinear.weight",
        "up.weight",
        "conv1d.weight",
        "conv3d.weight",
    ]


def test_a_tied_weight_is_one_tensor_with_both_owners():
    entries = {e.name: e for e in parameter_entries(Zoo())}
    assert "out.weight" not in entries
    assert [type(m).__name__ for m, _ in entries["embed.weight"].owners] == ["Embedding", "Linear"]


def test_select_by_glob_type_predicate_and_union():
    model = ResNetStyle()
    assert _selected(model, select="layer2.*") == RESNET_WEIGHTS[3:6]
    assert _selected(model, select=nn.Linear) == ["fc.weight"]
    assert _selected(model, select=lambda name, p: p.shape[-1] == 1) == ["layer2.shortcut.0.weight"]
    assert _selected(model, select=["stem.*", nn.Linear]) == ["stem.weight", "fc.weight"]


def test_candidates_all_opens_biases_norm_layers_and_scalars_to_select():
    model = ResNetStyle()
    assert _selected(model, candidates="all", select="*.bias") == [
        "stem.bias",
        "stem_norm.bias",
        "layer1.bn1.bias",
        "layer1.bn2.bias",
        "layer2.bn1.bias",
        "layer2.bn2.bias",
        "layer2.shortcut.1.bias",
        "fc.bias",
    ]
    assert _selected(model, candidates="all", select=["temperature", "gate"]) == ["temperature", "gate"]
    assert len(_selected(model, candidates="all")) == len(list(model.parameters()))


def test_a_frozen_parameter_is_never_a_candidate():
    model = Zoo()
    with pytest.raises(ValueError, match=r"frozen.weight \(Linear, shape \(3, 3\), frozen\)"):
        _selected(model, candidates="all", select="frozen.weight")
    assert _selected(model, candidates="all", select="frozen.*") == ["frozen.bias"]


def test_per_group_lambda_is_two_rules():
    model = ResNetStyle()
    trunk = Rule(L2(1e-2), mode="decoupled", select="layer*")
    head = Rule(L2(1e-1), mode="decoupled", select="fc.*")
    reg = Regularizer(model, [trunk, head])
    sgd = reg.wrap(torch.optim.SGD(model.parameters(), lr=0.5))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    sgd.step()
    # the decay is this one multiply by this double, so bit equal (a zero gradient leaves SGD's update 0)
    assert torch.equal(model.fc.weight, before["fc.weight"] * (1 - 0.5 * 1e-1))
    assert torch.equal(model.layer1.conv1.weight, before["layer1.conv1.weight"] * (1 - 0.5 * 1e-2))
    assert torch.equal(model.stem.weight, before["stem.weight"])
    assert torch.equal(model.fc.bias, before["fc.bias"])


def test_a_parameter_claimed_by_two_rules_of_one_mode_is_an_error_naming_it():
    model = ResNetStyle()
    with pytest.raises(ValueError, match=r"'fc.weight' is claimed by two decoupled rules"):
        Regularizer(model, [Rule(L2(0.1), mode="decoupled"), Rule(L1(0.1), mode="decoupled", select="fc.*")])
    Regularizer(model, [Rule(L2(0.1), mode="decoupled"), Rule(L1(0.1), mode="proximal", select="fc.*")])


def test_a_rule_selecting_nothing_lists_what_it_saw():
    with pytest.raises(ValueError, match=r"selected no parameter; it saw 7 candidates: stem.weight \(Conv2d"):
        _selected(ResNetStyle(), select="encoder.*")
    with pytest.raises(ValueError, match=r"matching but not candidates: layer1.bn1.weight \(BatchNorm2d"):
        _selected(ResNetStyle(), select=nn.BatchNorm2d)


def test_models_with_nothing_to_regularize_are_clear_errors():
    with pytest.raises(ValueError, match="the model has no parameters"):
        Regularizer(nn.ReLU(), Rule(L2(0.1), mode="decoupled"))
    with pytest.raises(ValueError, match=r"none is a candidate\): 0.weight \(LayerNorm"):
        Regularizer(nn.Sequential(nn.LayerNorm(4), nn.BatchNorm1d(4)), Rule(L2(0.1), mode="decoupled"))
    with pytest.raises(ValueError, match="rules is empty"):
        Regularizer(ResNetStyle(), [])


def test_a_lazy_module_must_be_materialised_first():
    model = nn.Sequential(nn.LazyLinear(3))
    with pytest.raises(ValueError, match="run one forward pass"):
        Regularizer(model, Rule(L2(0.1), mode="decoupled"))
    model(torch.randn(2, 5))
    assert _selected(model) == ["0.weight"]


def test_matrix_penalties_refuse_vectors_naming_the_parameter():
    with pytest.raises(ValueError, match=r"on parameter 'fc.bias'.*needs a matrix"):
        Regularizer(ResNetStyle(), Rule(Spectral(1.0), mode="coupled", candidates="all", select="fc.bias"))
    with pytest.raises(ValueError, match=r"'fc.weight'.*groups"):
        Regularizer(ResNetStyle(), Rule(GroupLasso(1.0, [[0, 100]]), mode="proximal", select="fc.weight"))


def test_a_wrapper_is_unwrapped_so_names_stay_the_same():
    model = ResNetStyle()
    assert _selected(nn.DataParallel(model)) == RESNET_WEIGHTS


def test_per_tensor_penalties_name_their_tensors():
    model = ResNetStyle()
    reg = Regularizer(model, Rule({"fc.weight": L2(0.1), "stem.weight": L1(0.2)}, mode="decoupled"))
    assert reg.names(reg.rules[0]) == ["fc.weight", "stem.weight"]
    with pytest.raises(ValueError, match=r"does not have: \['fc.kernel'\]"):
        Regularizer(model, Rule({"fc.kernel": L2(0.1)}, mode="decoupled"))


def test_a_rule_belongs_to_one_live_regularizer():
    rule = Rule(L2(0.1), mode="decoupled")
    first = Regularizer(ResNetStyle(), rule)
    with pytest.raises(ValueError, match="already belongs to another Regularizer"):
        Regularizer(ResNetStyle(), rule)
    with pytest.raises(ValueError, match="appears twice"):
        Regularizer(ResNetStyle(), [Rule(L2(0.1), mode="coupled")] * 2)
    del first
    gc.collect()
    Regularizer(ResNetStyle(), rule)  # the first one is gone: the rule can be reused


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(penalty=L2(1.0), mode="weight_decay"), ValueError, "mode must be one of"),
        (dict(penalty=L2(1.0), mode="coupled", candidates="weight"), ValueError, "candidates must be"),
        (dict(penalty=L2(1.0), mode="decoupled", schedule="cosine"), ValueError, "schedule must be"),
        (dict(penalty=L2(1.0), mode="coupled", schedule="fixed"), ValueError, "takes no learning rate"),
        (dict(penalty=L2(1.0), mode="constrained"), ValueError, "needs radius"),
        (dict(penalty=L2(1.0), mode="decoupled", radius=1.0), ValueError, "needs radius"),
        (dict(penalty=L2(1.0), mode="constrained", radius=-1.0), ValueError, "radius must be > 0"),
        (dict(penalty=MaxNorm(1.0), mode="decoupled"), ValueError, "MaxNorm is a constraint"),
        (dict(penalty=lambda m: 0, mode="proximal"), ValueError, "model-level penalty"),
        (dict(penalty=lambda m: 0, mode="coupled", select="fc.*"), ValueError, "sees the whole model"),
        (dict(penalty={"fc.weight": L2(1.0)}, mode="coupled", select="x"), ValueError, "its own selection"),
        (dict(penalty={"fc.weight": 1.0}, mode="coupled"), TypeError, "mapping from parameter names"),
        (dict(penalty=0.1, mode="coupled"), TypeError, "penalty must be a normpen Penalty"),
        (dict(penalty=L2(1.0), mode="coupled", select=3), TypeError, "select must be a glob"),
        (dict(penalty=L2(1.0), mode="coupled", select=int), TypeError, "torch.nn.Module subclass"),
        (dict(penalty=L2(1.0), mode="coupled", select=[]), ValueError, "empty sequence"),
    ],
)
def test_rule_arguments_are_validated(kwargs, error, match):
    with pytest.raises(error, match=match):
        Rule(**kwargs)


def test_a_model_level_penalty_must_return_a_scalar_tensor():
    model = ResNetStyle()
    reg = Regularizer(model, Rule(lambda m: m.fc.weight.abs().sum(dim=0), mode="coupled"))
    with pytest.raises(TypeError, match="must return a 0-d tensor"):
        reg.penalty()
    reg = Regularizer(model, Rule(lambda m: m.fc.weight.abs().sum(), mode="coupled", label="path"))
    reg.penalty().backward()
    assert torch.equal(model.fc.weight.grad, torch.sign(model.fc.weight.detach()))  # d|w|/dw = sign(w)
    assert reg.report().rules[0].label == "path"


def test_a_rule_names_the_bound_its_mode_applies():
    """A constrained rule projects onto radius=r and a lagrangian one holds budget=C whatever the
    penalty's own parameters say (a constrained MaxNorm(3.0) at radius 2 clips rows to 2): the rule's
    description names that bound (the summary's label here; the errors that name a rule use it too)."""
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    rules = [
        Rule(MaxNorm(3.0), mode="constrained", radius=2.0, select="0.weight"),
        Rule(L2(0.1), mode="lagrangian", budget=5.0, dual_lr=0.1, select="2.weight"),
        Rule(L2(0.1), mode="decoupled", select="2.weight"),
    ]
    labels = [row["label"] for row in Regularizer(model, rules).summary().to_dict()["rules"]]
    assert labels[0].endswith(" radius=2") and labels[1].endswith(" budget=5")
    assert "radius" not in labels[2] and "budget" not in labels[2]
