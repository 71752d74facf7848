"""Benchmark 8: inexact gradients (``backward="jfb"``, ``"phantom"``) against the exact adjoint.

An inexact backward keeps the forward values and replaces the adjoint solve
``(I − ∂Φ/∂y)ᵀ v = ∇_y L`` by autograd through ``k`` damped steps from the solution
(:mod:`irn.inexact`): JFB is ``k = 1`` undamped, Phantom ``k = 5`` with damping ½ by default.
For each backward of :data:`BACKWARDS`, on every benchmark problem (both kinds, both sizes, plain
and declared field; backward Euler, θ = h = 1, loss ``mean(y²)``):

* **accuracy**, in float64 at the training benchmark's tolerance (forward and adjoint 1e-5):
  the gradient ``g`` of the loss with respect to the weights, and separately to the input ``x``,
  against the reference ``g*``, the exact adjoint at forward and adjoint tolerance 1e-12:
  cosine ``g·g* / (‖g‖ ‖g*‖)`` and relative error ``‖g − g*‖ / ‖g*‖``;
* **time**, in float32 at tolerance 1e-5: one training step (zero grads, forward, loss,
  backward) over the explicit step's (θ = 0), medians of interleaved rounds, all backwards and
  the explicit step of one case in the same rounds.

Result keys (``inexact`` in the result file): ``tol``, ``reference_tol``, ``quick``,
``backwards`` (label -> the ``backward=`` passed); ``rows``, one per problem, size, field and
backward (``"explicit (θ = 0)"`` first): ``problem``, ``size``, ``state``, ``batch``, ``field``,
``backward``, ``ms``, ``ratio_to_explicit``, ``k_forward``, ``k_backward`` (adjoint iterations;
0 for the inexact ones, which solve nothing), and for θ = 1 ``cos_weights``,
``rel_error_weights``, ``cos_input``, ``rel_error_input``.
"""

from __future__ import annotations

import torch

import irn
from irn.inexact import Phantom

from .common import interleaved, table, write
from .problems import dims, problem
from .training import TOL, _step

#: label -> the layer's ``backward=``; "adjoint" is the exact gradient (the default).
BACKWARDS = {
    "adjoint": "adjoint",
    "jfb": "jfb",
    "phantom": "phantom",
    "phantom(steps=10)": Phantom(steps=10, damping=0.5),
}
REFERENCE_TOL = 1e-12


def _grads(layer, field, x) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight gradient, input gradient) of ``mean(layer(x)²)``, flattened."""
    x = x.detach().requires_grad_(True)
    loss = layer(x).square().mean()
    gx, *gw = torch.autograd.grad(loss, [x, *field.parameters()])
    return torch.cat([g.flatten() for g in gw]), gx.flatten()


def _compare(g: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """(cosine, relative error) of ``g`` against ``ref``."""
    cos = float(g @ ref / (g.norm() * ref.norm()))
    return cos, float((g - ref).norm() / ref.norm())


def accuracy(kind: str, size: str, declared: bool) -> dict[str, dict]:
    """label -> cosines and relative errors of the weight and input gradients (float64)."""
    field, x = problem(kind, size, dtype=torch.float64, declared=declared)
    exact = irn.ThetaLayer(field, theta=1.0, h=1.0, tol=REFERENCE_TOL,
                           adjoint_tol=REFERENCE_TOL, max_iter=200)  # fmt: skip
    ref_w, ref_x = _grads(exact, field, x)
    out = {}
    for label, backward in BACKWARDS.items():
        layer = irn.ThetaLayer(field, theta=1.0, h=1.0, tol=TOL, adjoint_tol=TOL,
                               backward=backward)  # fmt: skip
        gw, gx = _grads(layer, field, x)
        (cw, ew), (cx, ex) = _compare(gw, ref_w), _compare(gx, ref_x)
        out[label] = {"cos_weights": cw, "rel_error_weights": ew, "cos_input": cx,
                      "rel_error_input": ex}  # fmt: skip
    return out


def timing(kind: str, size: str, declared: bool, rounds: int) -> dict[str, dict]:
    """label -> ms of one float32 training step, its ratio to the explicit step, and counts."""
    field, x = problem(kind, size, declared=declared)
    x = x.requires_grad_(True)
    layers = {"explicit": irn.ThetaLayer(field, theta=0.0, h=1.0)}
    layers.update({label: irn.ThetaLayer(field, theta=1.0, h=1.0, tol=TOL, adjoint_tol=TOL,
                                         backward=backward)
                   for label, backward in BACKWARDS.items()})  # fmt: skip
    seconds = interleaved({k: _step(layer, x) for k, layer in layers.items()}, rounds)
    out = {}
    for label, layer in layers.items():
        _step(layer, x)()
        s = layer.stats
        out[label] = {"ms": 1e3 * seconds[label],
                      "ratio_to_explicit": seconds[label] / seconds["explicit"],
                      "k_forward": s.iterations,
                      "k_backward": s.backward_iterations or 0}  # fmt: skip
    return out


def run(quick: bool = False) -> dict:
    torch.set_num_threads(1)
    rows = []
    for size in ("small",) if quick else ("small", "large"):
        rounds = (3 if quick else 7) if size == "large" else (5 if quick else 15)
        n, batch = dims(size)
        for kind in ("contractive", "picard-divergent"):
            for declared in (False, True):
                acc = accuracy(kind, size, declared)
                times = timing(kind, size, declared, rounds)
                base = {"problem": kind, "size": size, "state": n, "batch": batch,
                        "field": "declared" if declared else "plain"}  # fmt: skip
                rows.append({**base, "backward": "explicit (θ = 0)", **times["explicit"]})
                for label in BACKWARDS:
                    rows.append({**base, "backward": label, **times[label], **acc[label]})
    print(f"\n### Inexact gradients against the exact adjoint (θ = 1, tol {TOL:g}; accuracy in "
          "float64 against the adjoint at 1e-12, time in float32, 1 thread)\n")  # fmt: skip
    # 1 − cos shows what a cosine of 0.99999 hides.
    shown = [{**r, **{f"1 - {k}": 1 - r[k] for k in ("cos_weights", "cos_input") if k in r}}
             for r in rows]  # fmt: skip
    print(table(shown, ["problem", "size", "field", "backward", "ms", "ratio_to_explicit",
                        "k_forward", "k_backward", "1 - cos_weights", "rel_error_weights",
                        "1 - cos_input", "rel_error_input"]))  # fmt: skip
    write("inexact", {"tol": TOL, "reference_tol": REFERENCE_TOL, "quick": quick,
                      "backwards": {k: repr(v) for k, v in BACKWARDS.items()},
                      "rows": rows}, quick)  # fmt: skip
    return {"rows": rows}


if __name__ == "__main__":
    run()
