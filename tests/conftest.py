"""Shared test setup: one thread, fixed seeds, no network; ``tests/`` on the import path.

The test fields live in ``tests/fields.py`` (``from fields import TanhField``); the names
imported below stay importable from ``conftest`` for modules written before that."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)


def _install_network_guard() -> None:
    """No network at run time: only this machine may be reached (tests/network_guard.py)."""
    path = Path(__file__).with_name("network_guard.py")
    spec = importlib.util.spec_from_file_location("network_guard", path)
    guard = sys.modules.setdefault("network_guard", importlib.util.module_from_spec(spec))
    if not hasattr(guard, "install"):
        spec.loader.exec_module(guard)
    guard.install()


_install_network_guard()

# pytest's default import mode puts this directory on sys.path already; say so explicitly, so
# that `from fields import ...` works under any import mode.
_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

from fields import Affine, Scalar, TanhField  # noqa: E402, F401  (re-exported, see above)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
