"""Evaluation of the robustness experiment's trained networks (:mod:`.robustness`): accuracy
under Gaussian noise (the same draws for every θ), under FGSM and PGD (:mod:`irn.attacks`), the
clean logit margin, max |R(hλ)| per layer and the measured noise gain of the implicit blocks."""

from __future__ import annotations

import time

import numpy as np
import torch

from .. import attacks
from .. import data as irn_data
from ..stability import trajectory_spectrum
from .robustness_nets import blocks

__all__ = ["attack_sweep", "block_gain", "contraction", "margin", "noise_sweep"]

EVAL_BATCH = 1000  # images per forward pass in evaluation (fewer, larger solves)


@torch.no_grad()
def _scores(net, x, y, batch: int) -> tuple[float, float, float]:
    """Top-1 and top-2 accuracy in % and the fraction of unconverged forward solves."""
    top1 = top2 = failed = solves = 0
    for i in range(0, len(y), batch):
        logits, traj = net(x[i : i + batch], return_trajectory=True)
        best = logits.topk(2, dim=1).indices
        yb = y[i : i + batch, None]
        top1 += int((best[:, :1] == yb).sum())
        top2 += int((best == yb).any(dim=1).sum())
        for s in traj.stats:
            if s.implicit:
                solves += 1
                failed += not s.converged
    n = len(y)
    return 100 * top1 / n, 100 * top2 / n, failed / solves if solves else 0.0


def noise_sweep(net, x, y, config, seed: int, split: int) -> dict:
    """Accuracies at every noise std, averaged over draws. The noise depends on (seed, split,
    std, draw) only, so every θ sees exactly the same noisy images (common random numbers)."""
    top1, top2, failed, seconds, cpu, passes = [], [], 0.0, 0.0, 0.0, 0
    for i, std in enumerate(config.noise_stds):
        draws = 1 if std == 0 else config.noise_draws
        acc1 = acc2 = 0.0
        for d in range(draws):
            key = np.random.SeedSequence([seed, split, i, d]).generate_state(1)[0]
            gen = torch.Generator().manual_seed(int(key))
            clamp = (0.0, 1.0) if config.clamp else None
            noisy = irn_data.add_gaussian_noise(x, std, clamp=clamp, generator=gen)
            start, start_cpu = time.perf_counter(), time.process_time()
            a1, a2, f = _scores(net, noisy, y, EVAL_BATCH)
            seconds += time.perf_counter() - start
            cpu += time.process_time() - start_cpu
            passes += 1
            acc1, acc2, failed = acc1 + a1 / draws, acc2 + a2 / draws, max(failed, f)
        top1.append(round(acc1, 3))
        top2.append(round(acc2, 3))
    return {"top1": top1, "top2": top2, "unconverged": failed, "seconds": seconds / passes,
            "cpu_seconds": cpu / passes}  # fmt: skip


def contraction(net, x: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per layer (every step of every implicit block): max over samples and eigenvalues of
    |R(hλ)|, and the median over samples of each sample's max, with λ the eigenvalues of
    ∂F/∂y where the step evaluates F."""
    with torch.no_grad():
        pairs = blocks(net, x)
    spectra = [s for block, u in pairs for s in trajectory_spectrum(block, u)]
    per_sample = [s.step_eigenvalues.abs().amax(dim=1) for s in spectra]
    return [float(m.max()) for m in per_sample], [float(m.median()) for m in per_sample]


@torch.no_grad()
def block_gain(net, x: torch.Tensor, std: float, seed: int) -> list[float]:
    """How much the θ-steps alone amplify real input noise, per image: the product over the
    implicit blocks of ``‖y_T(u+δ) − y_T(u)‖ / ‖y_0(u+δ) − y_0(u)‖``, with ``u`` and ``u+δ``
    the block's inputs for the clean image and for the image plus ε ~ N(0, std²) on the
    pixels, ``y_0`` the (augmented) state the steps start from (embeddings, strided
    convolutions and the classifier are left out)."""
    key = np.random.SeedSequence([seed, 2]).generate_state(1)[0]
    noisy = irn_data.add_gaussian_noise(x, std, generator=torch.Generator().manual_seed(int(key)))
    ratios = []
    for i in range(0, len(x), EVAL_BATCH):
        clean_pairs = blocks(net, x[i : i + EVAL_BATCH])
        noisy_pairs = blocks(net, noisy[i : i + EVAL_BATCH])
        gain = torch.ones(len(x[i : i + EVAL_BATCH]), dtype=torch.float64)
        for (block, u), (_, v) in zip(clean_pairs, noisy_pairs, strict=True):
            _, clean = block(u, return_trajectory=True)
            _, pert = block(v, return_trajectory=True)
            out = (pert.states[-1] - clean.states[-1]).flatten(1).norm(dim=1)
            gain *= (out / (pert.states[0] - clean.states[0]).flatten(1).norm(dim=1)).double()
        ratios.append(gain)
    return torch.cat(ratios).tolist()


@torch.no_grad()
def margin(net, x: torch.Tensor, y: torch.Tensor) -> float:
    """Median clean logit margin ``z_y − max_{k≠y} z_k`` (negative where misclassified)."""
    logits = torch.cat([net(x[i : i + EVAL_BATCH]) for i in range(0, len(x), EVAL_BATCH)])
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
    return float((true - other).median())


def attack_sweep(net, x, y, config) -> dict:
    """Top-1 accuracy in % under FGSM and PGD (:mod:`irn.attacks`) at every ``attack_eps``,
    pixels kept in [0, 1]; gradients through the implicit layers by their adjoint."""
    n = config.attack_samples or len(y)
    x, y = x[:n], y[:n]
    out: dict[str, list[float]] = {"fgsm": [], "pgd": []}
    for eps in config.attack_eps:
        for name, found in out.items():
            correct = 0
            for i in range(0, n, EVAL_BATCH):
                xb, yb = x[i : i + EVAL_BATCH], y[i : i + EVAL_BATCH]
                if name == "fgsm":
                    adv = attacks.fgsm(net, xb, yb, eps)
                else:
                    adv = attacks.pgd(net, xb, yb, eps, steps=config.pgd_steps)
                with torch.no_grad():
                    correct += int((net(adv).argmax(1) == yb).sum())
            found.append(round(100 * correct / n, 3))
    return out
