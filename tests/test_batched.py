"""irn.solvers._batched: the row-wise products, both kernels, against einsum."""

from __future__ import annotations

import pytest
import torch
from fields import DT

from irn.solvers._batched import combine, gram, project


@pytest.mark.parametrize("n", [3, 64, 300])  # both kernels: broadcast below 256, bmm from it
def test_batched_products_match_einsum(n):
    V, W = torch.randn(5, 4, n, dtype=DT), torch.randn(5, 2, n, dtype=DT)
    w, c = torch.randn(5, n, dtype=DT), torch.randn(5, 4, dtype=DT)
    torch.testing.assert_close(project(V, w), torch.einsum("bkn,bn->bk", V, w))
    torch.testing.assert_close(combine(c, V), torch.einsum("bk,bkn->bn", c, V))
    torch.testing.assert_close(gram(W, V), torch.einsum("bpn,bkn->bpk", W, V))
