"""Read-outs of the robustness experiment's results (:mod:`irn.experiments.robustness`):
per-θ summaries over seeds, the paired trend verdict, and a short text table."""

from __future__ import annotations

import numpy as np

__all__ = [
    "CONTROLS",
    "adjacent",
    "control_table",
    "effect",
    "per_seed",
    "summarize",
    "summary",
    "theta_effect",
    "trend",
]


def summarize(results: dict, key: str = "accuracy", split: str = "train") -> dict:
    """Mean, std (over seeds, ddof 0), min and max of ``results[key][split]``: arrays
    ``(θ, std)``. ``results`` may be the full dict or its ``"results"`` part."""
    res = results.get("results", results)
    a = np.asarray(res[key][split], dtype=float)  # (θ, seed, std)
    return {"mean": a.mean(1), "std": a.std(1), "min": a.min(1), "max": a.max(1)}


def trend(results: dict, split: str = "train", min_std: float = 0.3) -> dict:
    """Does top-1 accuracy at noise std ≥ ``min_std`` rise from θ = 0 to θ = 1?

    The runs of one seed share initial weights, mini-batches and noise draws across θ, so
    the comparison is paired: per seed ``d = acc(θ=1) − acc(θ=0)``. Verdict ``"holds"`` if at
    every such std every seed has ``d > 0``, the mean ``d`` exceeds twice its standard error
    ``sd(d)/√n`` and the mean accuracy is positively rank-correlated with θ (Spearman);
    ``"reversed"`` if every ``d < 0`` with the mean below minus twice its standard error;
    otherwise (and always with fewer than 3 seeds) ``"inconclusive"``.

    Returns:
        ``verdict``, and per std: ``gaps`` (mean ``d``), ``gap_sd`` (its seed standard
        deviation), ``min_gap``/``max_gap`` over seeds, ``spread`` (the unpaired
        ``sqrt(sd₀² + sd₁²)`` of the two θ's accuracies) and ``spearman``.
    """
    res = results.get("results", results)
    thetas = np.asarray(res["thetas"])
    stds = np.asarray(res["noise_stds"])
    if 0.0 not in thetas or 1.0 not in thetas:
        raise ValueError("trend needs runs at θ = 0 and θ = 1")
    cols = np.flatnonzero(stds >= min_std - 1e-12)
    if cols.size == 0:
        raise ValueError(f"no noise std >= {min_std} in the results")
    acc = np.asarray(res["accuracy"][split], dtype=float)[:, :, cols]  # (θ, seed, std)
    i0, i1 = int(np.flatnonzero(thetas == 0.0)[0]), int(np.flatnonzero(thetas == 1.0)[0])
    d = acc[i1] - acc[i0]  # (seed, std)
    n = d.shape[0]
    gaps, gap_sd = d.mean(0), d.std(0, ddof=1) if n > 1 else np.zeros(d.shape[1])
    margin = 2 * gap_sd / np.sqrt(n)
    ranks = [_spearman(thetas, acc[:, :, c].mean(1)) for c in range(len(cols))]
    if n < 3:  # too few pairs to tell a trend from chance
        verdict = "inconclusive"
    elif (d > 0).all() and (gaps > margin).all() and all(r > 0 for r in ranks):
        verdict = "holds"
    elif (d < 0).all() and (gaps < -margin).all():
        verdict = "reversed"
    else:
        verdict = "inconclusive"
    spread = np.hypot(acc[i0].std(0), acc[i1].std(0))
    return {"verdict": verdict, "stds": stds[cols].tolist(), "gaps": gaps.tolist(),
            "gap_sd": gap_sd.tolist(), "min_gap": d.min(0).tolist(),
            "max_gap": d.max(0).tolist(), "spread": spread.tolist(), "spearman": ranks}  # fmt: skip


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (scipy; ties get average ranks); 0 if either is constant."""
    from scipy.stats import spearmanr  # deferred: scipy.stats is slow to import

    a, b = np.asarray(a, float), np.asarray(b, float)
    if np.ptp(a) == 0 or np.ptp(b) == 0:  # spearmanr would warn and return nan
        return 0.0
    return float(spearmanr(a, b).statistic)


def summary(results: dict) -> str:
    """A short text table: mean top-1 (train / held-out) per θ at each noise std, time."""
    res = results["results"]
    train, test = summarize(res, split="train"), summarize(res, split="test")
    stds = res["noise_stds"]
    head = "theta  " + " ".join(f"{s:>11.2g}" for s in stds) + "   s/epoch"
    lines = [f"top-1 accuracy in % (train/held-out, mean of {len(res['seeds'])} seeds)", head]
    for i, theta in enumerate(res["thetas"]):
        cells = " ".join(
            f"{a:5.1f}/{b:5.1f}" for a, b in zip(train["mean"][i], test["mean"][i], strict=True)
        )
        lines.append(f"{theta:5.2f}  {cells}   {np.mean(res['epoch_time'][i]):7.3f}")
    if 0.0 in res["thetas"] and 1.0 in res["thetas"] and max(stds) >= 0.3:
        lines.append(f"trend (std >= 0.3, training images): {trend(res)['verdict']}")
    lines.append(f"wall time {results['meta']['wall_time']:.1f} s")
    return "\n".join(lines)


# ------------------------------------------------------------------ paired effects and controls
def per_seed(results: dict, theta: float, key: str, split: str = "test", index=None) -> np.ndarray:
    """One θ's values over seeds: ``results[key][split][θ][seed][index]`` for the accuracy
    tables (``accuracy``, ``top2``, ``fgsm``, ``pgd``; ``index`` the noise std or ε position),
    ``results[key][θ][seed]`` for per-network scalars (``final_loss``, ``margin_test``, ...)."""
    res = results.get("results", results)
    i = list(res["thetas"]).index(float(theta))
    table = res[key]
    if isinstance(table, dict):
        rows = np.asarray(table[split][i], dtype=float)
        return rows[:, index] if index is not None else rows
    return np.asarray(table[i], dtype=float)


def effect(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> dict:
    """Paired effect ``a − b`` over seeds (same seed: same initial weights, batches and noise):
    mean, the t-interval at ``level`` over the seeds, how many seeds have ``a > b``, and a
    verdict computed from the interval: ``"a > b"`` if it lies above 0, ``"a < b"`` if below,
    ``"no detectable effect"`` if it contains 0 (``"too few seeds"`` with fewer than 3)."""
    from scipy.stats import t as student  # deferred: scipy.stats is slow to import

    d = np.asarray(a, float) - np.asarray(b, float)
    n = d.size
    mean = float(d.mean())
    half = float(student.ppf(0.5 + level / 2, n - 1) * d.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0
    lo, hi = mean - half, mean + half
    if n < 3:
        verdict = "too few seeds"
    elif lo > 0:
        verdict = "a > b"
    elif hi < 0:
        verdict = "a < b"
    else:
        verdict = "no detectable effect"
    return {"mean": mean, "low": lo, "high": hi, "positive": int((d > 0).sum()), "n": n,
            "verdict": verdict}  # fmt: skip


def theta_effect(
    one: dict,
    zero: dict | None = None,
    *,
    key: str = "accuracy",
    split: str = "test",
    index=None,
    theta: float = 1.0,
) -> dict:
    """Paired effect of θ = ``theta`` minus θ = 0, the θ = 0 networks taken from ``zero`` (a
    control run that only trains θ = 0; default: ``one`` itself). Both runs must use the same
    seeds, so that pairs share initial weights, batches and noise draws."""
    zero = one if zero is None else zero
    seeds_one = one.get("results", one)["seeds"]
    seeds_zero = zero.get("results", zero)["seeds"]
    if list(seeds_one) != list(seeds_zero):
        raise ValueError(f"paired runs need the same seeds, got {seeds_one} and {seeds_zero}")
    a = per_seed(one, theta, key, split, index)
    b = per_seed(zero, 0.0, key, split, index)
    return effect(a, b)


def adjacent(results: dict, *, key: str = "accuracy", split: str = "test", index=None) -> list:
    """Paired effects of each θ minus the next smaller θ of the same run."""
    thetas = list(results.get("results", results)["thetas"])
    return [
        {"thetas": (hi, lo), **effect(per_seed(results, hi, key, split, index),
                                      per_seed(results, lo, key, split, index))}
        for lo, hi in zip(thetas[:-1], thetas[1:], strict=True)
    ]  # fmt: skip


# What each control compares: (name, which run gives θ = 1, which gives θ = 0, what it tests).
CONTROLS = (
    ("shared band", "shared", "shared", "the paper's comparison: one band [α, β] for every θ"),
    ("equal contraction", "stability", "stability", "per-θ bands with the same range of R"),
    ("θ = 0 contractive", "shared", "contractive", "θ = 0 on [−2/h, 0], where |R| ≤ 1"),
    ("θ = 0 plain", "shared", "plain", "θ = 0 with no spectral constraint (a plain ResNet)"),
    (
        "θ = 0 equal-R band",
        "shared",
        "stability",
        "θ = 1 on the paper's band against θ = 0 on its equal-contraction band",
    ),
    ("matched fit", "fit", "fit", "every network trained to the same training loss"),
    ("matched compute", "shared", "compute", "θ = 0 given θ = 1's training CPU time"),
)


def _index(values, value) -> int:
    return int(np.flatnonzero(np.isclose(np.asarray(values, float), value))[0])


def control_table(runs: dict, *, std: float = 0.3, eps: float = 0.05, theta: float = 1.0) -> list:
    """One row per control in :data:`CONTROLS` whose runs are in ``runs`` (a dict from the run
    names ``shared``, ``stability``, ``contractive``, ``plain``, ``fit``, ``compute`` to
    results): the paired effect of θ = ``theta`` minus θ = 0 (same seed) on held-out and
    training accuracy at noise ``std``, on held-out accuracy under PGD at ``eps`` (if the runs
    attacked), on clean held-out accuracy and on the final training loss, each with its
    t-interval and verdict (:func:`effect`)."""
    rows = []
    for name, one_key, zero_key, what in CONTROLS:
        if one_key not in runs or zero_key not in runs:
            continue
        one, zero = runs[one_key], runs[zero_key]
        res = one.get("results", one)
        s = _index(res["noise_stds"], std)
        row = {"control": name, "what": what,
               "noise_test": theta_effect(one, zero, split="test", index=s, theta=theta),
               "noise_train": theta_effect(one, zero, split="train", index=s, theta=theta),
               "clean_test": theta_effect(one, zero, split="test", index=0, theta=theta),
               "final_loss": theta_effect(one, zero, key="final_loss", theta=theta)}  # fmt: skip
        if res.get("attack_eps") and eps in res["attack_eps"]:
            e = _index(res["attack_eps"], eps)
            row["pgd_test"] = theta_effect(one, zero, key="pgd", split="test", index=e,
                                           theta=theta)  # fmt: skip
        rows.append(row)
    return rows
