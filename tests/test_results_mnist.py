"""The spot check of the committed MNIST results (see test_results.py): one cell each."""

from __future__ import annotations

import pytest
from test_results import RESULTS, spot_check

MNIST = [p for p in RESULTS if "mnist" in p.stem]


def test_mnist_results_are_committed():
    assert len(MNIST) >= 4


@pytest.mark.slow
@pytest.mark.parametrize("path", MNIST, ids=[p.stem for p in MNIST])
def test_spot_check_one_mnist_cell_at_full_size(path):
    spot_check(path)
