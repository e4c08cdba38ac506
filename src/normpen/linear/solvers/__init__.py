"""Solvers of penalized linear models, one per file, each declaring what it needs from a penalty.

Import a solver from its module (``from normpen.linear.solvers.fista import fista``): the
modules keep their names, so no function shadows the module of the same name.

- :func:`~normpen.linear.solvers.cd.coordinate_descent`: working-set block coordinate
  descent (block-separable penalties: per-block prox and dual norm);
- :func:`~normpen.linear.solvers.fista.fista`: accelerated proximal gradient on numpy or
  torch (any penalty with ``prox`` and ``value``);
- :func:`~normpen.linear.solvers.ridge.ridge_path`: closed-form ridge through one SVD;
- :func:`~normpen.linear.solvers.svm.linear_svm` and
  :func:`~normpen.linear.solvers.svm.hard_margin_svm`: linear SVMs;
- :func:`~normpen.linear.solvers.constrained.constrained`: ``min L s.t. P <= C`` and its multiplier.

Every one of them returns a :class:`~normpen.linear.problem.Solution` (coefficients,
intercept, objective, certified duality gap, iterations, and the multiplier, margin or
leave-one-out errors where they apply). Which datafits and penalties each takes is
recorded once, in the registry :data:`normpen.linear.path.SOLVERS` that
``path(solver="auto")`` reads.
"""
