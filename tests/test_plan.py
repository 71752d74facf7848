"""irn.plan: what a layer decides before it solves. Options checked at construction, the "auto"
rule (irn.plan.auto_solvers) against hand-computed discs, and backward=Adjoint(...), the same
plan as the adjoint_* shorthand keywords."""

from __future__ import annotations

import pytest
import torch
from fields import DT, DeclaredDisc, TanhField

import irn
from irn.layers import Adjoint
from irn.plan import auto_solvers
from irn.scheme import ThetaScheme
from irn.solvers import GMRES, Anderson, FixedPoint, Neumann, NewtonKrylov, registry

#: The registered solvers a declared spectrum sets the damping of (Picard, Anderson, ...).
DAMPED = [name for name, cls in registry("nonlinear").items() if cls.spectral == "damping"]


# ------------------------------------------------------------------ options, at construction
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


# --------------------------------------------------------------------------- the auto rule
def test_auto_solvers_against_hand_computed_discs():
    """θ = h = 1: a disc (center, radius) of ∂F/∂y gives c = 1 − center, ρ = radius."""
    step = ThetaScheme(1.0, 1.0)
    # ρ/c = 0.9/2 ≤ ½, and the boundary ρ/c = 1/2: damped iteration both ways, β = ω = 1/c.
    assert auto_solvers(step, (-1.0, 0.9), {}, {}) == (FixedPoint(0.5), Neumann(0.5))
    assert auto_solvers(step, (-1.0, 1.0), {}, {}) == (FixedPoint(0.5), Neumann(0.5))
    # ρ/c = 0.9/1.2 > ½: Anderson with the declared β (not lazy), GMRES.
    assert auto_solvers(step, (-0.2, 0.9), {}, {}) == (Anderson(damping=1 / 1.2), GMRES())
    # Nothing declared, or a disc that does not contract (c = 0.5 < ρ = 0.6): lazy Anderson
    # estimating its damping, GMRES.
    for disc in ((None, None), (0.5, 0.6)):
        assert auto_solvers(step, disc, {}, {}) == (Anderson(lazy=0.5), GMRES())
    # Options go to the candidates that accept them; the user's values win over the rule's.
    options = {"memory": 8, "damping": 0.3}
    assert auto_solvers(step, (-1.0, 0.9), options, {"restart": 7}) == (
        FixedPoint(0.3),
        Neumann(0.5),
    )
    assert auto_solvers(step, (None, None), {"memory": 8, "lazy": 0.25}, {"restart": 7}) == (
        Anderson(memory=8, lazy=0.25),
        GMRES(7),
    )


def test_auto_uses_the_declared_spectrum():
    stiff = DeclaredDisc(6, center=-1.0, radius=0.9)
    layer = irn.ThetaLayer(stiff, theta=1.0, h=1.0, tol=1e-10)
    # I − θhJ has its spectrum in the disc |z − 2| ≤ 0.9: damping 1/2 contracts by 0.45.
    assert layer.contraction() == pytest.approx(0.45) and layer.damping() == pytest.approx(0.5)
    assert layer.method() == "fixed-point" and layer.adjoint_method() == "fixed-point"
    x = torch.randn(4, 6, dtype=DT, requires_grad=True)
    y = layer(x)
    assert layer.stats.forward.solver == "fixed-point" and layer.stats.converged
    (g,) = torch.autograd.grad(y.square().sum(), x)
    ref = irn.ThetaLayer(stiff, theta=1.0, solver="newton", adjoint_solver="gmres", tol=1e-12)
    (g_ref,) = torch.autograd.grad(ref(x).square().sum(), x)
    torch.testing.assert_close(g, g_ref, rtol=1e-8, atol=1e-10)
    assert layer.stats.backward.solver == "fixed-point"
    # Undeclared or too weakly contracting spectra fall back to Anderson and GMRES.
    plain = irn.ThetaLayer(TanhField(6), theta=1.0)
    assert plain.contraction() is None and plain.damping() == 1.0
    assert plain.method() == "anderson" and plain.adjoint_method() == "gmres"
    weak = irn.ThetaLayer(DeclaredDisc(6, center=-0.2, radius=0.9), theta=1.0)
    assert weak.method() == "anderson"


def test_a_declared_disc_in_the_right_half_plane_gives_damping_above_two():
    """center 0.5, radius 0.4, θh = 1.05: c = 1 − θh·center = 0.475, β = 1/c ≈ 2.1 > 2.
    F(y) = 0.5 y + 0.4 tanh(y) (W = I)."""
    assert {"fixed-point", "anderson"} <= set(DAMPED)
    for solver in ["auto", *DAMPED]:
        field = DeclaredDisc(3, center=0.5, radius=0.4, weight=torch.eye(3))
        layer = irn.ThetaLayer(field, theta=1.0, h=1.05, solver=solver, on_failure="raise")
        assert layer.damping() == pytest.approx(1 / 0.475)
        layer(torch.randn(4, 3, dtype=torch.float64))
        assert layer.stats.converged


