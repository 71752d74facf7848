"""Divergence regularization against θ on the paper's 1D regression (paper-notes §4.1, §1.5).

A network ``x ↦ (y_T)_2`` maps the augmented input ``y_0 = (x, 0)`` by T = 5 θ-steps of size
h = 1 of one shared field F and reads off the last component; it is fitted to sin x on 20
points of [−5, 5] with the data loss plus the paper's trajectory regularizer

    α_div/(dT) · Σ_{t=0}^{T} (t/T)^p · mean_b ∇·F(y_t),    p = 2, d = 2,

(:func:`irn.regularizers.trajectory_regularizer`, Hutchinson probes, through
:func:`irn.train.fit`). The paper reports (paper-notes §4.1, from the reference code's sheets):

1. as α_div grows, the image of the input band ±0.2 contracts onto the target curve;
2. with strong regularization θ = 0 trajectories turn jagged and oscillatory, θ ≥ ½ stay smooth;
3. the nonlinear iterations per implicit step grow with θ and with α_div.

This module measures each claim for every (θ, α_div, seed). The *input band* is read as the
strip ``{(x, z): |z| ≤ band}`` around the input line in the augmented state space; its image's
width per unit of input width (``band_ratio``) is 1 where perturbations pass unchanged and 0
where they collapse. Oscillation is measured on the trajectories of the training inputs: the
fraction of successive increments ``y_{k+1} − y_k`` that reverse direction (negative inner
product), and, as the mechanism, the fraction of step factors R(hλ) of the linearized steps
with negative real part (a mode that flips sign every step). Iterations are those of the
trained network's forward solves on the training inputs (the solver is ``Config.solver``;
the paper used L-BFGS).

Differences from the paper's run, and why. The paper's penalty is linear in the divergence, so
for every θ it is unbounded below over unconstrained fields: for θ ≥ ½ a field that attracts
stiffly to the target curve fits the data with a divergence as negative as one likes while the
implicit steps stay stable; for θ = 0 the same needs fields that vanish on the data and are
unstable off it (chapter 6 builds both). The reference code's 1D script bounds it with a
Jacobian term α_jac·‖∂F/∂y‖²_F (α_jac = 0.1; ‖J‖²_F ≥ (tr J)²/d bounds the sum below), which
:class:`irn.train.TrainConfig` has no weight for; here the field is F^{α,β}
(:class:`irn.SpectralNormalized`, tanh MLP of the paper's size, band [α, β] = [−3, 3] by
default), whose eigenvalues stay in the disc of radius 3 around 0, so the divergence is bounded
and the explicit step can still leave its stability disc (h·λ < −2). ``field="mlp"`` trains the
unconstrained MLP instead (in trial runs with α_div ≥ 1, lr 1e-2 and a GELU MLP, its weighted
divergence fell below −50 within 300 epochs for θ = ½ and 1, and the solves stopped
converging). Training is Adam at lr 1e-2 for 200 epochs (``FULL``; the paper: lr 1e-3, 3000
epochs with a plateau schedule).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..data import sine_regression
from ..fields import MLP, SpectralNormalized, make_activation
from ..models import ImplicitResNet
from ..regularizers import trajectory_regularizer
from ..solvers import registry
from ..stability import trajectory_spectrum
from ..train import TrainConfig, evaluate, fit
from . import check_config, envelope, finish, meta
from .cells import Partial, run_cells

__all__ = ["DESCRIPTION", "FULL", "Config", "LastComponent", "build_model", "flow", "run"]

DESCRIPTION = "divergence regularization vs theta on the 1D sine regression (paper-notes §4.1)"

FIELDS = ("mlp", "spectral")
SCHEMES = ("linear", "one-leg")
SOLVERS = ("auto", *registry("nonlinear"))  # every registered solver


def _known_activation(name: str) -> bool:
    try:
        make_activation(name)
    except ValueError:
        return False
    return True


@dataclass
class Config:
    """Reduced configuration (the book's live run); :data:`FULL` gives the serious one."""

    seeds: int = 1  # independent runs per (θ, α_div) (seeds 0 .. seeds-1: weights and probes)
    thetas: tuple[float, ...] = (1.0,)  # θ of every step, each in [0, 1]
    alpha_divs: tuple[float, ...] = (0.0, 1.0)  # weights α_div of the divergence term, >= 0
    p: float = 2.0  # step weights (t/T)^p of the divergence term (the paper's 1D run: 2)
    field: str = "spectral"  # "spectral" (F^{α,β}) or "mlp" (the paper's, unconstrained)
    alpha: float = -3.0  # field="spectral": left end α of the eigenvalue band of ∂F/∂y
    beta: float = 3.0  # field="spectral": right end β of the band
    width: int = 10  # hidden width of the MLP field (the paper: 10)
    depth: int = 3  # hidden layers of the MLP field (the paper: 3)
    activation: str = "tanh"  # activation of the MLP field (the paper: GELU, 1.13-Lipschitz)
    steps: int = 5  # θ-steps T (the paper: 5)
    interval: float = 5.0  # time interval; step size h = interval / steps (the paper: 1)
    n_train: int = 20  # equispaced training points on [-5, 5] (the paper: 20)
    n_val: int = 40  # equispaced validation points on [-5, 5] (the paper: 40)
    scheme: str = "one-leg"  # θ-scheme, "linear" or "one-leg" (the reference code: one-leg)
    solver: str = "auto"  # nonlinear solver of the implicit steps
    tol: float = 1e-6  # relative residual of the forward and adjoint solves (the paper: 1e-6)
    max_iter: int = 100  # nonlinear iterations allowed per solve
    epochs: int = 80  # full-batch Adam epochs
    lr: float = 2e-2  # Adam learning rate (FULL: 1e-2 for 200 epochs)
    band: float = 0.2  # half-width of the input band |z| <= band (the paper: 0.2)
    band_points: int = 5  # values of z across the band
    grid_points: int = 41  # x values on [-5, 5] where the band's image is measured

    def __post_init__(self) -> None:
        self.thetas = tuple(float(t) for t in self.thetas)
        self.alpha_divs = tuple(float(a) for a in self.alpha_divs)
        checks = [
            ("seeds", self.seeds >= 1, ">= 1"),
            ("thetas", len(self.thetas) >= 1 and all(0 <= t <= 1 for t in self.thetas),
             "non-empty, each in [0, 1]"),
            ("alpha_divs", len(self.alpha_divs) >= 1 and all(a >= 0 for a in self.alpha_divs),
             "non-empty, each >= 0"),
            ("p", self.p >= 0, ">= 0"),
            ("field", self.field in FIELDS, f"one of {list(FIELDS)}"),
            ("activation", _known_activation(self.activation), "a name irn.fields knows"),
            ("beta", self.alpha < self.beta, f"> alpha = {self.alpha}"),
            ("width", self.width >= 1, ">= 1"),
            ("depth", self.depth >= 1, ">= 1"),
            ("steps", self.steps >= 1, ">= 1"),
            ("interval", self.interval > 0, "> 0"),
            ("n_train", self.n_train >= 2, ">= 2"),
            ("n_val", self.n_val >= 2, ">= 2"),
            ("scheme", self.scheme in SCHEMES, f"one of {list(SCHEMES)}"),
            ("solver", self.solver in SOLVERS, f"one of {list(SOLVERS)}"),
            ("tol", 0 < self.tol < 1, "in (0, 1)"),
            ("max_iter", self.max_iter >= 1, ">= 1"),
            ("epochs", self.epochs >= 1, ">= 1"),
            ("lr", self.lr > 0, "> 0"),
            ("band", self.band > 0, "> 0"),
            ("band_points", self.band_points >= 2, ">= 2"),
            ("grid_points", self.grid_points >= 2, ">= 2"),
        ]  # fmt: skip
        check_config(self, checks)

    @property
    def h(self) -> float:
        """Step size ``interval / steps``."""
        return self.interval / self.steps


FULL: dict = {
    "seeds": 3,
    "thetas": (0.0, 0.5, 1.0),
    "alpha_divs": (0.0, 0.5, 1.0, 2.0),
    "epochs": 200,
    "lr": 1e-2,
}


class LastComponent(nn.Module):
    """The output map ``y ↦ y[:, -1:]``: the last state component (the augmented one)."""

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y[:, -1:]


def build_model(config: Config, theta: float) -> ImplicitResNet:
    """One shared field, ``steps`` θ-steps on ℝ² = (x, augmented zero), last component out."""
    inner = MLP(2, config.width, config.depth, config.activation)
    field = inner
    if config.field == "spectral":
        field = SpectralNormalized(inner, alpha=config.alpha, beta=config.beta)
    return ImplicitResNet(
        field, steps=config.steps, interval=config.interval, theta=theta, codim=1,
        output_map=LastComponent(), scheme=config.scheme, solver=config.solver, tol=config.tol,
        max_iter=config.max_iter, on_failure="ignore",
    )  # fmt: skip


@torch.no_grad()
def flow(net: ImplicitResNet, y0: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """States ``(T + 1, batch, 2)`` of the network's steps from augmented states ``y0``
    (``(batch, 2)``, not necessarily on the line z = 0), and each step's iterations."""
    states, iters, t = [y0], [], 0.0
    for k in range(net.steps):
        layer = net.layer(k)
        states.append(layer(states[-1], t))
        iters.append(layer.stats.iterations)
        t += layer.h
    return torch.stack(states), iters


def _band_image(net: ImplicitResNet, config: Config) -> dict:
    """Outputs over the strip ``x ∈ [−5, 5], |z| ≤ band`` and the image's relative width."""
    x = torch.linspace(-5.0, 5.0, config.grid_points)
    z = torch.linspace(-config.band, config.band, config.band_points)
    grid = torch.stack(torch.broadcast_tensors(x[:, None], z[None, :]), -1).reshape(-1, 2)
    out = flow(net, grid)[0][-1, :, -1].reshape(len(x), len(z))
    spread = (out.max(1).values - out.min(1).values) / (2 * config.band)
    return {
        "band_ratio": float(spread.mean()),
        "lower": out[:, 0].tolist(),
        "middle": out[:, len(z) // 2].tolist(),
        "upper": out[:, -1].tolist(),
    }


def _oscillation(states: torch.Tensor) -> float:
    """Fraction of successive increments ``Δ_k, Δ_{k+1}`` with ``⟨Δ_k, Δ_{k+1}⟩ < 0``."""
    inc = states[1:] - states[:-1]  # (T, batch, 2)
    if len(inc) < 2:
        return 0.0
    return float(((inc[1:] * inc[:-1]).sum(-1) < 0).double().mean())


def _one(config: Config, theta: float, alpha_div: float, seed: int, data) -> dict:
    x_tr, y_tr, x_val, y_val = data
    torch.manual_seed(seed)  # the weights: the same initial network for every (θ, α_div)
    net = build_model(config, theta)
    history = fit(
        net, F.mse_loss, (x_tr, y_tr),
        TrainConfig(epochs=config.epochs, lr=config.lr, seed=seed, alpha_div=alpha_div,
                    p=config.p, progress=False),
    )  # fmt: skip
    net.eval()  # freezes spectral-norm estimates (field="spectral") for the measurements
    y0 = net.augment(x_tr)
    states, iters = flow(net, y0)
    spectra = trajectory_spectrum(net, x_tr)
    step = torch.cat([s.step_eigenvalues.flatten() for s in spectra])
    eig = torch.stack([s.eigenvalues for s in spectra])  # (T, batch, 2)
    traj = [y0] + list(states[1:])
    div = trajectory_regularizer(
        net.fields, [k * net.h for k in range(net.steps + 1)], traj, p=config.p, exact=True,
        return_terms=True,
    ).divergence  # fmt: skip
    every = max(1, config.epochs // 50)
    curve = slice(every - 1, None, every)
    return {
        "train_loss": float(evaluate(net, x_tr, y_tr, loss_fn=F.mse_loss)),
        "val_loss": float(evaluate(net, x_val, y_val, loss_fn=F.mse_loss)),
        "divergence": float(div.detach()),
        "iterations": float(np.mean(iters)) if theta > 0 else 0.0,
        "training_iterations": float(np.mean(history.iterations[-max(1, config.epochs // 10) :])),
        "unconverged": max(history.unconverged) if history.unconverged else 0.0,
        "reversals": _oscillation(states),
        "negative_r": float((step.real < 0).double().mean()),
        "max_abs_r": float(step.abs().max()),
        "band": _band_image(net, config),
        "trajectories": states.permute(1, 0, 2).tolist(),  # (batch, T + 1, 2)
        "eigenvalues": {"real": eig.real.tolist(), "imag": eig.imag.tolist()},
        "history": {
            "epoch": list(range(every, config.epochs + 1, every)),
            "loss": history.loss[curve],
            "divergence": history.divergence[curve] if history.divergence else [],
            "iterations": history.iterations[curve],
        },
    }


# Per-run scalars copied into results[key][θ][α_div][seed].
_SCALARS = ("train_loss", "val_loss", "divergence", "iterations", "training_iterations",
            "unconverged", "reversals", "negative_r", "max_abs_r")  # fmt: skip
# Per-run records kept only for seed 0 (figures): results["examples"][key][θ][α_div].
_EXAMPLES = ("band", "trajectories", "eigenvalues", "history")


def _round(obj, digits: int = 6):
    """Round floats to ``digits`` significant digits (smaller, diff-friendly JSON)."""
    if isinstance(obj, float):
        return float(f"{obj:.{digits}g}") if math.isfinite(obj) else obj
    if isinstance(obj, dict):
        return {k: _round(v, digits) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_round(v, digits) for v in obj]
    return obj


def run(config: Config, *, progress: bool = False, partial: Partial | None = None) -> dict:
    """Train and measure every (θ, α_div, seed); see the module docstring for the setup.
    ``partial`` keeps the finished cells on disk and restores them (:mod:`.cells`).

    Returns ``{"experiment", "config", "meta", "results"}``. In ``results`` every per-run
    scalar (``train_loss``, ``val_loss``, ``divergence`` (exact, the regularizer's weighted
    mean without α_div), ``iterations``, ``reversals``, ``negative_r``, ``max_abs_r``,
    ``band_ratio``, ...) is a nested list ``[θ][α_div][seed]``; ``examples`` holds seed 0's
    band images, trajectories, eigenvalues and training curves, ``[θ][α_div]``.
    """
    start, start_cpu = time.perf_counter(), time.process_time()
    info = meta(0.0)  # now: the commit that runs, not the one checked out when it ends
    x_tr, y_tr = sine_regression(config.n_train)
    x_val, y_val = sine_regression(config.n_val)
    data = (x_tr, y_tr, x_val, y_val)
    seeds = list(range(config.seeds))
    grid = [{"theta": t, "alpha_div": a, "seed": s}
            for t in config.thetas for a in config.alpha_divs for s in seeds]  # fmt: skip
    done = run_cells(grid, lambda c: _one(config, c["theta"], c["alpha_div"], c["seed"], data),
                     partial=partial, desc="regularization", progress=progress)  # fmt: skip
    runs = {(c["theta"], c["alpha_div"], c["seed"]): r for c, r in zip(grid, done, strict=True)}

    def table(get):
        return [
            [[get(runs[t, a, s]) for s in seeds] for a in config.alpha_divs] for t in config.thetas
        ]

    results = {
        "thetas": list(config.thetas),
        "alpha_divs": list(config.alpha_divs),
        "seeds": seeds,
        "h": config.h,
        "x_train": x_tr.flatten().tolist(),
        "y_train": y_tr.flatten().tolist(),
        "x_grid": torch.linspace(-5.0, 5.0, config.grid_points).tolist(),
    }
    for key in _SCALARS:
        results[key] = table(lambda r, k=key: r[k])
    results["band_ratio"] = table(lambda r: r["band"]["band_ratio"])
    results["examples"] = {
        key: [[runs[t, a, 0][key] for a in config.alpha_divs] for t in config.thetas]
        for key in _EXAMPLES
    }
    info = finish(info, start, start_cpu, partial)
    return envelope("regularization", config, info, _round(results))
