"""Install the test suite's network guard (tests/network_guard.py) at interpreter start.

Python imports ``sitecustomize`` from ``sys.path`` when it starts, so every process started
with ``PYTHONPATH=tests/netguard`` is guarded, notebook kernels included, e.g.
``PYTHONPATH=$(CURDIR)/tests/netguard pytest --nbval ...``. This file shadows any other
sitecustomize on the path, and runs it afterwards.
"""

import importlib.util
import sys
from pathlib import Path

_here = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("network_guard", _here.parent / "network_guard.py")
network_guard = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("network_guard", network_guard)
_spec.loader.exec_module(network_guard)
network_guard.install()

# Chain to the sitecustomize this one shadows (a distribution's, say), if there is one.
for _entry in sys.path:
    _other = Path(_entry or ".").resolve() / "sitecustomize.py"
    if _other.is_file() and _other.parent != _here:
        _spec = importlib.util.spec_from_file_location("_shadowed_sitecustomize", _other)
        _spec.loader.exec_module(importlib.util.module_from_spec(_spec))
        break
