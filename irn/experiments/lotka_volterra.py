"""The learned field depends on θ: Lotka–Volterra dynamics (paper-notes §1.6, §4.2, §7.3).

A field F is trained so that θ-steps ``y_{j+1} = y_j + h F((1−θ)y_j + θy_{j+1})`` (one-leg, as
the reference code) of size h = 0.2 reproduce trajectories of

    ż1 = 2/3 z1 − 4/3 z1 z2,   ż2 = z1 z2 − z2,

with the paper's loss L = (1/50N) Σ_i Σ_{j=1}^{50} ‖y_j^i − z^i(0.2 j)‖² on the 7 training
trajectories (odd k of the initial conditions (1, 0.5 + 0.1k), k = 0..13). The paper's claims
(HEAD ``results.pdf``): every θ fits the data and extrapolates to t = 50, but the learned fields
*integrated finely* differ: θ = 0 spirals inward, θ = ½ stays periodic, θ = 1 spirals outward.
The explanation: the data's step map has |e^{hλ}| = 1 near the centre (λ ≈ ±0.82i), while a
θ-step gives |R(hλ)| with |R(iω)| > 1, = 1, < 1 for θ <, =, > ½, so the network learns
eigenvalues μ with R(hμ) ≈ e^{hλ}, i.e. μ = R⁻¹(e^{hλ})/h: Re μ ≈ −hω²/2 for θ = 0 (damped),
0 for θ = ½ and +hω²/2 for θ = 1 (anti-damped).

What is measured, per θ and seed: the paper's loss on training and validation trajectories;
the discrete model's error on [10, horizon]; for the learned field integrated by RK4 with a small
step, the growth rate of its orbits from the first to the second stretch of ``window_time`` (the
amplitude is the RMS distance from the stretch's mean point) and their fate at ``horizon``
(amplitude ratio, or escape from the box |z|_∞ ≤ 10); the learned field's equilibrium near (1, ½)
and the eigenvalues of ∂F/∂y there, against the prediction R⁻¹(e^{±0.82ih})/h; the mean of
tr ∂F/∂y − tr ∂F_true/∂y over the data points, against the same prediction applied pointwise to
the true Jacobian's eigenvalues; and, for seed 0, phase portraits and the spectrum along the
training trajectories (:func:`irn.stability.trajectory_spectrum`).

Differences from the paper: the loss is minimized over ``window``-step segments that start at
every data point (one batch; far cheaper than 50 sequential steps), by Adam and then L-BFGS; the
paper used 1000 Adam epochs and then L-BFGS on the 50-step loss. Every reported loss is the
paper's 50-step loss. The fine integration is RK4 (the paper: θ = ½ steps of 0.01).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .. import data as irn_data
from ..fields import MLP
from ..models import ImplicitResNet
from ..scheme import inverse_stability, rk4_step
from ..stability import batch_jacobian, trajectory_spectrum
from ..train import TrainConfig, fit
from . import check_config, envelope, finish, meta
from .cells import Partial, run_cells
from .lotka_volterra_readouts import summary, table  # read-outs: part of this interface

__all__ = [
    "DESCRIPTION",
    "FULL",
    "Config",
    "LotkaVolterraField",
    "TrajectoryNet",
    "inverse_stability",
    "paper_loss",
    "rk4",
    "run",
    "summary",
    "table",
]

DESCRIPTION = "Lotka-Volterra: which field a theta-step learns, integrated finely (§4.2)"

H = 0.2  # the paper's step size (51 samples on [0, 10])
CENTRE = (1.0, 0.5)  # equilibrium (g/d, a/b) of the true system
OMEGA = math.sqrt(irn_data.LV_PARAMS[0] * irn_data.LV_PARAMS[3])  # √(a g) ≈ 0.816: λ = ±iω
PORTRAIT_ICS = (1, 5, 9)  # k of the initial conditions whose orbits are stored for seed 0
_BOX = 10.0  # an orbit with |z|_∞ above this has escaped (the data stay below 3)


@dataclass
class Config:
    """Reduced configuration (the book's live run); :data:`FULL` gives the serious one."""

    seeds: int = 1  # independent runs per θ (seeds 0 .. seeds-1: initial weights)
    thetas: tuple[float, ...] = (0.0, 0.5, 1.0)  # θ of the training steps, each in [0, 1]
    scheme: str = "one-leg"  # "one-leg" (reference code) or "linear" θ-scheme
    width: int = 16  # hidden width of the MLP field
    depth: int = 3  # hidden layers of the MLP field
    activation: str = "tanh"  # activation of the MLP field
    window: int = 1  # steps per training segment (segments start at every data point)
    epochs: int = 20  # full-batch Adam epochs on the segments
    lr: float = 1e-2  # initial Adam learning rate
    decay: float = 0.1  # the learning rate falls by this factor over the Adam epochs
    lbfgs_evals: int = 60  # then L-BFGS on the same loss, at most this many evaluations
    tol: float = 1e-8  # relative residual of the forward and adjoint solves
    horizon: float = 20.0  # discrete extrapolation and fine integration on [0, horizon]
    window_time: float = 10.0  # length w (> one period) of the stretches whose amplitudes
    # are compared
    fine_step: float = 0.05  # RK4 step of the fine integration (a divisor of h = 0.2)

    def __post_init__(self) -> None:
        self.thetas = tuple(float(t) for t in self.thetas)
        checks = [
            ("seeds", self.seeds >= 1, ">= 1"),
            ("thetas", len(self.thetas) >= 1 and all(0 <= t <= 1 for t in self.thetas),
             "non-empty, each in [0, 1]"),
            ("scheme", self.scheme in ("one-leg", "linear"), "'one-leg' or 'linear'"),
            ("width", self.width >= 1, ">= 1"),
            ("depth", self.depth >= 1, ">= 1"),
            ("window", 1 <= self.window <= 50, "in [1, 50]"),
            ("epochs", self.epochs >= 0, ">= 0"),
            ("lr", self.lr > 0, "> 0"),
            ("decay", 0 < self.decay <= 1, "in (0, 1]"),
            ("lbfgs_evals", self.lbfgs_evals >= 0, ">= 0"),
            ("tol", 0 < self.tol < 1, "in (0, 1)"),
            ("horizon", self.horizon >= 10.0 + self.window_time and self.horizon <= 200,
             f">= 10 + window_time = {10.0 + self.window_time} and <= 200"),
            ("window_time", 0 < self.window_time <= 10.0, "in (0, 10]"),
            ("fine_step", 0 < self.fine_step <= H, f"in (0, {H}]"),
        ]  # fmt: skip
        check_config(self, checks)
        if self.epochs + self.lbfgs_evals < 1:
            raise ValueError("epochs + lbfgs_evals must be >= 1, got 0")
        steps = self.horizon / H
        if abs(steps - round(steps)) > 1e-9:
            raise ValueError(f"horizon must be a multiple of h = {H}, got {self.horizon}")
        per_step = H / self.fine_step  # orbits are stored at the data's spacing h
        if abs(per_step - round(per_step)) > 1e-6:
            raise ValueError(f"fine_step must divide h = {H}, got {self.fine_step}")


FULL: dict = {
    "seeds": 3,
    "thetas": (0.0, 0.25, 0.5, 0.75, 1.0),
    "window": 2,
    "epochs": 100,
    "lbfgs_evals": 200,
    "horizon": 50.0,
    "window_time": 10.0,
    "fine_step": 0.01,
}


# --------------------------------------------------------------------------------- the model
class LotkaVolterraField(nn.Module):
    """The true field as a module (to step it with a θ-scheme like a learned one)."""

    def forward(self, t, z: torch.Tensor) -> torch.Tensor:
        return irn_data.lotka_volterra_field(t, z)


class TrajectoryNet(ImplicitResNet):
    """An :class:`~irn.ImplicitResNet` whose output is the whole trajectory
    ``(batch, steps + 1, 2)``, the states the paper's loss compares with the data."""

    def forward(self, x, t0=0.0, *, return_trajectory=False):
        _, traj = super().forward(x, t0, return_trajectory=True)
        out = torch.stack(traj.states, 1)
        return (out, traj) if return_trajectory else out


def _net(field: nn.Module, theta: float, steps: int, config: Config) -> TrajectoryNet:
    return TrajectoryNet(field, steps=steps, interval=H * steps, theta=theta,
                         scheme=config.scheme, tol=config.tol, on_failure="ignore")  # fmt: skip


def paper_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(1/(steps·N)) Σ_i Σ_{j≥1} ‖y_j^i − z^i(t_j)‖² for trajectories ``(N, steps + 1, 2)``."""
    return (out[:, 1:] - target[:, 1:]).pow(2).sum(-1).mean()


def rk4(field: nn.Module, z0: torch.Tensor, t_final: float, step: float, every: int = 1):
    """Classical RK4 of the autonomous ``field`` from ``z0`` (batch, 2), no gradients.

    Returns ``(states, escape_time)``: states ``(batch, n // every + 1, 2)`` at the times
    ``k·every·step``, and per orbit the time at which it left the box |z|_∞ ≤ 10 (``inf`` if
    never; an escaped orbit stays frozen at its last point inside).
    """
    n = int(round(t_final / step))
    z, out = z0.clone(), [z0.clone()]
    escape = torch.full((len(z0),), math.inf, dtype=torch.float64)
    with torch.no_grad():
        for k in range(1, n + 1):
            new = rk4_step(field, 0.0, z, step)
            bad = ~torch.isfinite(new).all(1) | (new.abs().amax(1) > _BOX)
            escape = torch.where(bad & torch.isinf(escape), torch.tensor(k * step), escape)
            z = torch.where(torch.isfinite(escape)[:, None], z, new)
            if k % every == 0:
                out.append(z.clone())
    return torch.stack(out, 1), escape


# ------------------------------------------------------------------------------ measurements
def _amplitude(z: np.ndarray) -> float:
    """RMS distance of the points of a stretch of an orbit from their mean."""
    return float(np.sqrt(((z - z.mean(0)) ** 2).sum(1).mean()))


def _growth_rates(states: np.ndarray, escape: np.ndarray, dt: float, config: Config):
    """Per orbit, the growth rate ln(A₂/A₁)/w of the amplitude A (:func:`_amplitude`) from the
    first stretch of length w = ``window_time`` to the second, while the orbits are still near
    the data (``None`` if the orbit escaped before 2w); and the ratio A_last/A₁ of the last
    stretch before ``horizon`` to the first, the long-run fate (``None`` if it escaped)."""
    w = config.window_time
    m = int(round(w / dt))
    rates, ratios = [], []
    for z, t_out in zip(states, escape, strict=True):
        first = _amplitude(z[: m + 1])
        second = _amplitude(z[m : 2 * m + 1])
        rates.append(float(np.log(second / first) / w) if t_out > 2 * w else None)
        ratios.append(_amplitude(z[-m - 1 :]) / first if math.isinf(t_out) else None)
    return rates, ratios


def _equilibrium(field: nn.Module, theta: float):
    """Newton's method for F(z) = 0 from the true centre; ``(z*, eigenvalues)`` or Nones."""
    z = torch.tensor([CENTRE], dtype=torch.float64)
    for _ in range(30):
        J = batch_jacobian(field, 0.0, z)
        with torch.no_grad():
            f = field(0.0, z)
            if float(f.norm()) < 1e-12:
                break
            z = z - torch.linalg.solve(J, f[..., None])[..., 0]
    with torch.no_grad():
        if not (torch.isfinite(z).all() and float(field(0.0, z).norm()) < 1e-9):
            return None, None
    lam = torch.linalg.eigvals(batch_jacobian(field, 0.0, z))[0]
    return z[0].tolist(), _complex_list(lam)


def _complex_list(values) -> list[list[float]]:
    """Complex numbers as ``[[re, ...], [im, ...]]`` (sorted by imaginary part), 5 decimals."""
    v = np.asarray(values, dtype=complex).ravel()
    v = v[np.argsort(v.imag, kind="stable")]
    return [np.round(v.real, 5).tolist(), np.round(v.imag, 5).tolist()]


def _true_eigenvalues(points: torch.Tensor) -> np.ndarray:
    return torch.linalg.eigvals(batch_jacobian(LotkaVolterraField(), 0.0, points)).numpy()


def predicted_trace_shift(theta: float, points: torch.Tensor) -> float:
    """Mean over ``points`` of Σ_i Re[R⁻¹(e^{hλ_i})/h − λ_i], λ_i the true Jacobian's
    eigenvalues: the shift of tr ∂F/∂y that makes each frozen mode's step exact."""
    lam = _true_eigenvalues(points)
    mu = inverse_stability(np.exp(H * lam), theta, H)
    return float((mu - lam).real.sum(1).mean())


def _trace(field: nn.Module, points: torch.Tensor) -> torch.Tensor:
    return batch_jacobian(field, 0.0, points).diagonal(dim1=1, dim2=2).sum(1)


def _subsample(values: list[float], n: int = 100) -> list[float]:
    idx = np.unique(np.linspace(0, len(values) - 1, min(n, len(values))).round().astype(int))
    return [float(f"{values[i]:.4g}") for i in idx]


# --------------------------------------------------------------------------------------- run
def _train(field: nn.Module, theta: float, seed: int, train: torch.Tensor, config: Config):
    """Adam, then L-BFGS, on the paper's loss over ``window``-step segments that start at every
    data point; returns the loss history and the mean forward solver iterations (Adam phase)."""
    k = config.window
    x = train[:, : train.shape[1] - k].reshape(-1, 2)
    y = torch.stack([train[:, j : j + k + 1] for j in range(train.shape[1] - k)], 1)
    y = y.reshape(-1, k + 1, 2)
    net = _net(field, theta, k, config)
    losses, iters = [], 0.0
    if config.epochs:
        cfg = TrainConfig(epochs=config.epochs, lr=config.lr, seed=seed, progress=False,
                          lr_decay=config.decay ** (1 / config.epochs))  # fmt: skip
        hist = fit(net, paper_loss, (x, y), cfg)
        losses, iters = list(hist.loss), float(np.mean(hist.iterations))
    if config.lbfgs_evals:  # as the paper's final phase; fit() has no closure for L-BFGS
        opt = torch.optim.LBFGS(field.parameters(), lr=1.0, max_iter=config.lbfgs_evals,
                                max_eval=config.lbfgs_evals, history_size=50,
                                line_search_fn="strong_wolfe", tolerance_grad=1e-12,
                                tolerance_change=1e-15)  # fmt: skip

        def closure():
            opt.zero_grad()
            loss = paper_loss(net(x), y)
            loss.backward()
            losses.append(float(loss.detach()))
            return loss

        net.train()
        opt.step(closure)
    return losses, iters


def _one(config: Config, theta: float, seed: int, exact: torch.Tensor) -> dict:
    train, val = exact[1::2, :51], exact[0::2, :51]
    torch.manual_seed(seed)
    field = MLP(2, config.width, config.depth, config.activation).to(torch.float64)
    start = time.process_time()
    losses, iters = _train(field, theta, seed, train, config)
    train_time = time.process_time() - start
    field.eval()
    steps = int(round(config.horizon / H))
    with torch.no_grad():
        long = _net(field, theta, steps, config)(exact[:, 0])
    err = (long - exact).pow(2).sum(-1)  # (14, steps + 1)
    every = max(1, int(round(H / config.fine_step)))
    fine, escape = rk4(field, exact[1:, 0], config.horizon, config.fine_step, every)
    rates, ratios = _growth_rates(fine.numpy(), escape.numpy(), every * config.fine_step, config)
    eq, eq_eigs = _equilibrium(field, theta)
    points = train.reshape(-1, 2)
    shift = float((_trace(field, points) - _trace(LotkaVolterraField(), points)).mean())
    out = {
        "loss_train": float(paper_loss(long[1::2, :51], train)),
        "loss_val": float(paper_loss(long[0::2, :51], val)),
        "rmse_extrapolation": float(err[:, 51:].mean().sqrt()),
        "growth_rates": rates,
        "median_rate": float(np.median([math.inf if r is None else r for r in rates])),
        "amplitude_ratios": ratios,
        "escaped": int(torch.isfinite(escape).sum()),
        "equilibrium": eq,
        "equilibrium_eigenvalues": eq_eigs,
        "trace_shift": shift,
        "loss_history": _subsample(losses),
        "iterations": iters,
        "train_time": train_time,
    }
    if seed == 0:  # pictures: orbits and the spectrum along the training trajectories
        rows = [k - 1 for k in PORTRAIT_ICS]
        out["portrait_fine"] = np.round(fine[rows].numpy(), 4).tolist()
        out["portrait_discrete"] = np.round(long[list(PORTRAIT_ICS)].numpy(), 4).tolist()
        net50 = _net(field, theta, 50, config).eval()
        spectra = trajectory_spectrum(net50, train[:, 0])[::2]
        learned = torch.cat([s.eigenvalues for s in spectra]).numpy()
        true = _true_eigenvalues(torch.cat([s.point for s in spectra]))
        out["spectrum_learned"] = _complex_list(learned)
        out["spectrum_true"] = _complex_list(true)
    return out


def run(config: Config, *, progress: bool = False, partial: Partial | None = None) -> dict:
    """Train and measure every (θ, seed) pair; see the module docstring. ``partial`` keeps the
    finished cells on disk and restores them (:mod:`.cells`).

    Returns ``{"experiment", "config", "meta", "results"}``; per-run quantities in
    ``results["runs"]`` are nested lists indexed ``[θ][seed]``.
    """
    start, start_cpu = time.perf_counter(), time.process_time()
    info = meta(0.0)  # now: the commit that runs, not the one checked out when it ends
    n_times = int(round(config.horizon / H)) + 1
    # rtol 1e-8 (the paper: 1e-6) keeps the data errors far below every loss measured here.
    _, exact = irn_data.lotka_volterra(t_final=config.horizon, n_times=n_times, rtol=1e-8,
                                       atol=1e-10, dtype=torch.float64)  # fmt: skip
    seeds = list(range(config.seeds))
    grid = [{"theta": t, "seed": s} for t in config.thetas for s in seeds]
    done = iter(run_cells(grid, lambda c: _one(config, c["theta"], c["seed"], exact),
                          partial=partial, desc="lotka_volterra", progress=progress))  # fmt: skip
    runs = [[next(done) for _ in seeds] for _ in config.thetas]
    train, points = exact[1::2, :51], exact[1::2, :51].reshape(-1, 2)
    true_loss = []
    for theta in config.thetas:  # the true field stepped by the same θ-scheme
        with torch.no_grad():
            true_loss.append(float(paper_loss(
                _net(LotkaVolterraField(), theta, 50, config)(train[:, 0]), train)))  # fmt: skip
    centre = np.exp(H * 1j * OMEGA * np.array([-1.0, 1.0]))
    results = {
        "thetas": list(config.thetas),
        "seeds": seeds,
        "h": H,
        "omega": OMEGA,
        "portrait_ics": [list(irn_data.LV_INITIAL_CONDITIONS[k]) for k in PORTRAIT_ICS],
        "true_field_loss": true_loss,
        "predicted_centre_eigenvalues": [
            _complex_list(inverse_stability(centre, t, H)) for t in config.thetas
        ],
        "predicted_trace_shift": [predicted_trace_shift(t, points) for t in config.thetas],
        "runs": runs,
    }
    info = finish(info, start, start_cpu, partial)
    return envelope("lotka_volterra", config, info, results)
