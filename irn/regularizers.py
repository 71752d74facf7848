"""Trajectory regularisers for implicit residual networks (paper notes §1.5, §3.3).

Pure functions of vector fields, times and states. A vector field is an ``nn.Module`` called as
``field(t, y)`` with ``y`` of shape ``(batch, *state)`` and an output of the same shape. All
Jacobians are per sample: ``J_b = ∂F(t, y)_b / ∂y_b`` with the state dimensions flattened, so
``J_b`` is ``d × d`` with ``d = y[0].numel()``. Per-sample Jacobians are read off the batched
graph, which assumes the field does not mix samples (no train-mode BatchNorm).

Gradients: every result is differentiable in the field parameters (``create_graph=True``). If the
states carry a graph (``y.requires_grad``) gradients also flow into them, and hence into earlier
layers of a network; states that do not require grad are detached copies, so only the parameters
are trained. Under ``torch.no_grad()`` the results are computed but returned detached.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, overload

import torch
from torch import Tensor, nn

__all__ = [
    "RegularizerTerms",
    "divergence",
    "jacobian_frobenius",
    "total_variation",
    "trajectory_regularizer",
]

Fields = nn.Module | Sequence[nn.Module]


def _check_samples(samples: int) -> None:
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got samples={samples}")


def _jacobian_stats(
    field: nn.Module,
    t: float | Tensor,
    y: Tensor,
    samples: int,
    exact: bool,
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor]:
    """Per-sample (trace, squared Frobenius norm) of ∂F/∂y, exact or by Hutchinson probes."""
    _check_samples(samples)
    keep_graph = torch.is_grad_enabled()
    batch, d = y.shape[0], y[0].numel()
    with torch.enable_grad():
        # A state that already requires grad is used as is, so gradients reach whatever produced
        # it; otherwise a detached leaf is made so that ∂F/∂y exists at all.
        y_in = y if y.requires_grad else y.detach().requires_grad_(True)
        out = field(t, y_in)
        if out.shape != y.shape:
            raise ValueError(f"field output shape {tuple(out.shape)} != state {tuple(y.shape)}")
        zero = y.new_zeros(batch)
        if not out.requires_grad:  # F independent of y and of any parameter: J = 0
            return zero, zero

        def vjp(v: Tensor) -> Tensor:  # v ↦ vᵀJ per sample, shape (batch, d)
            (g,) = torch.autograd.grad(
                out, y_in, v, create_graph=keep_graph, retain_graph=True, allow_unused=True
            )
            return torch.zeros_like(y).flatten(1) if g is None else g.flatten(1)

        trace, frob = zero, zero
        if exact:
            # A loop over the d coordinates (one batched VJP each, one forward pass) works for any
            # nn.Module and state shape; torch.func.vmap/jacrev cannot trace fields with in-place
            # buffer updates (spectral-norm power iterations), hooks or data-dependent control flow.
            for i in range(d):
                # A fresh one-hot each time: the double-backward graph may save grad_outputs.
                e_i = torch.zeros_like(y).flatten(1)
                e_i[:, i] = 1.0
                row = vjp(e_i.view_as(y))  # row i of every J_b: ∂F_i/∂y
                trace = trace + row[:, i]
                frob = frob + row.pow(2).sum(1)
        else:
            # All probes in one draw, so a seeded generator gives reproducible estimates.
            z = torch.randn(
                (samples, *y.shape), generator=generator, dtype=y.dtype, device=y.device
            )
            for k in range(samples):
                zj = vjp(z[k])  # zᵀJ
                trace = trace + (zj * z[k].flatten(1)).sum(1)
                frob = frob + zj.pow(2).sum(1)
            trace, frob = trace / samples, frob / samples
    if not keep_graph:
        trace, frob = trace.detach(), frob.detach()
    return trace, frob


def divergence(
    field: nn.Module,
    t: float | Tensor,
    y: Tensor,
    samples: int = 1,
    exact: bool = False,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Per-sample divergence ∇·F(t, y) = tr(∂F/∂y).

    Exact: ``tr J_b = Σ_i ∂F_i/∂y_i`` from ``d`` vector–Jacobian products. Otherwise Hutchinson's
    unbiased estimate ``(1/S) Σ_{k=1}^{S} z_kᵀ J_b z_k`` with fresh probes ``z_k ~ N(0, I)`` on
    every call (the paper's stochastic regularisation; variance ``2‖(J+Jᵀ)/2‖_F² / S``), one VJP
    per probe. The probes are ``torch.randn((samples, *y.shape), generator=generator)``.

    Args:
        field: Vector field ``F(t, y)``.
        t: Time, a float or a 0-dim tensor.
        y: States, shape ``(batch, *state)``.
        samples: Number ``S >= 1`` of Gaussian probes (ignored when ``exact``).
        exact: Compute the exact trace instead of the estimate.
        generator: Random generator for the probes, on ``y``'s device.

    Returns:
        Tensor of shape ``(batch,)``.

    Raises:
        ValueError: If ``samples < 1``.
    """
    return _jacobian_stats(field, t, y, samples, exact, generator)[0]


