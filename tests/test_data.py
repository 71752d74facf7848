"""Tests for irn.data: shapes, determinism, physics of the ODE data, IDX I/O and noise, and the
message naming the ``data`` extra when its packages are missing."""

from __future__ import annotations

import gzip
import math
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import irn
from irn import data

MnistLike = tuple[np.ndarray, np.ndarray]


# ------------------------------------------------------------------------------- Lotka–Volterra
def test_lotka_volterra_shapes_and_paper_grid() -> None:
    t, z = data.lotka_volterra()
    assert t.shape == (51,) and z.shape == (14, 51, 2)
    assert t.dtype == z.dtype == torch.float32
    assert torch.allclose(torch.diff(t), torch.full((50,), 0.2))
    ics = torch.tensor([[1.0, 0.5 + 0.1 * k] for k in range(14)])
    assert torch.allclose(z[:, 0], ics)


def test_lotka_volterra_conserves_first_integral() -> None:
    _, z = data.lotka_volterra(dtype=torch.float64)
    v = data.lotka_volterra_invariant(z)
    drift = (v - v[:, :1]).abs().max().item()
    assert drift < 1e-5


def test_lotka_volterra_field_matches_equations_numpy_and_torch() -> None:
    z = np.array([[1.3, 0.7], [0.4, 2.0]])
    expected = np.stack(
        (2 / 3 * z[:, 0] - 4 / 3 * z[:, 0] * z[:, 1], z[:, 0] * z[:, 1] - z[:, 1]), -1
    )
    np.testing.assert_allclose(data.lotka_volterra_field(0.0, z), expected)
    out = data.lotka_volterra_field(0.0, torch.from_numpy(z))
    assert isinstance(out, torch.Tensor)
    np.testing.assert_allclose(out.numpy(), expected)


def test_lotka_volterra_split_is_odd_train_even_validation() -> None:
    split = data.lotka_volterra_split(dtype=torch.float64)
    assert split.train.shape == split.validation.shape == (7, 51, 2)
    assert torch.allclose(split.train[:, 0, 1], 0.5 + 0.1 * torch.arange(1, 14, 2).double())
    assert torch.allclose(split.validation[:, 0, 1], 0.5 + 0.1 * torch.arange(0, 14, 2).double())


def test_lotka_volterra_custom_grid_and_bad_tolerance() -> None:
    t, z = data.lotka_volterra([[1.0, 1.0]], t_final=2.0, n_times=5)
    assert t.shape == (5,) and z.shape == (1, 5, 2)
    with pytest.raises(ValueError, match="rtol"):
        data.lotka_volterra(rtol=1e-3)


# ---------------------------------------------------------------------------------- stiff ODE
def test_stiff_ode_shapes_ranges_and_first_sample() -> None:
    t0, t, y = data.stiff_ode(50, seed=3)
    assert t0.shape == (50,) and t.shape == (50, 21) and y.shape == (50, 21, 1)
    assert t0[0] == 0 and y[0, 0, 0] == 0
    assert bool(((t0 >= 0) & (t0 <= 2)).all())
    assert bool(((y[:, 0, 0] >= -0.5) & (y[:, 0, 0] <= 1.5)).all())
    assert torch.allclose(t - t0[:, None], torch.linspace(0, 2, 21).expand(50, 21), atol=1e-6)


def test_stiff_ode_determinism_and_generator() -> None:
    a, b = data.stiff_ode(10, seed=7), data.stiff_ode(10, seed=7)
    c = data.stiff_ode(10, seed=8)
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])
    g = torch.Generator().manual_seed(7)
    d = data.stiff_ode(10, generator=g)
    assert torch.equal(a[0], d[0])
    # float32 is the float64 draw, rounded: same seed, same data in every dtype
    e = data.stiff_ode(10, seed=7, dtype=torch.float64)
    assert torch.allclose(e[2].float(), a[2])


def test_stiff_ode_closed_form_matches_solve_ivp() -> None:
    _, t, y = data.stiff_ode(5, seed=1, dtype=torch.float64)
    for i in range(5):
        sol = solve_ivp(
            data.stiff_ode_field,
            (t[i, 0].item(), t[i, -1].item()),
            y[i, 0].numpy(),
            method="Radau",
            t_eval=t[i].numpy(),
            rtol=1e-11,
            atol=1e-13,
        )
        assert sol.success
        np.testing.assert_allclose(sol.y[0], y[i, :, 0].numpy(), atol=1e-8)


def test_stiff_ode_solution_satisfies_ode() -> None:
    t = torch.linspace(0.3, 2.0, 11, dtype=torch.float64, requires_grad=True)
    y = data.stiff_ode_solution(t, torch.tensor(0.3, dtype=torch.float64), 1.2)
    (dy,) = torch.autograd.grad(y.sum(), t)
    torch.testing.assert_close(dy, data.stiff_ode_field(t, y).detach())
    assert math.isclose(y[0].item(), 1.2, abs_tol=1e-14)


