"""The README as a new user's first page: every Python block runs as pasted, in order, in one
namespace, and the cluster example (examples/train_ddp.py) runs under torchrun with two ranks
and resumes from its checkpoint."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def test_every_python_block_runs_as_pasted(monkeypatch, tmp_path):
    blocks = re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(), re.S | re.M)
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    namespace: dict = {"__name__": "__main__"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)


def test_the_readme_snippet_runs():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Using the library", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 2  # the quick tour and the drop-in example, run in one namespace
    namespace: dict = {}
    for code in blocks:
        exec(compile(code, "README.md", "exec"), namespace)


@pytest.mark.slow
def test_ddp_example_runs_under_torchrun_and_resumes(tmp_path):
    guard = str(Path(__file__).with_name("netguard"))
    path = os.pathsep.join(p for p in (guard, os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", PYTHONPATH=path)
    if sys.platform.startswith("linux"):
        env["GLOO_SOCKET_IFNAME"] = "lo"
    checkpoint = tmp_path / "run.pt"
    for epochs in (2, 3):  # the second run resumes the first one's checkpoint
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", str(ROOT / "examples" / "train_ddp.py"),
               "--epochs", str(epochs), "--checkpoint", str(checkpoint)]  # fmt: skip
        proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True,
                              timeout=300)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stdout.count(f"epochs {epochs},") == 1  # rank 0 alone reports
    assert checkpoint.exists()
