"""Tests of irn.spectral: power-iteration spectral norm of Linear and convolution operators."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from irn.spectral import (
    SpectralNorm,
    apply_spectral_norm,
    frozen,
    is_frozen,
    operator_norm,
    power_iterate,
    spectral_normalize,
)

DT = torch.float64


def dense_matrix(layer: nn.Module, input_shape: tuple[int, ...]) -> torch.Tensor:
    """Matrix of a bias-free layer on inputs of shape ``input_shape``, column j = layer(e_j)."""
    n = 1
    for s in input_shape:
        n *= s
    basis = torch.eye(n, dtype=DT).reshape(n, *input_shape)
    with torch.no_grad():
        return layer(basis).reshape(n, -1).T


def spectral_params(module: nn.Module) -> list[SpectralNorm]:
    return [m for m in module.modules() if isinstance(m, SpectralNorm)]


def buffers(module: nn.Module) -> list[torch.Tensor]:
    return [p._v.clone() for p in spectral_params(module)]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_linear_spectral_norm_is_one() -> None:
    torch.manual_seed(0)
    layer = spectral_normalize(nn.Linear(7, 5).to(DT))
    power_iterate(layer, 500)
    layer.eval()
    assert torch.linalg.matrix_norm(layer.weight, 2).item() == pytest.approx(1.0, abs=1e-3)
    # the raw weight is untouched and the normalized one is W / ‖W‖₂
    raw = layer.parametrizations.weight.original
    torch.testing.assert_close(layer.weight, raw / torch.linalg.matrix_norm(raw, 2))


def test_warmup_gives_meaningful_estimate_at_first_forward() -> None:
    torch.manual_seed(1)
    layer = spectral_normalize(nn.Linear(16, 16).to(DT)).eval()
    assert torch.linalg.matrix_norm(layer.weight, 2).item() == pytest.approx(1.0, abs=2e-2)
    cold = spectral_normalize(nn.Linear(16, 16).to(DT), warmup=0).eval()
    assert torch.linalg.matrix_norm(cold.weight, 2).item() > 1.05  # σ̂ = ‖W v₀‖ underestimates


CONV_CASES = [
    # (layer, input shape): the 'same' case is the one of the brief; the others add strides,
    # circular padding, an even kernel and a 1-d convolution.
    (lambda: nn.Conv2d(2, 3, 3, padding="same", bias=False), (2, 5, 5)),
    (lambda: nn.Conv2d(2, 2, 3, stride=2, padding=1, bias=False), (2, 6, 6)),
    (lambda: nn.Conv2d(2, 2, 4, padding="same", padding_mode="circular", bias=False), (2, 5, 5)),
    (lambda: nn.Conv1d(3, 2, 5, padding=2, bias=False), (3, 8)),
]


@pytest.mark.parametrize("make,shape", CONV_CASES)
def test_conv_operator_norm_is_one(make, shape) -> None:
    torch.manual_seed(2)
    conv = spectral_normalize(make().to(DT), input_shape=shape[1:])
    power_iterate(conv, 500)
    conv.eval()
    sigma = torch.linalg.matrix_norm(dense_matrix(conv, shape), 2).item()
    assert sigma == pytest.approx(1.0, abs=1e-3)


def test_conv_kernel_reshape_would_be_wrong() -> None:
    """Normalizing the reshaped (out, in·k·k) kernel, as torch's spectral_norm does for Conv2d,
    does not give a unit operator norm on a 5×5 image; ours does (the test tells them apart)."""
    torch.manual_seed(3)
    shape = (2, 5, 5)
    base = nn.Conv2d(2, 2, 3, padding="same", bias=False).to(DT)
    ours = spectral_normalize(copy.deepcopy(base), input_shape=shape[1:])
    power_iterate(ours, 500)
    ours.eval()
    kernel = torch.nn.utils.parametrizations.spectral_norm(
        copy.deepcopy(base), n_power_iterations=500
    )
    kernel(torch.zeros(1, *shape, dtype=DT))  # one training-mode call runs its 500 iterations
    kernel.eval()
    w = kernel.weight.detach()
    assert torch.linalg.matrix_norm(w.reshape(2, -1), 2).item() == pytest.approx(1.0, abs=1e-6)
    ours_sigma = torch.linalg.matrix_norm(dense_matrix(ours, shape), 2).item()
    kernel_sigma = torch.linalg.matrix_norm(dense_matrix(kernel, shape), 2).item()
    assert ours_sigma == pytest.approx(1.0, abs=1e-3)
    assert abs(kernel_sigma - 1.0) > 0.1
    # and the kernel matrix of our normalized weight is not of norm one either
    assert abs(torch.linalg.matrix_norm(ours.weight.reshape(2, -1), 2).item() - 1.0) > 0.1


def test_lazy_input_shape_and_shape_change() -> None:
    torch.manual_seed(4)
    conv = spectral_normalize(nn.Conv2d(2, 2, 3, padding=1, bias=False).to(DT))
    (sn,) = spectral_params(conv)
    assert sn.input_shape is None
    with pytest.raises(RuntimeError, match="input shape"):
        _ = conv.weight
    conv.train()
    for shape in [(2, 5, 5), (2, 3, 4)]:
        conv(torch.randn(1, *shape, dtype=DT))
        assert sn.input_shape == shape
        power_iterate(conv, 500)
        conv.eval()
        sigma = torch.linalg.matrix_norm(dense_matrix(conv, shape), 2).item()
        assert sigma == pytest.approx(1.0, abs=1e-3)
        conv.train()
    conv(torch.randn(2, 3, 4, dtype=DT))  # unbatched input of the same shape: no change
    assert sn.input_shape == (2, 3, 4)


def test_input_shape_validation_and_types() -> None:
    with pytest.raises(ValueError, match="input_shape"):
        spectral_normalize(nn.Conv2d(2, 2, 3), input_shape=(3, 5, 5))
    with pytest.raises(TypeError):
        spectral_normalize(nn.ConvTranspose2d(2, 2, 3))
    layer = spectral_normalize(nn.Linear(3, 3))
    with pytest.raises(ValueError, match="already"):
        spectral_normalize(layer)
    with pytest.raises(ValueError, match="n_power_iterations"):
        spectral_normalize(nn.Linear(3, 3), n_power_iterations=-1)


def test_apply_spectral_norm_covers_all_layers_once() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3))
    apply_spectral_norm(model, input_shape=(4, 4))
    apply_spectral_norm(model)  # idempotent
    assert len(spectral_params(model)) == 2
    assert model(torch.randn(5, 1, 4, 4)).shape == (5, 3)


def test_freezing_train_eval_nesting_and_exceptions() -> None:
    torch.manual_seed(5)
    model = nn.Sequential(
        nn.Linear(4, 6), nn.Tanh(), nn.Unflatten(1, (1, 6)), nn.Conv1d(1, 1, 3, padding=1)
    )
    apply_spectral_norm(model)
    x = torch.randn(3, 4)
    model.train()
    model(x)  # sets the conv's input shape
    before = buffers(model)
    with frozen(model):
        assert is_frozen(model)
        for _ in range(3):
            model(x)
        assert same(before, buffers(model))
        with frozen(model):  # nesting
            model[0](x)
        assert is_frozen(model)
        model[0](x)
        assert same(before, buffers(model))
        with pytest.raises(RuntimeError, match="frozen"):
            power_iterate(model, 1)
    assert not is_frozen(model)
    model(x)
    after = buffers(model)
    assert not any(
        torch.equal(b, a) for b, a in zip(before, after, strict=True)
    )  # train, not frozen: updates

    model.eval()
    before = buffers(model)
    for _ in range(3):
        model(x)
    assert same(before, buffers(model))

    model.train()
    with pytest.raises(KeyError), frozen(model):
        raise KeyError("solver failed")
    assert not is_frozen(model)
    assert all(p._freeze_depth == 0 for p in spectral_params(model))


def test_backward_after_further_training_forwards() -> None:
    """The graph keeps a copy of v: a later in-place update must not break backward."""
    layer = spectral_normalize(nn.Linear(3, 3)).train()
    out = layer(torch.randn(2, 3)).sum()
    layer(torch.randn(2, 3))  # updates v in place
    out.backward()
    assert layer.parametrizations.weight.original.grad is not None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtypes_and_state_dict_roundtrip(dtype) -> None:
    torch.manual_seed(6)
    conv = spectral_normalize(nn.Conv2d(2, 2, 3, padding=1)).to(dtype)
    x = torch.randn(2, 2, 5, 5, dtype=dtype)
    for _ in range(3):
        conv(x)
    assert conv(x).dtype == dtype
    fresh = spectral_normalize(nn.Conv2d(2, 2, 3, padding=1)).to(dtype)  # lazy, shape unknown
    fresh.load_state_dict(conv.state_dict())
    conv.eval()
    fresh.eval()
    assert torch.equal(conv(x), fresh(x))


def test_operator_norm_matches_dense() -> None:
    torch.manual_seed(7)
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1, bias=False).to(DT)
    dense = torch.linalg.matrix_norm(dense_matrix(conv, (2, 6, 6)), 2)
    est = operator_norm(conv, (1, 2, 6, 6), iters=300, dtype=DT)
    torch.testing.assert_close(est, dense.detach(), rtol=1e-6, atol=0)