# ------------------------------------------------------------------------- sine and spirals
def test_sine_regression_values() -> None:
    x, y = data.sine_regression()
    assert x.shape == y.shape == (20, 1) and x.dtype == torch.float32
    assert x[0].item() == -5.0 and x[-1].item() == 5.0
    torch.testing.assert_close(y, torch.sin(x))
    xv, _ = data.sine_regression(40, dtype=torch.float64)
    assert xv.shape == (40, 1) and xv.dtype == torch.float64


def test_two_spirals_balanced_labels_and_geometry() -> None:
    x, y = data.two_spirals(400, dtype=torch.float64)
    assert x.shape == (400, 2) and y.shape == (400,) and y.dtype == torch.long
    assert (y == 0).sum() == (y == 1).sum() == 200
    r = x.norm(dim=1)
    assert math.isclose(r.max().item(), 6.5) and math.isclose(r.min().item(), 0.5)
    # class 1 is the point reflection of class 0
    torch.testing.assert_close(x[y == 1], -x[y == 0])
    # radius decreases linearly while the angle makes 3 turns
    torch.testing.assert_close(r[:200], torch.linspace(6.5, 0.5, 200, dtype=torch.float64))
    angle = torch.atan2(x[:200, 0], x[:200, 1])
    assert (torch.diff(angle) < -math.pi).sum() == 3  # wraps from +π to −π once per turn


