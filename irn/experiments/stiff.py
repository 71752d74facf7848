"""Learning a stiff ODE from sparse observations (paper-notes §4.3, §7.2).

Data: exact solutions of y′ = −20(y − cos t) from y(t0) = y0, t0 ~ U(0, 2) and y0 ~ U(−½, 3/2)
(the first sample (0, 0)), on [t0, t0 + 2]. A time-dependent field

    F(t, y) = −20 y + 4.95 (N(y) + e(t)),

with N a spectrally normalized MLP (1-Lipschitz) and e(t) a learned piecewise-linear offset, is
:class:`irn.SpectralNormalized` with the paper's eigenvalue band [α, β] = [−25, −15]: every
eigenvalue λ of ∂F/∂y lies in [−24.95, −15.05], so with h = 0.1 the step sees hλ ≈ −2, where
R(hλ) ∈ [−1.5, −0.5] for θ = 0 (forward Euler cannot decay like e^{hλ} ∈ [0.08, 0.22]),
[−0.11, 0.14] for θ = ½ and [0.29, 0.40] for θ = 1. Twenty θ-steps of size h = 0.1 run from
(t0, y0); the loss is the mean squared error at the observed steps only, every
``observe_every`` steps (2, 5, 10 steps: observations every 0.2, 0.5, 1.0; the paper's
``datasteps`` 10, 4, 2).

The paper's claims (HEAD ``results.pdf``): θ = 0 oscillates and spikes between observations,
θ = ½ and θ = 1 are smooth and close to the exact solution (observations every 0.2 or 0.5);
with observations every 1.0 all miss the fast transient, θ = 0 worst; integrated finely, the
fields learned with implicit steps track the exact solution. Measured on held-out samples: the
errors at observed and unobserved steps, the total variation of the discrete trajectory over
that of the exact one (1 for no spurious oscillation), the largest error (spikes), the error of
the learned field integrated by RK4 with a small step, and the learned hλ. The true field
stepped by each θ-scheme is the baseline.

Differences from the paper: one MLP of y plus a piecewise-linear e(t) with ``knots`` values on
[0, 4] instead of 40 per-interval MLPs with a total-variation penalty; full-batch Adam instead
of batch size 1; several seeds (data and weights).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from .. import data as irn_data
from ..fields import MLP, SpectralNormalized
from ..layers import ThetaLayer
from ..scheme import rk4_step
from ..stability import batch_jacobian, stability_function
from ..train import TrainConfig, fit
from . import check_config, envelope, finish, meta
from .cells import Partial, run_cells

__all__ = [
    "DESCRIPTION",
    "FULL",
    "Config",
    "StiffField",
    "StiffNet",
    "TimeOffset",
    "build_field",
    "rk4",
    "run",
    "summary",
]

DESCRIPTION = "stiff ODE y' = -20(y - cos t) learned from sparse observations (§4.3)"

H = 0.1  # the paper's step: 21 samples on [t0, t0 + 2]
STEPS = 20
T_MAX = 4.0  # t0 + 2 <= 4: the times the field must cover
PLOT_SAMPLES = 3  # validation samples whose trajectories are stored for seed 0
PLOT_SPACING = 0.02  # time between the stored points of the finely integrated trajectories


@dataclass
class Config:
    """Reduced configuration (the book's live run); :data:`FULL` gives the serious one."""

    seeds: int = 1  # independent runs (seeds 0 .. seeds-1: data and initial weights)
    thetas: tuple[float, ...] = (0.0, 0.5, 1.0)  # θ of the steps, each in [0, 1]
    observe_every: tuple[int, ...] = (5,)  # steps between observations, each dividing 20
    scheme: str = "one-leg"  # "one-leg" (reference code) or "linear" θ-scheme
    n_train: int = 50  # training samples (the paper: 50)
    n_val: int = 20  # held-out samples (the paper: 20)
    alpha: float = -25.0  # left end of the eigenvalue band of ∂F/∂y (the paper: -25)
    beta: float = -15.0  # right end (the paper: -15); h·[alpha, beta] = [-2.5, -1.5]
    width: int = 10  # hidden width of the MLP N(y)
    depth: int = 2  # hidden layers of N
    activation: str = "relu"  # activation of N (1-Lipschitz keeps the eigenvalue band)
    knots: int = 41  # values of the piecewise-linear offset e(t) on [0, 4]
    epochs: int = 15  # full-batch Adam epochs
    lr: float = 0.05  # initial Adam learning rate of N
    offset_lr: float = 0.5  # initial Adam learning rate of e(t): it must travel about 20/4.95
    decay: float = 0.1  # the learning rate falls by this factor over training
    tol: float = 1e-8  # relative residual of the forward and adjoint solves
    fine_step: float = 0.01  # RK4 step of the fine integration (a divisor of 0.02)

    def __post_init__(self) -> None:
        self.thetas = tuple(float(t) for t in self.thetas)
        self.observe_every = tuple(int(k) for k in self.observe_every)
        checks = [
            ("seeds", self.seeds >= 1, ">= 1"),
            ("thetas", len(self.thetas) >= 1 and all(0 <= t <= 1 for t in self.thetas),
             "non-empty, each in [0, 1]"),
            ("observe_every", len(self.observe_every) >= 1
             and all(k >= 1 and STEPS % k == 0 for k in self.observe_every),
             "non-empty, each a divisor of 20 (1, 2, 4, 5, 10, 20)"),
            ("scheme", self.scheme in ("one-leg", "linear"), "'one-leg' or 'linear'"),
            ("n_train", self.n_train >= 1, ">= 1"),
            ("n_val", self.n_val >= PLOT_SAMPLES, f">= {PLOT_SAMPLES}"),
            ("beta", self.alpha < self.beta < 0, f"in (alpha = {self.alpha}, 0)"),
            ("width", self.width >= 1, ">= 1"),
            ("depth", self.depth >= 1, ">= 1"),
            ("knots", self.knots >= 2, ">= 2"),
            ("epochs", self.epochs >= 1, ">= 1"),
            ("lr", self.lr > 0, "> 0"),
            ("offset_lr", self.offset_lr > 0, "> 0"),
            ("decay", 0 < self.decay <= 1, "in (0, 1]"),
            ("tol", 0 < self.tol < 1, "in (0, 1)"),
            ("fine_step", 0 < self.fine_step <= PLOT_SPACING and abs(PLOT_SPACING
             / self.fine_step - round(PLOT_SPACING / self.fine_step)) < 1e-6,
             f"a divisor of {PLOT_SPACING}"),
        ]  # fmt: skip
        check_config(self, checks)


FULL: dict = {
    "seeds": 3,
    "observe_every": (2, 5, 10),
    "epochs": 60,
    "fine_step": 0.005,
}


# --------------------------------------------------------------------------------- the model
class TimeOffset(nn.Module):
    """e(t): linear interpolation of ``knots`` learned values on [0, 4] (constant beyond)."""

    def __init__(self, knots: int) -> None:
        super().__init__()
        self.values = nn.Parameter(torch.zeros(knots))
        self.spacing = T_MAX / (knots - 1)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        u = (t / self.spacing).clamp(0, len(self.values) - 1)
        i = u.floor().long().clamp(max=len(self.values) - 2)
        w = u - i
        return (1 - w) * self.values[i] + w * self.values[i + 1]


class StiffField(nn.Module):
    """N(y) + e(t): a MLP of the state plus a learned offset in time. ``t`` is a float or a
    ``(batch, 1)`` tensor of per-sample times (samples start at different t0)."""

    def __init__(self, width: int, depth: int, activation: str, knots: int) -> None:
        super().__init__()
        self.net = MLP(1, width, depth, activation)
        self.offset = TimeOffset(knots)
        self.state_shape = (1,)

    def forward(self, t, y: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=y.dtype, device=y.device)
        return self.net(t, y) + self.offset(t.expand(y.shape[0], 1) if t.dim() < 2 else t)


def build_field(config: Config) -> SpectralNormalized:
    """F^{α,β}(t, y) = (α+β)/2·y + 0.99(β−α)/2·(N(y) + e(t)), N spectrally normalized."""
    inner = StiffField(config.width, config.depth, config.activation, config.knots)
    field = SpectralNormalized(inner, alpha=config.alpha, beta=config.beta, learn_scale=False)
    return field.to(torch.float64)


class StiffNet(nn.Module):
    """Twenty θ-steps of size 0.1 from per-sample start times: input ``(batch, 2)`` holds
    ``(y0, t0)``, output ``(batch, 21, 1)`` the states ``y_0 .. y_20``. (The steps are a loop
    over one :class:`~irn.ThetaLayer` because :class:`~irn.ImplicitResNet` takes one start
    time for the whole batch.)"""

    def __init__(self, field: nn.Module, theta: float, config: Config) -> None:
        super().__init__()
        self.layer = ThetaLayer(field, theta=theta, h=H, scheme=config.scheme, tol=config.tol,
                                on_failure="ignore")  # fmt: skip

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        y, t = inp[:, :1], inp[:, 1:2]
        states = [y]
        for _ in range(STEPS):
            y = self.layer(y, t)
            t = t + H
            states.append(y)
        return torch.stack(states, 1)


class TrueField(nn.Module):
    """The exact field −20(y − cos t), per-sample times allowed."""

    def forward(self, t, y: torch.Tensor) -> torch.Tensor:
        return irn_data.stiff_ode_field(torch.as_tensor(t, dtype=y.dtype), y)


def rk4(field: nn.Module, y0: torch.Tensor, t0: torch.Tensor, step: float, every: int = 1):
    """RK4 of ``field`` on [t0, t0 + 2] from ``y0`` ``(batch, 1)``, ``t0`` ``(batch, 1)``;
    states ``(batch, n // every + 1)`` at times ``t0 + k·every·step``, no gradients."""
    n = int(round(2.0 / step))
    y, t, out = y0.clone(), t0.clone(), [y0[:, 0].clone()]
    # cached(): the spectrally normalized weights are computed once, not at every evaluation
    with torch.no_grad(), parametrize.cached():
        for k in range(1, n + 1):
            y, t = rk4_step(field, t, y, step), t + step
            if k % every == 0:
                out.append(y[:, 0].clone())
    return torch.stack(out, 1)


# ------------------------------------------------------------------------------ measurements
def observed(every: int) -> list[int]:
    """Indices of the observed states (the start y_0 is given, not observed)."""
    return list(range(every, STEPS + 1, every))


def _data(n: int, seed: int):
    t0, times, states = irn_data.stiff_ode(n, seed=seed, dtype=torch.float64)
    return torch.cat([states[:, 0], t0[:, None]], 1), times, states


def _discrete_metrics(out: torch.Tensor, exact: torch.Tensor, every: int) -> dict:
    """Errors of discrete trajectories ``(n, 21)`` against the exact values at the steps."""
    err = out - exact
    obs = observed(every)
    between = [k for k in range(1, STEPS + 1) if k not in obs]

    def tv(a):
        return (a[:, 1:] - a[:, :-1]).abs().sum(1)

    return {
        "rmse_observed": float(err[:, obs].pow(2).mean().sqrt()),
        "rmse_between": float(err[:, between].pow(2).mean().sqrt()) if between else None,
        "rmse_all": float(err[:, 1:].pow(2).mean().sqrt()),
        "max_error": float(err[:, 1:].abs().max()),
        "tv_ratio": float((tv(out) / tv(exact)).mean()),
    }


def _fine_metrics(field: nn.Module, x: torch.Tensor, config: Config) -> tuple[dict, torch.Tensor]:
    y0, t0 = x[:, :1], x[:, 1:2]
    every = int(round(PLOT_SPACING / config.fine_step))
    fine = rk4(field, y0, t0, config.fine_step, every)
    times = t0 + torch.arange(fine.shape[1], dtype=x.dtype) * (every * config.fine_step)
    err = fine - irn_data.stiff_ode_solution(times, t0, y0)
    metrics = {"fine_rmse": float(err.pow(2).mean().sqrt()), "fine_max": float(err.abs().max())}
    return metrics, fine


def _one(config: Config, theta: float, every: int, seed: int) -> dict:
    x, _, states = _data(config.n_train, 2 * seed)
    xv, _, sv = _data(config.n_val, 2 * seed + 1)
    torch.manual_seed(seed)
    field = build_field(config)
    net = StiffNet(field, theta, config)
    obs = observed(every)

    def loss(out, target):
        return (out[:, obs] - target[:, obs]).pow(2).mean()

    cfg = TrainConfig(
        epochs=config.epochs,
        lr=config.lr,
        lr_decay=config.decay ** (1 / config.epochs),
        seed=seed,
        progress=False,
    )
    # Adam moves a parameter by about lr per step, so e(t) gets its own, larger rate.
    offsets = [field.field.offset.values]
    others = [p for p in field.parameters() if p is not offsets[0]]
    optimizer = torch.optim.Adam([{"params": others, "lr": config.lr},
                                  {"params": offsets, "lr": config.offset_lr}])  # fmt: skip
    start = time.process_time()
    hist = fit(net, loss, (x, states), cfg, optimizer=optimizer)
    train_time = time.process_time() - start
    net.eval()
    with torch.no_grad():
        out = net(xv)
    res = _discrete_metrics(out[..., 0], sv[..., 0], every)
    fine_res, fine = _fine_metrics(field, xv, config)
    res.update(fine_res)
    times = xv[:, 1:2] + H * torch.arange(STEPS + 1, dtype=xv.dtype)
    hlam = H * batch_jacobian(field, times.reshape(-1, 1), out.reshape(-1, 1)).reshape(-1)
    res.update({
        "hlambda": [float(hlam.min()), float(hlam.max())],
        "loss": float(loss(net(x).detach(), states)),
        "loss_history": [float(f"{v:.4g}") for v in hist.loss],
        "train_time": train_time,
    })  # fmt: skip
    if seed == 0:
        res["plot_discrete"] = np.round(out[:PLOT_SAMPLES, :, 0].numpy(), 4).tolist()
        res["plot_fine"] = np.round(fine[:PLOT_SAMPLES].numpy(), 4).tolist()
    return res


def run(config: Config, *, progress: bool = False, partial: Partial | None = None) -> dict:
    """Train and measure every (θ, observation spacing, seed); see the module docstring.
    ``partial`` keeps the finished cells on disk and restores them (:mod:`.cells`).

    Returns ``{"experiment", "config", "meta", "results"}``; per-run quantities in
    ``results["runs"]`` are nested lists indexed ``[θ][spacing][seed]``.
    """
    start, start_cpu = time.perf_counter(), time.process_time()
    info = meta(0.0)  # now: the commit that runs, not the one checked out when it ends
    seeds = list(range(config.seeds))
    grid = [{"theta": t, "every": k, "seed": s}
            for t in config.thetas for k in config.observe_every for s in seeds]  # fmt: skip
    done = iter(run_cells(grid, lambda c: _one(config, c["theta"], c["every"], c["seed"]),
                          partial=partial, desc="stiff", progress=progress))  # fmt: skip
    runs = [[[next(done) for _ in seeds] for _ in config.observe_every] for _ in config.thetas]
    xv, _, sv = _data(config.n_val, 1)  # seed 0's held-out samples: baseline and plots
    baseline = []
    for theta in config.thetas:  # the true field stepped by the same θ-scheme
        with torch.no_grad():
            out = StiffNet(TrueField(), theta, config)(xv)
        baseline.append(_discrete_metrics(out[..., 0], sv[..., 0], STEPS))
    band = H * np.array([config.alpha, config.beta])
    results = {
        "thetas": list(config.thetas),
        "observe_every": list(config.observe_every),
        "observation_spacing": [H * k for k in config.observe_every],
        "seeds": seeds,
        "h": H,
        "hlambda_band": band.tolist(),
        "R_band": [stability_function(band, t).tolist() for t in config.thetas],
        "exact_factor": np.exp(band).tolist(),
        "plot_start": xv[:PLOT_SAMPLES].tolist(),  # (y0, t0) of the stored trajectories
        "true_field": baseline,
        "runs": runs,
    }
    return envelope("stiff", config, finish(info, start, start_cpu, partial), results)


# ------------------------------------------------------------------------------- read-outs
def table(results: dict, key: str) -> np.ndarray:
    """``results["runs"][θ][spacing][seed][key]`` as a float array ``(θ, spacing, seed)``
    (``None`` becomes NaN)."""
    res = results.get("results", results)
    rows = [[[np.nan if r[key] is None else r[key] for r in cell] for cell in row]
            for row in res["runs"]]  # fmt: skip
    return np.array(rows, dtype=float)


def summary(results: dict) -> str:
    """A short text table: mean over seeds of the held-out errors per θ and spacing."""
    res = results["results"]
    keys = ("rmse_observed", "rmse_between", "tv_ratio", "max_error", "fine_rmse")
    lines = [
        f"stiff ODE, h = {res['h']}, {len(res['seeds'])} seed(s), held-out means",
        "theta  spacing  " + "  ".join(f"{k:>13}" for k in keys),
    ]
    tables = {k: table(res, k) for k in keys}
    for i, theta in enumerate(res["thetas"]):
        for j, spacing in enumerate(res["observation_spacing"]):
            cells = "  ".join(f"{np.nanmean(tables[k][i, j]):13.3g}" for k in keys)
            lines.append(f"{theta:5.2f}  {spacing:7.1f}  {cells}")
    lines.append(f"wall time {results['meta']['wall_time']:.1f} s")
    return "\n".join(lines)
