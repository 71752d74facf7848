"""ODE trajectories: the paper's Lotka–Volterra system and the stiff scalar ODE."""

from __future__ import annotations

from typing import Any, NamedTuple, TypeVar

import numpy as np
import torch
from numpy.typing import ArrayLike

from ._common import array_namespace, check_dtype, make_generator, require

#: (a, b, d, g) of the paper's system ż1 = a z1 − b z1 z2, ż2 = d z1 z2 − g z2.
LV_PARAMS: tuple[float, float, float, float] = (2.0 / 3.0, 4.0 / 3.0, 1.0, 1.0)
#: The paper's 14 initial conditions (1, 0.5 + 0.1 k), k = 0..13.
LV_INITIAL_CONDITIONS: tuple[tuple[float, float], ...] = tuple(
    (1.0, 0.5 + 0.1 * k) for k in range(14)
)

_STIFF_RATE = 20.0
_Params = tuple[float, float, float, float]
# The reference fields serve torch code and scipy's solve_ivp alike, so they are generic.
_ArrayT = TypeVar("_ArrayT", np.ndarray, torch.Tensor)


class LotkaVolterraSplit(NamedTuple):
    """Paper split of the Lotka–Volterra trajectories (odd k train, even k validate)."""

    times: torch.Tensor
    train: torch.Tensor
    validation: torch.Tensor


# --------------------------------------------------------------------------------------- ODE data
def lotka_volterra_field(t: float | _ArrayT, z: _ArrayT, params: _Params = LV_PARAMS) -> _ArrayT:
    """Lotka–Volterra vector field ż1 = a z1 − b z1 z2, ż2 = d z1 z2 − g z2.

    Args:
        t: Time (unused: the system is autonomous; kept for the ``f(t, z)`` convention).
        z: States with the two components on the last axis; numpy array or torch tensor.
        params: ``(a, b, d, g)``; the paper uses (2/3, 4/3, 1, 1).

    Returns:
        ż with the same shape and array type as ``z``.
    """
    a, b, d, g = params
    xp = array_namespace(z)
    z1, z2 = z[..., 0], z[..., 1]
    return xp.stack((a * z1 - b * z1 * z2, d * z1 * z2 - g * z2), -1)


def lotka_volterra_invariant(z: _ArrayT, params: _Params = LV_PARAMS) -> _ArrayT:
    """First integral V = d z1 − g ln z1 + b z2 − a ln z2, constant along exact trajectories.

    Args:
        z: Positive states with the two components on the last axis (numpy or torch).
        params: ``(a, b, d, g)`` as in :func:`lotka_volterra_field`.

    Returns:
        V with the shape of ``z`` minus its last axis.
    """
    a, b, d, g = params
    xp = array_namespace(z)
    z1, z2 = z[..., 0], z[..., 1]
    return d * z1 - g * xp.log(z1) + b * z2 - a * xp.log(z2)