def test_spectral_predictor_is_exact_for_linear_fields():
    """With F(y) = c·y the predictor x + hF(x)/(1 − θhc) is the solution: no iteration."""
    layer = irn.ThetaLayer(DeclaredDisc(3, center=-5.0, radius=0.0), theta=0.5, h=0.4, tol=1e-12)
    x = torch.randn(2, 3, dtype=DT)
    y = layer(x)
    assert layer.stats.iterations == 0
    torch.testing.assert_close(y, x * (1 - 0.5 * 2.0) / (1 + 0.5 * 2.0))


def test_auto_solvers_take_the_options_of_the_solver_they_choose():
    """solver_options={"memory": 8} and adjoint_options={"restart": 30} were refused with a
    message about 'fixed-point', a solver the user never chose."""
    plain = irn.ThetaLayer(irn.MLP(3), theta=1.0, h=0.5, solver_options={"memory": 8},
                           adjoint_options={"restart": 30})  # fmt: skip
    assert plain.solver_config().memory == 8  # Anderson, for a field with no declared spectrum
    assert plain.adjoint_config().restart == 30
    declared = irn.ThetaLayer(irn.SpectralNormalized(irn.MLP(3), alpha=-1.0, beta=0.0),
                              theta=1.0, h=0.5, solver_options={"memory": 8})  # fmt: skip
    assert declared.solver_config().name == "fixed-point"  # memory does not apply: unused
    x = torch.randn(4, 3, requires_grad=True)
    plain(x).sum().backward()
    with pytest.raises(ValueError, match=r"solver='auto' chooses among .*unknown \['bogus'\]"):
        irn.ThetaLayer(irn.MLP(3), solver_options={"bogus": 1})
    with pytest.raises(ValueError, match="memory"):
        irn.ThetaLayer(irn.MLP(3), solver_options={"memory": 0})  # still validated


# ----------------------------------------------------------------- backward=Adjoint(...)
SHORTHAND = {"solver": "adjoint_solver", "tol": "adjoint_tol", "max_iter": "adjoint_max_iter",
             "options": "adjoint_options"}  # fmt: skip


@pytest.mark.parametrize(
    "spec",
    [
        {"solver": "gmres", "tol": 1e-9, "max_iter": 80},
        {"solver": "fixed-point", "tol": 1e-10, "max_iter": 60, "options": {"omega": 0.8}},
    ],
    ids=["gmres", "neumann-options"],
)
def test_adjoint_object_is_the_shorthand_keywords(spec):
    """``backward=Adjoint(solver=, tol=, max_iter=, options=)`` and the keywords
    ``adjoint_solver=, adjoint_tol=, ...`` give the same plan, the same gradients bit for bit
    and the same statistics."""
    field = TanhField(4)
    x = torch.randn(5, 4, dtype=DT)
    layers = [
        irn.ThetaLayer(field, theta=1.0, h=1.0, backward=Adjoint(**spec)),
        irn.ThetaLayer(field, theta=1.0, h=1.0, **{SHORTHAND[k]: v for k, v in spec.items()}),
    ]
    runs = []
    for layer in layers:
        assert layer.backward == "adjoint" and layer.adjoint_solver == spec["solver"]
        assert (layer.adjoint_tol, layer.adjoint_max_iter) == (spec["tol"], spec["max_iter"])
        field.zero_grad()
        xi = x.clone().requires_grad_(True)
        y, stats = layer(xi, return_stats=True)
        y.square().sum().backward()
        runs.append((y.detach(), xi.grad, field.W.grad.clone(), field.c.grad.clone(), stats))
    assert (
        layers[0].plan(layers[0].step(), 1e-6).backward
        == layers[1].plan(layers[1].step(), 1e-6).backward
    )
    (*a, sa), (*b, sb) = runs
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    for s, t in ((sa.forward, sb.forward), (sa.backward, sb.backward)):
        assert (s.solver, s.iterations, s.evaluations, s.tol) == (
            t.solver,
            t.iterations,
            t.evaluations,
            t.tol,
        )
        assert torch.equal(s.residuals, t.residuals) and s.history == t.history
    assert sa.backward.solver == spec["solver"] and sa.backward.tol == spec["tol"]
    assert sa.backward_converged and sa.backward_iterations >= 1


@pytest.mark.parametrize(
    "shorthand",
    [
        {"adjoint_solver": "gmres"},
        {"adjoint_tol": 1e-9},
        {"adjoint_max_iter": 80},
        {"adjoint_options": {"restart": 5}},
    ],
    ids=lambda d: next(iter(d)),
)
def test_adjoint_object_and_shorthand_keywords_together_raise(shorthand):
    (key,) = shorthand
    backward = Adjoint(solver="gmres", tol=1e-9, max_iter=80)
    match = rf"already says how to solve the adjoint; pass \['{key}'\]"
    with pytest.raises(ValueError, match=match):
        irn.ThetaLayer(TanhField(2), backward=backward, **shorthand)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"tol": 0.0}, r"adjoint_tol must be a finite number"),
        ({"max_iter": 2.5}, r"adjoint_max_iter must be an int"),
        ({"solver": "cg"}, r"unknown adjoint_solver 'cg'"),
        ({"options": {"restrat": 5}}, r"adjoint_solver='auto' .* accept.*restrat"),
        ({"solver": "gmres", "options": {"restart": 0}}, r"restart must be an int >= 1"),
    ],
)
def test_adjoint_object_validates_itself(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Adjoint(**kwargs)