def jacobian_frobenius(
    field: nn.Module,
    t: float | Tensor,
    y: Tensor,
    samples: int = 1,
    exact: bool = False,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Per-sample squared Frobenius norm ‖∂F/∂y‖_F² = tr(J Jᵀ).

    Exact: the sum of squared Jacobian rows. Otherwise the unbiased estimate
    ``(1/S) Σ_k ‖z_kᵀ J_b‖²`` with ``z_k ~ N(0, I)`` (variance ``2‖J Jᵀ‖_F² / S``); arguments,
    probes and errors as in :func:`divergence`.

    Returns:
        Tensor of shape ``(batch,)``.
    """
    return _jacobian_stats(field, t, y, samples, exact, generator)[1]


def _as_field_list(fields: Fields) -> list[nn.Module]:
    if isinstance(fields, nn.ModuleList | Sequence):
        return list(fields)
    return [fields]


def total_variation(fields: Fields) -> Tensor:
    """Total variation of per-step weights, Σ_{t=1}^{T-1} ‖γ_t − γ_{t−1}‖².

    ``γ_t`` is the flattened parameter vector of ``fields[t]``; the fields must have parameters of
    identical shapes. A single field (or a list of one) gives 0.

    Args:
        fields: One field, or a list/``ModuleList`` of ``T`` per-step fields.

    Returns:
        A 0-dim tensor, differentiable in every field's parameters.

    Raises:
        ValueError: If consecutive fields' parameter shapes differ.
    """
    mods = _as_field_list(fields)
    params = [list(m.parameters()) for m in mods]
    first = next((p[0] for p in params if p), None)
    tv = torch.zeros(()) if first is None else first.new_zeros(())
    for k in range(1, len(mods)):
        prev, cur = params[k - 1], params[k]
        if [p.shape for p in prev] != [p.shape for p in cur]:
            raise ValueError(f"fields {k - 1} and {k} have different parameter shapes")
        for a, b in zip(prev, cur, strict=True):
            tv = tv + (b - a).pow(2).sum()
    return tv


@dataclass(frozen=True)
class RegularizerTerms:
    """Terms of :func:`trajectory_regularizer`, for logging.

    Attributes:
        total: ``alpha_div * divergence + alpha_tv * total_variation``.
        divergence: ``1/(dT) Σ_{t=0}^{T} (t/T)^p mean_batch ∇·F(γ_t, y_t)`` (without α_div).
        total_variation: ``1/T Σ_{t=1}^{T} ‖γ_t − γ_{t−1}‖²`` (without α_TV).
    """

    total: Tensor
    divergence: Tensor
    total_variation: Tensor


@overload
def trajectory_regularizer(
    fields: Fields, times: Sequence[float | Tensor], states: Sequence[Tensor], *,
    alpha_div: float = ..., alpha_tv: float = ..., p: float = ..., samples: int = ...,
    exact: bool = ..., generator: torch.Generator | None = ..., detach_states: bool = ...,
    return_terms: Literal[False] = ...,
) -> Tensor: ...  # fmt: skip
@overload
def trajectory_regularizer(
    fields: Fields, times: Sequence[float | Tensor], states: Sequence[Tensor], *,
    alpha_div: float = ..., alpha_tv: float = ..., p: float = ..., samples: int = ...,
    exact: bool = ..., generator: torch.Generator | None = ..., detach_states: bool = ...,
    return_terms: Literal[True],
) -> RegularizerTerms: ...  # fmt: skip


def trajectory_regularizer(
    fields: Fields,
    times: Sequence[float | Tensor],
    states: Sequence[Tensor],
    *,
    alpha_div: float = 0.0,
    alpha_tv: float = 0.0,
    p: float = 0.0,
    samples: int = 1,
    exact: bool = False,
    generator: torch.Generator | None = None,
    detach_states: bool = False,
    return_terms: bool = False,
) -> Tensor | RegularizerTerms:
    """The paper's trajectory regulariser (paper notes §1.5).

    ``R = α_div/(dT) Σ_{t=0}^{T} (t/T)^p mean_b ∇·F(γ_t, y_t) + α_TV/T Σ_{t=1}^{T} ‖γ_t−γ_{t−1}‖²``

    with ``T = len(states) − 1``, ``d = states[0][0].numel()`` and ``0^0 = 1``. The divergence
    is exact or a Hutchinson estimate (:func:`divergence`), batch-averaged. A shared field gives
    ``γ_t = γ`` for all t (TV = 0). With ``T`` per-step fields the final state ``y_T`` has no step
    of its own: it is evaluated with the last step's field, ``γ_T := γ_{T−1}`` (so the t = T TV
    term is 0). Field ``k`` is called at ``times[k]``.

    The reference code deviates: it wraps the divergence term in a sigmoid, uses trapezoid weights
    with ``((t+1)/(T+1))^p``, and detaches the states (training γ only). This implements the
    paper's formula; ``detach_states=True`` restores the last deviation only.

    Args:
        fields: One shared field, or a list/``ModuleList`` of ``T`` per-step fields.
        times: ``T + 1`` times ``t_0 … t_T``.
        states: ``T + 1`` states ``y_0 … y_T``, each ``(batch, *state)``.
        alpha_div: Weight α_div of the divergence term.
        alpha_tv: Weight α_TV of the total-variation term.
        p: Exponent ``p >= 0`` of the step weights ``(t/T)^p``.
        samples: Hutchinson probes per state (``>= 1``).
        exact: Use exact divergences.
        generator: Random generator for the probes.
        detach_states: Stop gradients into the states (reference-code behaviour).
        return_terms: Return a :class:`RegularizerTerms` instead of the scalar.

    Returns:
        The scalar ``R`` (0-dim tensor), or its terms. A term whose α is 0 is computed only when
        ``return_terms`` is set (otherwise it is reported as 0, saving its cost).

    Raises:
        ValueError: If ``samples < 1``, ``p < 0``, fewer than two states, ``len(times) !=
            len(states)``, or the number of per-step fields is neither 1 nor ``T``.
    """
    _check_samples(samples)
    if p < 0:
        raise ValueError(f"p must be >= 0, got p={p}")
    if len(states) < 2 or len(times) != len(states):
        raise ValueError(
            f"need T + 1 >= 2 states and as many times; got {len(states)} and {len(times)}"
        )
    n_steps = len(states) - 1
    mods = _as_field_list(fields)
    if len(mods) not in (1, n_steps):
        raise ValueError(f"expected 1 or T={n_steps} fields, got {len(mods)}")
    y0 = states[0]
    dim = y0[0].numel()
    div = y0.new_zeros(())
    if alpha_div != 0.0 or return_terms:
        for k, (t, y) in enumerate(zip(times, states, strict=True)):
            weight = (k / n_steps) ** p
            if weight == 0.0:  # the t = 0 state when p > 0: skip its VJPs
                continue
            field = mods[min(k, len(mods) - 1)]
            y = y.detach() if detach_states else y
            est = divergence(field, t, y, samples, exact, generator=generator)
            div = div + weight * est.mean()
        div = div / (dim * n_steps)
    tv = y0.new_zeros(())
    if len(mods) > 1 and (alpha_tv != 0.0 or return_terms):
        tv = total_variation(mods).to(y0) / n_steps
    total = alpha_div * div + alpha_tv * tv
    return RegularizerTerms(total, div, tv) if return_terms else total
