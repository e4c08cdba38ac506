"""``normpen._array.namespace``: its shortcut for plain numpy arrays gives what ``array_api_compat`` gives."""

import array_api_compat
import numpy as np
import pytest
import torch

from normpen._array import namespace


class Subclass(np.ndarray):
    """A numpy array of another type (the shortcut takes only ``numpy.ndarray`` itself)."""


@pytest.mark.parametrize("count", [1, 2, 3])
def test_plain_numpy_arrays_get_array_api_compats_namespace(count):
    arrays = [np.ones(4) * k for k in range(count)]
    assert namespace(*arrays) is array_api_compat.array_namespace(*arrays)


def test_other_arrays_go_through_array_api_compat():
    sub = np.ones(3).view(Subclass)
    assert namespace(sub) is array_api_compat.array_namespace(sub)
    assert namespace(sub, np.ones(3)) is array_api_compat.array_namespace(np.ones(3))
    tensor = torch.ones(3)
    assert namespace(tensor) is array_api_compat.array_namespace(tensor)


@pytest.mark.parametrize(
    "arrays",
    [(), ([1.0, 2.0],), (np.ones(2), [1.0]), (np.ones(2), torch.ones(2))],
    ids=["none", "list", "array and list", "numpy and torch"],
)
def test_anything_else_is_refused_with_the_fix(arrays):
    with pytest.raises(TypeError, match="expected numpy arrays or torch tensors"):
        namespace(*arrays)
