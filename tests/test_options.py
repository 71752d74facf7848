"""Options are checked when a layer is built; shared state never crosses threads; models
pickle; the README's snippet runs (issue 7)."""

from __future__ import annotations

import pickle
import re
import threading
from pathlib import Path

import pytest
import torch
from conftest import TanhField
from torch import nn

import irn
from irn.solvers import GMRES, Anderson, NewtonKrylov


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"solver": "newton", "solver_options": {"memory": 8}}, r"accepts the options.*memory"),
        ({"solver": "anderson", "solver_options": {"tol": 1e-3}}, r"pass tol= to the layer"),
        ({"solver_options": {"max_iter": 3}}, r"pass max_iter= to the layer"),
        ({"solver": "anderson", "solver_options": {"memory": 2.5}}, r"memory must be an int"),
        ({"solver": "anderson", "solver_options": {"damping": -1.0}}, r"damping must be"),
        ({"solver": "fixed-point", "solver_options": {"damping": float("inf")}}, r"damping must"),
        ({"solver_options": {"restart": 8}}, r"solver='auto' chooses among .*restart"),
        ({"solver_options": {"memory": 0}}, r"memory must be"),
        ({"adjoint_options": {"restrat": 5}}, r"adjoint_solver='auto' .* accept.*restrat"),
        ({"adjoint_solver": "gmres", "adjoint_options": {"tol": 1}}, r"pass adjoint_tol="),
        ({"solver": "broyden"}, r"unknown solver 'broyden'"),
        ({"h": float("inf")}, r"h must be finite"),
        ({"h": float("nan")}, r"h must be finite"),
        ({"tol": float("inf")}, r"tol must be a finite number"),
        ({"tol": 0.0}, r"tol must be a finite number"),
        ({"max_iter": 2.5}, r"max_iter must be an int"),
        ({"adjoint_max_iter": 0}, r"adjoint_max_iter must be an int"),
        ({"theta": 1.5}, r"theta must lie in \[0, 1\]"),
        ({"solver": NewtonKrylov(), "solver_options": {"memory": 3}}, r"inside NewtonKrylov"),
        ({"solver": GMRES()}, r"is not one of"),
    ],
)
def test_bad_options_raise_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        irn.ThetaLayer(TanhField(2), **kwargs)


def test_configuration_objects_validate_themselves():
    with pytest.raises(ValueError, match="memory must be an int >= 1"):
        Anderson(memory=0)
    layer = irn.ThetaLayer(TanhField(3), solver=Anderson(memory=3), adjoint_solver=GMRES(9))
    assert layer.method() == "anderson" and layer.solver_config().memory == 3
    assert layer.adjoint_config().restart == 9
    layer(torch.randn(4, 3, dtype=torch.float64)).sum().backward()
    assert layer.stats.converged and layer.stats.backward_converged


def test_a_declared_disc_in_the_right_half_plane_gives_damping_above_two():
    """center 0.5, radius 0.4, θh = 1.05: c = 1 − θh·center = 0.475, β = 1/c ≈ 2.1 > 2."""

    class Declared(nn.Module):
        center, radius = 0.5, 0.4

        def forward(self, t, y):
            return 0.5 * y + 0.4 * torch.tanh(y)

    for solver in ("auto", "fixed-point", "anderson"):
        layer = irn.ThetaLayer(Declared(), theta=1.0, h=1.05, solver=solver, on_failure="raise")
        assert layer.damping() == pytest.approx(1 / 0.475)
        layer(torch.randn(4, 3, dtype=torch.float64))
        assert layer.stats.converged


def test_a_field_returning_a_tuple_gets_a_plain_message():
    class Tuple(nn.Module):
        def forward(self, t, y):
            return (y, y)

    with pytest.raises(ValueError, match="the field returned a tuple, not a tensor"):
        irn.ThetaLayer(Tuple())(torch.randn(2, 3))


