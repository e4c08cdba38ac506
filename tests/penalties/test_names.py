"""The registry of penalty names (normpen.penalties.names): every spelling that the estimators, `normpen fit`
and `normpen sweep` accepted before it existed still resolves, to one penalty each."""

import numpy as np
import pytest

import normpen.linear as linear
from normpen.penalties import L1, L2, ElasticNet, GroupLasso, SparseGroupLasso, names

#: The four registries this one replaced, spelling by spelling: the estimators' ``penalty=`` names,
#: ``normpen fit --penalty`` (models) and ``normpen sweep --penalty``.
ESTIMATOR_SPELLINGS = {"l1": "l1", "l2": "l2", "elasticnet": "elasticnet"}
FIT_SPELLINGS = ["ridge", "lasso", "enet", "group", "sgl", "logistic-l1", "logistic-l2", "svm"]
SWEEP_SPELLINGS = {"l2": "l2", "l1": "l1", "group": "group"}


@pytest.mark.parametrize(
    "spelling", [*ESTIMATOR_SPELLINGS, *SWEEP_SPELLINGS, "lasso", "ridge", "enet", "sgl"]
)
def test_every_old_spelling_resolves(spelling):
    expected = {**ESTIMATOR_SPELLINGS, **SWEEP_SPELLINGS, "lasso": "l1", "ridge": "l2", "enet": "elasticnet"}
    assert names.canonical(spelling) == expected.get(spelling, "sparse_group")


def test_fit_models_keep_their_names_and_order():
    assert list(names.MODELS) == FIT_SPELLINGS
    for spelling in FIT_SPELLINGS:
        assert names.model(spelling).name == spelling


def test_spellings_are_unique_and_each_names_one_penalty():
    every = names.spellings()
    assert len(every) == len(set(every))
    for entry in names.PENALTIES.values():
        assert all(names.canonical(spelling) == entry.name for spelling in entry.spellings)
    model_spellings = [s for m in names.MODELS.values() for s in m.spellings]
    assert len(model_spellings) == len(set(model_spellings))


@pytest.mark.parametrize(
    ("spelling", "model"),
    [("elasticnet", "enet"), ("l1", "lasso"), ("sparse_group", "sgl"), ("logistic-lasso", "logistic-l1")],
)
def test_a_model_is_reached_by_every_spelling_of_its_penalty(spelling, model):
    assert names.model(spelling).name == model


def test_make_penalty_builds_each_penalty_with_the_options_it_reads():
    groups = [np.array([0, 1]), np.array([2])]
    options = {"l1_ratio": 0.3, "groups": groups, "weights": None}
    built = {name: names.make_penalty(name, 0.5, **options) for name in names.PENALTIES}
    # penalties compare by identity, so their type and fields are compared
    assert repr(built["l1"]) == repr(L1(0.5))
    assert repr(built["l2"]) == repr(L2(0.5))
    assert repr(built["elasticnet"]) == repr(ElasticNet(0.5, 0.3))
    assert isinstance(built["group"], GroupLasso) and built["group"].lam == 0.5
    assert isinstance(built["sparse_group"], SparseGroupLasso) and built["sparse_group"].l1_ratio == 0.3
    assert repr(names.make_penalty("enet", 2.0, l1_ratio=0.3)) == repr(ElasticNet(2.0, 0.3))


def test_unknown_names_and_missing_groups_get_clear_errors():
    with pytest.raises(ValueError, match=r"penalty must be one of l1 \(lasso\), l2 \(ridge\).*got 'l3'"):
        names.canonical("l3")
    with pytest.raises(
        ValueError, match=r"must be one of l2 \(ridge\), l1 \(lasso\), group .*got .elasticnet."
    ):
        names.canonical("elasticnet", among=names.SWEEP_PENALTIES)
    with pytest.raises(ValueError, match="needs groups.*GroupLasso"):
        names.make_penalty("sgl", 1.0)
    with pytest.raises(ValueError, match="model must be one of ridge, lasso"):
        names.model("lars")


@pytest.mark.parametrize("model", list(names.MODELS.values()), ids=lambda m: m.name)
def test_every_model_names_an_estimator_that_takes_its_options(model):
    estimator = getattr(linear, model.estimator)
    params = estimator().get_params()
    assert set(model.fixed) <= set(params)
    # what `normpen fit` passes: the mixing ratio and the groups of its one-hot columns
    assert set(model.options(l1_ratio=0.5, groups=None)) <= set(params)
