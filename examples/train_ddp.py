"""Data-parallel training of an implicit residual network: the README's cluster example.

Runs as it is under plain python (one process) or torchrun (one process per rank):

    python examples/train_ddp.py --epochs 5
    torchrun --standalone --nproc_per_node=2 examples/train_ddp.py --epochs 5

Every rank passes the same data to irn.train.fit, which trains each rank's shard of every
global batch (DistributedDataParallel: gloo on CPUs, NCCL on GPUs); rank 0 writes the
checkpoint, and a second run with the same --checkpoint resumes from it.
"""

from __future__ import annotations

import argparse
import os

import torch
from torch import nn
from torch.nn import functional as F

import irn
from irn import distributed
from irn.train import TrainConfig, fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--checkpoint", default="run.pt", help="written by rank 0; resumed")
    args = parser.parse_args()

    distributed.init_from_env()  # joins torchrun's process group; no-op under plain python
    device = distributed.device()  # cuda:LOCAL_RANK, or cpu
    torch.manual_seed(0)  # the same initial weights on every rank
    data = irn.data.digits(n_train=512, seed=0)  # 8×8 images, bundled with scikit-learn
    x, y = data.x_train.flatten(1).to(device), data.y_train.to(device)
    field = irn.SpectralNormalized(irn.MLP(dim=33, width=64), alpha=-1.9, beta=-0.1)
    net = irn.ImplicitResNet(
        field, steps=2, interval=2.0, theta=1.0, codim=1,
        input_map=nn.Linear(64, 32), output_map=nn.Linear(33, 10),
    ).to(device)  # fmt: skip
    resume = args.checkpoint if os.path.exists(args.checkpoint) else None
    history = fit(net, F.cross_entropy, (x, y),
                  TrainConfig(epochs=args.epochs, batch_size=128, lr=1e-2, progress=False),
                  checkpoint=args.checkpoint, resume=resume)  # fmt: skip
    if distributed.is_main():
        print(f"epochs {len(history)}, loss {history.loss[-1]:.4f}, "
              f"forward iterations per step {history.iterations[-1]:.1f}")  # fmt: skip
    distributed.cleanup()


if __name__ == "__main__":
    main()
