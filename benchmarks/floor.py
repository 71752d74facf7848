"""Benchmark 6: where a θ = 1 training step's time goes, against its arithmetic floor.

The step's unavoidable work is counted in the units it is made of, each timed on its own in the
same interleaved rounds as the explicit and the implicit step:

* ``F``: one evaluation of the field without a graph (every forward iteration is one);
* ``F+graph``: one evaluation recording its graph (Φ at the solution, for the adjoint);
* ``VJP_y``: one adjoint product ``wᵀ ∂F/∂y`` on that graph (no weight gradients);
* ``VJP_all``: the final backward through Φ (weights and state).

``floor = evaluations·F + (F+graph) + k_backward·VJP_y + VJP_all`` is what the step would cost
if the solvers' own bookkeeping (norms, Gram matrices, mixing, masks) were free; the rest of the
measured time is that bookkeeping, per-operation dispatch included. ``floor / explicit`` is the
ratio no solver with these iteration counts can beat; ``measured / floor`` is the overhead.
"""

from __future__ import annotations

import torch

import irn

from .common import side_by_side, table, write
from .problems import dims, problem
from .training import TOL, _step


def _units(field, x):
    g = torch.randn_like(x)
    y = x.detach().requires_grad_(True)
    out = field(1.0, y)

    def f():
        with torch.no_grad():
            return field(1.0, x)

    def f_graph():
        return field(1.0, x.detach().requires_grad_(True))

    def vjp_y():
        return torch.autograd.grad(out, y, g, retain_graph=True)

    def vjp_all():
        return torch.autograd.grad(out, [y, *field.parameters()], g, retain_graph=True)

    return {"F": f, "F+graph": f_graph, "VJP_y": vjp_y, "VJP_all": vjp_all}


def run(quick: bool = False) -> dict:
    torch.set_num_threads(1)
    rows = []
    for size in ("small", "large"):
        for declared in (False, True):
            field, x = problem("picard-divergent", size, declared=declared)
            x = x.requires_grad_(True)
            explicit = irn.ThetaLayer(field, theta=0.0, h=1.0)
            implicit = irn.ThetaLayer(field, theta=1.0, h=1.0, tol=TOL, adjoint_tol=TOL)
            fns = {"explicit": _step(explicit, x), "implicit": _step(implicit, x)}
            fns.update(_units(field, x))
            rounds = (3 if quick else 7) if size == "large" else (5 if quick else 15)
            t = side_by_side(fns, rounds)
            _step(implicit, x)()
            s = implicit.stats
            kb = s.backward_iterations or 0
            floor = s.evaluations * t["F"] + t["F+graph"] + kb * t["VJP_y"] + t["VJP_all"]
            n, batch = dims(size)
            rows.append({
                "size": size, "state": n, "batch": batch,
                "field": "declared" if declared else "plain", "evaluations": s.evaluations,
                "k_forward": s.iterations, "k_backward": kb, "adjoint": s.backward.solver,
                **{f"{k}_ms": 1e3 * v for k, v in t.items()},
                "floor_ms": 1e3 * floor, "measured / explicit": t["implicit"] / t["explicit"],
                "floor / explicit": floor / t["explicit"],
                "bookkeeping share": 1 - floor / t["implicit"],
            })  # fmt: skip
    print("\n### Where the θ = 1 training step's time goes (problem (b), tol 1e-5, 1 thread)\n")
    cols = ["size", "field", "evaluations", "k_backward", "explicit_ms", "implicit_ms", "F_ms",
            "VJP_y_ms", "VJP_all_ms", "floor_ms", "measured / explicit", "floor / explicit",
            "bookkeeping share"]  # fmt: skip
    print(table(rows, cols))
    print(
        "\nfloor = evaluations·F + (F+graph) + k_backward·VJP_y + VJP_all: the step with free "
        "solver bookkeeping. bookkeeping share = 1 − floor/measured."
    )
    write("floor", {"tol": TOL, "quick": quick, "rows": rows}, quick)
    return {"rows": rows}


if __name__ == "__main__":
    run()
