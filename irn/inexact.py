"""Inexact gradients of an implicit step, as measured opt-ins: Jacobian-free and phantom backprop.

The exact gradient of ``y = x + Φ(x, y)`` needs the adjoint solve ``(I − ∂Φ/∂y)ᵀ v = ∇_y L``
(``irn.adjoint``). Both alternatives here replace it by autograd through a few damped steps
taken from the solution ``y*`` (detached), ``z₀ = y*``,

    z_{i+1} = (1 − λ) z_i + λ (x + Φ(x, z_i)),   i = 0, …, k − 1,

and hand ``∂z_k/∂(x, γ)`` back as the gradient. The layer's output keeps the solver's values:
it is ``y* + (z_k − stop_gradient(z_k))``, so only the gradient differs from the exact one.

* **JFB** (Jacobian-free backprop, Fung et al. 2022): ``k = 1, λ = 1``, i.e. ``v = ∇_y L``
  (the inverse replaced by the identity). One vector–Jacobian product of Φ, no solve.
* **Phantom** (Geng et al. 2021, "unrolled phantom gradient"): ``k`` damped steps. For a linear
  step with ``J = ∂Φ/∂y`` the gradient is the exact one times ``I − q^k`` with
  ``q = (1−λ)I + λJ`` (a truncated Neumann series), so it converges to the exact gradient
  when the damped iteration contracts, with relative error ``‖q‖^k``.

Both keep the graph of ``k`` evaluations of Φ (memory grows with ``k``, not with the solver's
iterations) and give no double backward beyond what those evaluations give. What they cost in
accuracy and gain in time is measured in ``benchmarks/`` and the appendix; the default stays
exact (:class:`irn.plan.Adjoint`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ._layer_checks import positive_int, real

__all__ = ["JFB", "Phantom"]


@dataclass(frozen=True)
class Phantom:
    """``backward=irn.Phantom(steps=5, damping=0.5)``: the phantom gradient of ``steps``
    damped steps ``z ← (1 − λ) z + λ(x + Φ(x, z))`` from the solution (``λ = damping`` in
    (0, 1]); ``backward="phantom"`` uses the defaults."""

    steps: int = 5
    damping: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", positive_int("Phantom steps", self.steps))
        damping = real("Phantom damping", self.damping, "a number in (0, 1]")
        if not 0.0 < damping <= 1.0:
            raise ValueError(f"Phantom damping must lie in (0, 1], got {self.damping!r}")
        object.__setattr__(self, "damping", damping)

    @property
    def name(self) -> str:
        return "jfb" if (self.steps, self.damping) == (1, 1.0) else "phantom"

    def attach(self, phi, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``y``'s values with the gradient of ``steps`` damped steps; ``phi(z)`` is
        ``Φ(x, z)`` with its graph to ``x`` and the parameters."""
        lam = self.damping
        z = y.detach()
        for _ in range(self.steps):
            step = x + phi(z)
            z = step if lam == 1.0 else (1 - lam) * z + lam * step
        return y.detach() + (z - z.detach())


def JFB() -> Phantom:  # noqa: N802 (reads as the class it stands for)
    """``backward=irn.JFB()`` (or ``"jfb"``): Jacobian-free backprop, one undamped step."""
    return Phantom(steps=1, damping=1.0)
