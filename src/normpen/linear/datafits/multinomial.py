r"""Multinomial datafit :math:`F(W, b) = \sum_i a_i (\log\sum_k e^{z_{ik}} - \sum_k Y_{ik} z_{ik})`."""

from __future__ import annotations

import functools

import array_api_compat

from normpen._array import matrix_axis_sum, namespace
from normpen.linear.datafits.base import Datafit, float_target, xlogx

__all__ = ["Multinomial"]


def _class_sum(x):
    """Sum over the classes (last axis) of an ``(n, K)`` array (:func:`~normpen._array.matrix_axis_sum`)."""
    return matrix_axis_sum(x, 1)


def _class_extreme(pick, x):
    """The elementwise ``pick`` (maximum or minimum) over the classes, one pass each (:func:`_class_sum`)."""
    return functools.reduce(pick, (x[:, c] for c in range(x.shape[1])))


class Multinomial(Datafit):
    r"""Mean cross-entropy of the softmax, :math:`z_i = W^\top x_i + b \in \mathbb{R}^K`.

    The encoded target is a one-hot (or any probability) matrix ``Y`` of
    shape ``(n, K)``; :meth:`encode_target` also takes integer labels
    ``0..K-1``. Our ``LogisticRegression`` with ``K > 2`` classes and
    ``L2(lam)`` is scikit-learn's multinomial ``LogisticRegression(C=1/(n*lam))``.

    Notes
    -----
    - derivative :math:`p_i - Y_i` with :math:`p_i = \operatorname{softmax}(z_i)`;
      Hessian :math:`\operatorname{diag}(p_i) - p_i p_i^\top \preceq \tfrac12 I`
      (``curvature = 1/2``); ``second_derivative`` is its diagonal :math:`p_{ik}(1-p_{ik})`;
    - conjugate :math:`\ell^*(u) = \sum_k q_k \log q_k` with :math:`q = u + Y` when
      :math:`q` lies in the simplex, ``inf`` otherwise;
    - the loss is invariant to adding a constant to every class, so the
      intercept is found with a pseudo-inverse Newton step.
    """

    curvature = 0.5
    multi_output = True

    def encode_target(self, y):
        xp = namespace(y)
        if y.ndim == 1:
            if xp.isdtype(y.dtype, "real floating") and not bool(xp.all(y == xp.round(y))):
                raise ValueError(
                    "Multinomial needs integer class labels 0..K-1 or a (n, K) probability matrix"
                )
            labels = xp.astype(y, xp.int64)
            if bool(xp.any(labels < 0)):
                raise ValueError("Multinomial class labels must be 0..K-1; encode them with LabelEncoder")
            n_classes = int(xp.max(labels)) + 1 if labels.shape[0] else 1
            classes = xp.arange(n_classes, dtype=xp.int64, device=array_api_compat.device(labels))
            return xp.astype(xp.reshape(labels, (-1, 1)) == xp.reshape(classes, (1, -1)), xp.float64)
        Y = float_target(y, 2, "Multinomial")
        if bool(xp.any(Y < 0)) or not bool(xp.all(xp.abs(xp.sum(Y, axis=1) - 1) <= 1e-6)):
            raise ValueError("Multinomial needs rows of Y that are probabilities: >= 0 and summing to 1")
        return Y

    def _log_softmax(self, z):
        xp = namespace(z)
        shifted = z - xp.reshape(_class_extreme(xp.maximum, z), (-1, 1))
        return shifted - xp.reshape(xp.log(_class_sum(xp.exp(shifted))), (-1, 1))

    def loss(self, y, z):
        return -_class_sum(y * self._log_softmax(z))

    def derivative(self, y, z):
        xp = namespace(z)
        return xp.exp(self._log_softmax(z)) - y

    def second_derivative(self, y, z):
        xp = namespace(z)
        p = xp.exp(self._log_softmax(z))
        return p * (1 - p)

    def hessian_factors(self, y, z, weights):
        r"""``(a p, sqrt(a) p)``, :math:`a_i(\operatorname{diag}(p_i) - p_i p_i^\top)` with the softmax p."""
        xp = namespace(z)
        p = xp.exp(self._log_softmax(z))
        return xp.reshape(weights, (-1, 1)) * p, xp.reshape(xp.sqrt(weights), (-1, 1)) * p

    def intercept_terms(self, y, z, weights):
        xp = namespace(z)
        log_p = self._log_softmax(z)
        p = xp.exp(log_p)
        a = xp.reshape(weights, (-1, 1))
        weighted = a * p
        eye = xp.eye(z.shape[1], dtype=z.dtype, device=array_api_compat.device(z))
        hess = eye * xp.reshape(matrix_axis_sum(weighted, 0), (1, -1)) - weighted.T @ p
        return -xp.sum(a * y * log_p), matrix_axis_sum(weighted - a * y, 0), hess

    def canonical_intercept(self, b):
        """Adding a constant to every class changes nothing: return the intercept with zero mean."""
        xp = namespace(b)
        return b - xp.mean(b)

    def conjugate(self, y, u):
        xp = namespace(u)
        q = u + y
        tol = 1e3 * xp.finfo(u.dtype).eps
        inside = (_class_extreme(xp.minimum, q) >= -tol) & (xp.abs(_class_sum(q) - 1) <= tol)
        value = _class_sum(xlogx(xp.clip(q, 0, None)))
        return xp.where(inside, value, xp.inf)
