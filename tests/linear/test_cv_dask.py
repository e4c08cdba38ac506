"""Cross-validation on a cluster: a ``*CV`` estimator's folds run through joblib, so under
``joblib.parallel_backend("dask")`` they run on a dask.distributed cluster (here two worker processes on
loopback) and give the serial answer.

Why the answers are equal: each fold's path is the same float64 computation on the same arrays (pickled
exactly) with the same code, and both sides use one BLAS thread (the serial run under
``threadpool_limits(1)``, dask's workers by their ``OMP/OPENBLAS/MKL_NUM_THREADS=1``), so the held-out errors
are bit-equal (measured: 0 difference); ``lam_min_`` is the argmin of the same numbers, and the refit runs in
this process on the same strength, so ``coef_`` is bit-equal too. The held-out errors are still compared
with a tolerance, 1e-12 relative, in case a worker's BLAS sums in another order: a 40-sample mean of
squared residuals of coefficients that CD moves by ~cond * eps changes by ~1e-14.
"""

import os
from unittest import mock

import numpy as np
import pytest
from sklearn.model_selection import KFold
from threadpoolctl import threadpool_limits

from normpen.linear import LassoCV

pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")
joblib = pytest.importorskip("joblib")


def test_lasso_cv_on_a_dask_cluster_gives_the_serial_lambda_and_coefficients():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 40))
    y = X[:, :5] @ np.array([2.0, -1.0, 1.0, 0.5, -0.5]) + rng.standard_normal(200)
    options = {"cv": KFold(5, shuffle=True, random_state=0), "n_lams": 30, "tol": 1e-8}
    with threadpool_limits(1):
        serial = LassoCV(**options).fit(X, y)
    # the nanny sets its workers' variables (OMP/OPENBLAS/MKL_NUM_THREADS, MALLOC_TRIM_THRESHOLD_,
    # PYTHONHASHSEED, ...) in this process's environment and leaves them there: restored after, so that no
    # later test's subprocess inherits them
    with (
        mock.patch.dict(os.environ),
        distributed.LocalCluster(
            processes=True, n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
        distributed.get_task_stream(client) as tasks,
        joblib.parallel_backend("dask"),
    ):
        on_cluster = LassoCV(**options).fit(X, y)
    assert len(tasks.data) >= 5  # the five folds ran as tasks of the cluster
    np.testing.assert_allclose(on_cluster.cv_errors_, serial.cv_errors_, rtol=1e-12, atol=0)
    # the minimum is not a near-tie, so the same errors to 1e-12 give the same argmin
    means = np.sort(serial.cv_mean_)
    assert means[1] - means[0] > 1e-10 * means[0]
    assert on_cluster.lam_min_ == serial.lam_min_ and on_cluster.lam_1se_ == serial.lam_1se_
    np.testing.assert_array_equal(on_cluster.coef_, serial.coef_)
    assert on_cluster.intercept_ == serial.intercept_