def test_two_spirals_classic_benchmark_and_noise() -> None:
    x, _ = data.two_spirals(194, dtype=torch.float64)
    i = torch.arange(97, dtype=torch.float64)
    r, phi = 6.5 * (104 - i) / 104, i * math.pi / 16
    torch.testing.assert_close(x[:97], torch.stack((r * phi.sin(), r * phi.cos()), 1))
    a, _ = data.two_spirals(50, noise=0.1, seed=1)
    b, _ = data.two_spirals(50, noise=0.1, seed=1)
    c, _ = data.two_spirals(50, noise=0.1, seed=2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    x_odd, y_odd = data.two_spirals(7)
    assert x_odd.shape == (7, 2) and (y_odd == 0).sum() == 4


# ---------------------------------------------------------------------------------- digits
def test_digits_count_range_and_determinism() -> None:
    split = data.digits(test_fraction=0.25, seed=0)
    assert len(split.y_train) + len(split.y_test) == 1797
    assert split.x_train.shape[1:] == (1, 8, 8) and split.x_train.dtype == torch.float32
    assert split.y_train.dtype == torch.long
    both = torch.cat((split.x_train, split.x_test))
    assert both.min() == 0.0 and both.max() == 1.0
    assert set(torch.cat((split.y_train, split.y_test)).tolist()) == set(range(10))
    again = data.digits(test_fraction=0.25, seed=0)
    assert torch.equal(split.y_test, again.y_test)
    other = data.digits(test_fraction=0.25, seed=1)
    assert not torch.equal(split.y_test, other.y_test)
    small = data.digits(n_train=100, seed=0, test_fraction=0.25)
    assert len(small.y_train) == 100 and torch.equal(small.x_train, split.x_train[:100])
    with pytest.raises(ValueError, match="n_train"):
        data.digits(n_train=0)


# ------------------------------------------------------------------------------------- IDX
def _write_idx(
    path: Path, array: np.ndarray, type_code: int = 0x08, compress: bool = False
) -> Path:
    header = struct.pack(">BBBB", 0, 0, type_code, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


@pytest.fixture
def mnist_like() -> MnistLike:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (5, 28, 28), dtype=np.uint8), np.array([3, 1, 4, 1, 5], np.uint8)


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_idx_roundtrip(tmp_path: Path, mnist_like: MnistLike, compress: bool) -> None:
    images, labels = mnist_like
    suffix = ".gz" if compress else ""
    ip = _write_idx(tmp_path / f"images-idx3-ubyte{suffix}", images, compress=compress)
    lp = _write_idx(tmp_path / f"labels-idx1-ubyte{suffix}", labels, compress=compress)
    assert ip.read_bytes()[:4] == (b"\x1f\x8b\x08\x00" if compress else b"\x00\x00\x08\x03")
    x, y = data.mnist_from_idx(ip, lp)
    assert x.shape == (5, 1, 28, 28) and x.dtype == torch.float32
    assert y.dtype == torch.long and y.tolist() == [3, 1, 4, 1, 5]
    np.testing.assert_allclose(x[:, 0].numpy(), images / 255.0, rtol=1e-6)
    assert x.min() >= 0.0 and x.max() <= 1.0
    x3, y3 = data.mnist_from_idx(str(ip), str(lp), limit=3)
    assert x3.shape[0] == y3.shape[0] == 3


def test_read_idx_other_types(tmp_path: Path) -> None:
    a = np.arange(12, dtype=np.float64).reshape(3, 4) / 7
    out = data.read_idx(_write_idx(tmp_path / "f.idx", a, type_code=0x0E))
    assert out.dtype == torch.float64 and torch.equal(out, torch.from_numpy(a))
    b = np.array([-3, 0, 70000], dtype=np.int32)
    out = data.read_idx(_write_idx(tmp_path / "i.idx", b, type_code=0x0C))
    assert out.dtype == torch.int32
    assert out.tolist() == [-3, 0, 70000]


def test_idx_errors_name_the_file(tmp_path: Path, mnist_like: MnistLike) -> None:
    images, labels = mnist_like
    ip = _write_idx(tmp_path / "img", images)
    lp = _write_idx(tmp_path / "lbl", labels)

    bad_magic = tmp_path / "bad_magic"
    bad_magic.write_bytes(b"\x12\x34" + ip.read_bytes()[2:])
    with pytest.raises(ValueError, match=r"bad_magic.*magic"):
        data.read_idx(bad_magic)

    truncated = tmp_path / "truncated"
    truncated.write_bytes(ip.read_bytes()[:-10])
    with pytest.raises(ValueError, match=r"truncated.*size mismatch"):
        data.read_idx(truncated)

    cut_gz = tmp_path / "cut.gz"
    cut_gz.write_bytes(gzip.compress(ip.read_bytes())[:40])
    with pytest.raises(ValueError, match=r"cut\.gz.*gzip"):
        data.read_idx(cut_gz)
    garbled = bytearray(gzip.compress(ip.read_bytes()))
    garbled[20:40] = b"\xff" * 20
    garbled_gz = tmp_path / "garbled.gz"
    garbled_gz.write_bytes(bytes(garbled))
    with pytest.raises(ValueError, match=r"garbled\.gz.*gzip"):
        data.read_idx(garbled_gz)

    with pytest.raises(ValueError, match=r"lbl.*0x00000803"):
        data.mnist_from_idx(lp, lp)  # labels passed as images
    with pytest.raises(ValueError, match=r"img.*0x00000801"):
        data.mnist_from_idx(ip, ip)
    few = _write_idx(tmp_path / "few", labels[:4])
    with pytest.raises(ValueError, match=r"5 images.*4 labels"):
        data.mnist_from_idx(ip, few)


# ----------------------------------------------------------------------------------- noise
def test_add_gaussian_noise_statistics_and_determinism() -> None:
    x = torch.full((200_000,), 0.5, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    noisy = data.add_gaussian_noise(x, 0.3, generator=g)
    eps = noisy - x
    assert abs(eps.mean().item()) < 3e-3 and abs(eps.std().item() - 0.3) < 3e-3
    again = data.add_gaussian_noise(x, 0.3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(noisy, again)
    assert torch.equal(x, torch.full_like(x, 0.5))  # input untouched


def test_add_gaussian_noise_clamp_zero_std_and_errors() -> None:
    x = torch.rand(1000, generator=torch.Generator().manual_seed(1))
    clamped = data.add_gaussian_noise(x, 1.0, clamp=(0.0, 1.0))
    assert clamped.min() >= 0.0 and clamped.max() <= 1.0
    assert (clamped == 0).any() and (clamped == 1).any()
    same = data.add_gaussian_noise(x, 0.0)
    assert torch.equal(same, x) and same.data_ptr() != x.data_ptr()
    with pytest.raises(ValueError, match="non-negative"):
        data.add_gaussian_noise(x, -0.1)
    with pytest.raises(ValueError, match="clamp"):
        data.add_gaussian_noise(x, 0.1, clamp=(1.0, 0.0))
    with pytest.raises(TypeError):
        data.add_gaussian_noise(torch.arange(3), 0.1)


def test_generators_return_requested_dtype() -> None:
    for dtype in (torch.float32, torch.float64):
        assert data.lotka_volterra([[1.0, 0.5]], n_times=3, dtype=dtype)[1].dtype == dtype
        assert data.stiff_ode(2, dtype=dtype)[2].dtype == dtype
        assert data.sine_regression(3, dtype=dtype)[1].dtype == dtype
        assert data.two_spirals(4, dtype=dtype)[0].dtype == dtype
    with pytest.raises(ValueError, match="floating"):
        data.sine_regression(3, dtype=torch.int64)


# ------------------------------------------------------------------------------ the data extra
@pytest.mark.parametrize(
    "module,call",
    [
        ("sklearn", lambda: irn.data.digits()),
        ("scipy", lambda: irn.data.lotka_volterra(n_times=3)),
    ],
)
def test_the_data_extra_is_named_when_missing(monkeypatch, module, call):
    for name in [m for m in list(sys.modules) if m.split(".")[0] == module]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)  # import fails
    with pytest.raises(ImportError, match=r"pip install 'irn\[data\]'"):
        call()