def test_implicit_resnet_names_codim_when_the_field_does_not_fit():
    net = irn.ImplicitResNet(irn.MLP(2, 8), steps=2, codim=1)
    with pytest.raises(ValueError, match=r"codim=1.*irn.MLP\(dim=3\)"):
        net(torch.randn(4, 2))
    irn.ImplicitResNet(irn.MLP(3, 8), steps=2, codim=1)(torch.randn(4, 2))


def test_stats_never_cross_threads():
    layer = irn.ThetaLayer(TanhField(3), theta=1.0, tol=1e-10)
    inputs = {i: torch.randn(2 + i, 3, dtype=torch.float64) for i in range(4)}
    errors = []

    def work(i):
        for _ in range(25):
            _, own = layer(inputs[i], return_stats=True)
            seen = layer.stats
            if seen is not own or seen.forward.residuals.shape[0] != 2 + i:
                errors.append(i)

    threads = [threading.Thread(target=work, args=(i,)) for i in inputs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_random_theta_and_h_never_write_layer_attributes():
    net = irn.ImplicitResNet(TanhField(3), steps=4, random_theta=(0.2, 1.0), random_h=(0.5, 1.5))
    before = [(layer.theta, layer.h) for layer in net.layers]

    def work():
        for _ in range(20):
            net(torch.randn(3, 3, dtype=torch.float64))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [(layer.theta, layer.h) for layer in net.layers] == before
    with pytest.raises(AttributeError):
        net.layers[0].h = 2.0  # θ and h are read-only; pass them per call instead


def _spectral_model():
    field = irn.SpectralNormalized(irn.ConvField(2, width=3, input_shape=(5, 5)), -2.0, 0.5)
    return irn.ImplicitResNet(field, steps=2, output_map=nn.Flatten())


def test_spectrally_normalized_models_pickle_and_torch_save(tmp_path):
    torch.manual_seed(3)
    model = irn.ImplicitResNet(
        irn.SpectralNormalized(irn.MLP(3, 8), -1.0, 0.5), steps=2, output_map=nn.Linear(3, 2)
    )
    conv = _spectral_model()
    for m, x in ((model, torch.randn(4, 3)), (conv, torch.randn(2, 2, 5, 5))):
        m.eval()
        expected = m(x)
        clone = pickle.loads(pickle.dumps(m))
        torch.testing.assert_close(clone(x), expected, rtol=0, atol=0)
        path = tmp_path / "model.pt"
        torch.save(m, path)
        loaded = torch.load(path, weights_only=False)
        torch.testing.assert_close(loaded(x), expected, rtol=0, atol=0)
        # The clone is a working, still parametrized model: training updates its estimate.
        loaded.train()
        loaded(x).sum().backward()
        assert irn.spectral.power_iterate(loaded) > 0


def test_the_readme_snippet_runs():
    text = (Path(__file__).parents[1] / "README.md").read_text()
    section = text.split("## Using the library", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 2  # the quick tour and the drop-in example, run in one namespace
    namespace: dict = {}
    for code in blocks:
        exec(compile(code, "README.md", "exec"), namespace)


@pytest.mark.parametrize(
    "module,call",
    [
        ("sklearn", lambda: irn.data.digits()),
        ("scipy", lambda: irn.data.lotka_volterra(n_times=3)),
    ],
)
def test_the_data_extra_is_named_when_missing(monkeypatch, module, call):
    for name in [m for m in list(__import__("sys").modules) if m.split(".")[0] == module]:
        monkeypatch.delitem(__import__("sys").modules, name)
    monkeypatch.setitem(__import__("sys").modules, module, None)  # import fails
    with pytest.raises(ImportError, match=r"pip install 'irn\[data\]'"):
        call()


def test_license_metadata():
    from importlib.metadata import metadata

    root = Path(__file__).parents[1]
    assert (root / "LICENSE").read_text().startswith("MIT License")
    meta = metadata("irn")
    assert meta.get("License-Expression") == "MIT" or "MIT" in (meta.get("License") or "")
