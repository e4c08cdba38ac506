"""No module outside ``normpen.penalties`` branches on a penalty's class or uses its private names.

Solvers and training code read a penalty's declarations (``block_form`` and its flags, see
``normpen/penalties/base.py``), so adding a penalty touches one file and one registry line. This test
walks the source with :mod:`ast` and fails on

- ``isinstance(x, C)``, ``issubclass(x, C)`` and ``type(x) is C`` (``==``, ``is not``, ``!=``) with
  ``C`` a penalty class that ``normpen.penalties`` exports, by any name it was imported as (tuples and
  ``A | B`` unions included). The base class :class:`~normpen.penalties.base.Penalty` is allowed:
  "is this a penalty at all" is input validation, not a branch on which penalty it is;
- ``from normpen.penalties... import _name``: private helpers of the penalties package used elsewhere.

And a penalty class written outside normpen, with only its kernels and its form, gets the solver and the
training kernel that form declares.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import normpen
import normpen.penalties
from normpen._array import namespace, soft_threshold
from normpen.linear.blocks import as_block_penalty
from normpen.linear.datafits import Quadratic
from normpen.linear.solvers.cd import coordinate_descent
from normpen.penalties.base import BlockForm, Penalty
from normpen.penalties.l1 import L1
from normpen.torch.kernels import L1Kernel, kernel_for

SOURCE = Path(normpen.__file__).parent
PENALTIES_DIR = SOURCE / "penalties"
#: Every penalty class the package exports, except the contract's base class.
PENALTY_CLASSES = frozenset(normpen.penalties.__all__) - {"Penalty"}


def _is_penalty_module(module):
    return module is not None and (module == "normpen" or module.startswith("normpen.penalties"))


def _penalty_names(tree):
    """The local names of penalty classes in a module: their aliases, and their own names unless the
    module defines or imports another thing under that name (estimators define an ``ElasticNet`` class)."""
    aliases, shadowed = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                local = alias.asname or alias.name
                if _is_penalty_module(node.module) and alias.name in PENALTY_CLASSES:
                    aliases.add(local)
                elif local in PENALTY_CLASSES:
                    shadowed.add(local)
        elif isinstance(node, ast.ClassDef) and node.name in PENALTY_CLASSES:
            shadowed.add(node.name)
    return aliases | (PENALTY_CLASSES - shadowed)


def _class_names(node):
    """The names a class argument refers to: ``C``, ``mod.C``, tuples and ``A | B`` of them."""
    if isinstance(node, ast.Name):
        return {node.id}
    if isinstance(node, ast.Attribute):
        return {node.attr}
    if isinstance(node, ast.Tuple):
        return set().union(*(_class_names(e) for e in node.elts))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _class_names(node.left) | _class_names(node.right)
    return set()


def _is_call_to(node, name):
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == name


def class_branches(tree):
    """``(line, text)`` of every isinstance/issubclass/type-comparison against a penalty class."""
    names = _penalty_names(tree)
    found = []
    for node in ast.walk(tree):
        if (_is_call_to(node, "isinstance") or _is_call_to(node, "issubclass")) and len(node.args) == 2:
            checked = _class_names(node.args[1])
        elif isinstance(node, ast.Compare) and any(
            isinstance(op, (ast.Is, ast.IsNot, ast.Eq, ast.NotEq)) for op in node.ops
        ):
            sides = [node.left, *node.comparators]
            if not any(_is_call_to(side, "type") for side in sides):
                continue
            checked = set().union(*(_class_names(side) for side in sides))
        else:
            continue
        if checked & names:
            found.append((node.lineno, ast.unparse(node)))
    return found


def private_penalty_imports(tree):
    """``(line, text)`` of every import of a private name from the penalties package."""
    return [
        (node.lineno, f"from {node.module} import {alias.name}")
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("normpen.penalties")
        for alias in node.names
        if alias.name.startswith("_")
    ]


def _modules():
    return sorted(p for p in SOURCE.rglob("*.py") if PENALTIES_DIR not in p.parents)


def test_the_walk_sees_the_library():
    """The walk covers the solvers and the training code (a wrong root would pass vacuously)."""
    walked = {p.relative_to(SOURCE).as_posix() for p in _modules()}
    assert {"linear/blocks.py", "torch/kernels.py", "torch/regularizer.py", "torch/rules.py"} <= walked
    assert not any(p.startswith("penalties/") for p in walked)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.relative_to(SOURCE).as_posix())
def test_no_module_outside_penalties_branches_on_a_penalty_class(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    assert class_branches(tree) == [], "read the penalty's declarations (block_form, flags) instead"
    assert private_penalty_imports(tree) == [], "private names of normpen.penalties are its own"


@pytest.mark.parametrize(
    "source",
    [
        "from normpen.penalties.l1 import L1\nisinstance(p, L1)",
        "from normpen.penalties.l2 import L2 as Ridge\nif isinstance(p, (int, Ridge)): pass",
        "from normpen import GroupLasso\nisinstance(p, GroupLasso | str)",
        "import normpen.penalties as P\nissubclass(c, P.MaxNorm)",
        "type(p) is Anchored",
        "type(p) == ElasticNet",
    ],
)
def test_the_walk_catches_class_branches(source):
    assert class_branches(ast.parse(source))


@pytest.mark.parametrize(
    "source",
    [
        "from normpen.penalties.base import Penalty\nisinstance(p, Penalty)",
        "class ElasticNet: pass\nisinstance(e, ElasticNet)",
        "from normpen.linear.estimators import ElasticNet\nisinstance(e, ElasticNet)",
        "isinstance(p, dict)",
    ],
)
def test_the_walk_allows_the_base_class_and_other_classes(source):
    assert not class_branches(ast.parse(source))


def test_the_walk_catches_private_imports():
    tree = ast.parse("from normpen.penalties.group_lasso import GroupLasso, _parse_groups")
    assert private_penalty_imports(tree) == [(1, "from normpen.penalties.group_lasso import _parse_groups")]


@dataclass(frozen=True, eq=False)
class OutsideLasso(Penalty):
    """:math:`\\lambda\\|x\\|_1` written outside normpen: its kernels and its form, and nothing else."""

    def block_form(self, shape=None):
        return BlockForm(l1=self.lam)

    def _value(self, x):
        return self.lam * namespace(x).sum(namespace(x).abs(x))

    def _grad(self, x):
        return self.lam * namespace(x).sign(x)

    def _prox(self, x, step):
        return soft_threshold(x, step * self.lam)

    def _norm(self, x):
        return L1(1.0)._norm(x)

    def _project(self, x, radius):
        return L1(1.0)._project(x, radius)

    def _dual_norm(self, x):
        return L1(1.0)._dual_norm(x)

    def _project_dual(self, x, radius):
        return L1(1.0)._project_dual(x, radius)


def test_a_penalty_written_elsewhere_gets_the_solvers_and_kernels_its_form_declares():
    """The one-file promise: no solver or kernel names the new class, yet it gets coordinate descent and
    the in-place L1 kernel. The same arithmetic on both sides: the coefficients agree bit for bit."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((30, 6)), rng.standard_normal(30)
    ours, lasso = OutsideLasso(0.1), L1(0.1)
    assert kernel_for(ours) is kernel_for(lasso) is L1Kernel
    block, reference = as_block_penalty(ours, (6,)), as_block_penalty(lasso, (6,))
    np.testing.assert_array_equal(block.l1, reference.l1)
    fitted = coordinate_descent(X, y, Quadratic(), ours, tol=1e-10).coef
    np.testing.assert_array_equal(fitted, coordinate_descent(X, y, Quadratic(), lasso, tol=1e-10).coef)