def lotka_volterra(
    initial_conditions: ArrayLike | torch.Tensor | None = None,
    *,
    t_final: float = 10.0,
    n_times: int = 51,
    params: _Params = LV_PARAMS,
    rtol: float = 1e-10,
    atol: float = 1e-12,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lotka–Volterra trajectories (paper §4.2), solved with ``scipy.integrate.solve_ivp``.

    Solves ż1 = 2/3 z1 − 4/3 z1 z2, ż2 = z1 z2 − z2 on [0, T] and samples it at ``n_times``
    equally spaced times (paper: T = 10, 51 points, h = 0.2). DOP853 with tolerances far below the
    paper's rtol = 1e-6 keeps the data an exact reference for the learned θ-schemes.

    Args:
        initial_conditions: ``(n_traj, 2)`` array-like; ``None`` uses the paper's 14 points
            (1, 0.5 + 0.1 k), k = 0..13 (:data:`LV_INITIAL_CONDITIONS`).
        t_final: Final time T.
        n_times: Number of sample times, including t = 0 and t = T.
        params: ``(a, b, d, g)``.
        rtol: Relative tolerance of the integrator (must be ≤ 1e-6).
        atol: Absolute tolerance of the integrator.
        dtype: Floating dtype of the returned tensors.

    Returns:
        ``(times, states)``: times ``(n_times,)`` and states ``(n_traj, n_times, 2)``.
    """
    # deferred: scipy.integrate is slow to import, and optional (the data extra)
    solve_ivp = require("scipy.integrate", "irn.data.lotka_volterra").solve_ivp

    check_dtype(dtype)
    if rtol > 1e-6:
        raise ValueError(f"rtol must be <= 1e-6 (paper setting or tighter), got {rtol}")
    if n_times < 2 or t_final <= 0:
        raise ValueError("need n_times >= 2 and t_final > 0")
    ics = np.asarray(
        LV_INITIAL_CONDITIONS if initial_conditions is None else initial_conditions,
        dtype=np.float64,
    ).reshape(-1, 2)
    times = np.linspace(0.0, t_final, n_times)
    states = np.empty((ics.shape[0], n_times, 2))
    for i, z0 in enumerate(ics):
        sol = solve_ivp(
            lotka_volterra_field,
            (0.0, t_final),
            z0,
            method="DOP853",
            t_eval=times,
            rtol=rtol,
            atol=atol,
            args=(params,),
        )
        if not sol.success:
            raise RuntimeError(f"solve_ivp failed for initial condition {z0}: {sol.message}")
        states[i] = sol.y.T
    return torch.from_numpy(times).to(dtype), torch.from_numpy(states).to(dtype)


def lotka_volterra_split(**kwargs: Any) -> LotkaVolterraSplit:
    """Return the paper's split: of the 14 trajectories, odd k train and even k validate.

    Keyword arguments other than ``initial_conditions`` go to :func:`lotka_volterra`.

    Returns:
        ``LotkaVolterraSplit(times, train, validation)`` with states shaped ``(7, n_times, 2)``.
    """
    if "initial_conditions" in kwargs:
        raise TypeError("lotka_volterra_split always uses the paper's initial conditions")
    times, states = lotka_volterra(**kwargs)
    return LotkaVolterraSplit(times, states[1::2], states[0::2])


def stiff_ode_field(t: float | _ArrayT, y: _ArrayT) -> _ArrayT:
    """Stiff scalar field y′ = −20 (y − cos t) (numpy or torch inputs)."""
    return -_STIFF_RATE * (y - array_namespace(y).cos(t))


def stiff_ode_solution(t: _ArrayT, t0: float | _ArrayT, y0: float | _ArrayT) -> _ArrayT:
    """Closed-form solution of y′ = −20 (y − cos t), y(t0) = y0.

    y(t) = p(t) + (y0 − p(t0)) e^{−20 (t − t0)} with the particular solution
    p(t) = (400 cos t + 20 sin t) / 401. Arguments broadcast (numpy or torch).
    """
    xp = array_namespace(t)
    if xp is torch:  # t0 may be a float next to a tensor t
        t0 = torch.as_tensor(t0, dtype=t.dtype, device=t.device)

    def particular(s: float | _ArrayT) -> _ArrayT:
        return (400.0 * xp.cos(s) + 20.0 * xp.sin(s)) / 401.0

    return particular(t) + (y0 - particular(t0)) * xp.exp(-_STIFF_RATE * (t - t0))


def stiff_ode(
    n: int = 50,
    *,
    t_span: float = 2.0,
    n_times: int = 21,
    t0_range: tuple[float, float] = (0.0, 2.0),
    y0_range: tuple[float, float] = (-0.5, 1.5),
    include_origin: bool = True,
    seed: int | None = 0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample exact trajectories of the stiff ODE y′ = −20 (y − cos t) (paper §4.3).

    Start times t0 ~ U(t0_range) and values y0 ~ U(y0_range); each sample is evaluated at
    ``n_times`` equispaced points of [t0, t0 + t_span] (paper: span 2, 21 points, h = 0.1; 50 train
    and 20 validation samples). With ``include_origin`` the first sample is t0 = 0, y0 = 0 as in the
    paper. The equation is linear, so :func:`stiff_ode_solution` is used instead of an integrator.

    Args:
        n: Number of samples.
        t_span: Length of each time interval.
        n_times: Points per trajectory, including both ends.
        t0_range: Range of the uniform start time.
        y0_range: Range of the uniform initial value.
        include_origin: Force the first sample to (t0, y0) = (0, 0).
        seed: Seed of a fresh generator (``None``: nondeterministic).
        generator: Generator to draw from; overrides ``seed``.
        dtype: Floating dtype of the returned tensors.

    Returns:
        ``(t0, times, states)`` shaped ``(n,)``, ``(n, n_times)`` and ``(n, n_times, 1)``.
    """
    check_dtype(dtype)
    if n < 1 or n_times < 2:
        raise ValueError("need n >= 1 and n_times >= 2")
    gen = make_generator(seed, generator)
    u = torch.rand(2, n, generator=gen, dtype=torch.float64)
    t0 = t0_range[0] + (t0_range[1] - t0_range[0]) * u[0]
    y0 = y0_range[0] + (y0_range[1] - y0_range[0]) * u[1]
    if include_origin:
        t0[0], y0[0] = 0.0, 0.0
    times = t0[:, None] + torch.linspace(0.0, t_span, n_times, dtype=torch.float64)
    states = stiff_ode_solution(times, t0[:, None], y0[:, None])
    return t0.to(dtype), times.to(dtype), states.unsqueeze(-1).to(dtype)
