"""Checkpoints: model weights, optimizer and schedule, RNG states and training progress.

A resumed run must continue exactly where the interrupted one stopped, so a training checkpoint
holds every piece of state that the next step reads: the parameters and buffers (spectral-norm
power-iteration vectors included), the optimizer's moments, the lr schedule, the epoch, the
history, and the random number generators (torch's global one, the batch shuffler, Python's and
NumPy's). With the same thread count the resumed run is then bit-identical to an uninterrupted
one (tests/test_checkpoint.py checks this).

Files are written to a temporary file beside the target and moved into place, so a crash while
writing never leaves a truncated checkpoint nor destroys the previous one. Everything stored is
tensors and plain containers, loadable with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..atomic import write_atomic

__all__ = [
    "FORMAT",
    "CheckpointError",
    "capture_rng",
    "load",
    "read_checkpoint",
    "restore_rng",
    "load_into",
    "save",
    "save_training",
    "unwrap",
    "write",
]

FORMAT = "irn.checkpoint/1"  # marks files written by save(); bump if the layout changes


class CheckpointError(ValueError):
    """A checkpoint file is damaged or lacks what was asked of it; the message names the file."""


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (whose keys have no ``module.``)."""
    inner = getattr(model, "module", None)
    is_ddp = isinstance(model, nn.parallel.DistributedDataParallel)
    return inner if is_ddp and isinstance(inner, nn.Module) else model


def write(path: str | os.PathLike[str], payload: dict, *, overwrite: bool = False) -> Path:
    """Atomically ``torch.save`` ``payload`` to ``path`` (temporary file, fsync, rename).

    Raises:
        FileExistsError: If ``path`` exists and ``overwrite`` is False.
    """
    return write_atomic(path, lambda f: torch.save(payload, f), overwrite=overwrite)


def save(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    **extra: Any,
) -> Path:
    """Write ``model.state_dict()``, JSON-able metadata ``extra`` and, when given, the state of
    ``optimizer`` and ``scheduler`` (any object with ``state_dict()``) to ``path``.

    The file is written to a temporary file in the same folder and then moved into place, so an
    interrupted save never leaves a truncated checkpoint or destroys the previous one.

    Returns:
        The path written.

    Raises:
        FileExistsError: If ``path`` exists and ``overwrite`` is False.
        TypeError: If ``extra`` is not JSON-serializable (checked before anything is written).
    """
    payload = _payload(model, optimizer, scheduler, json.dumps(extra))
    return write(path, payload, overwrite=overwrite)


def save_training(
    path: str | os.PathLike[str],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any | None,
    training: dict[str, Any],
) -> Path:
    """Write a training checkpoint (replacing ``path``): :func:`save`'s content plus
    ``training``, a dict of tensors and plain values (epoch, history, RNG states, config)."""
    meta = json.dumps({"epoch": training.get("epoch")})
    return write(path, _payload(model, optimizer, scheduler, meta, training), overwrite=True)


def _payload(model, optimizer, scheduler, meta: str, training: dict | None = None) -> dict:
    # The metadata stays a JSON string: that keeps the file loadable with weights_only=True.
    payload: dict[str, Any] = {
        "format": FORMAT,
        "state_dict": unwrap(model).state_dict(),
        "extra": meta,
    }
    if optimizer is not None:
        payload["optimizer"] = optimizer.state_dict()
        # Its class: a state dict does not say, and another class's state loads into an
        # optimizer without complaint, only to fail (KeyError) or misbehave at its first step.
        payload["optimizer_class"] = type(optimizer).__qualname__
    if scheduler is not None:
        payload["scheduler"] = scheduler.state_dict()
    if training is not None:
        payload["training"] = training
    return payload


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a checkpoint without applying it.

    Returns:
        ``{"state_dict", "extra", "optimizer", "optimizer_class", "scheduler", "training"}``;
        ``extra`` is the metadata dict, the others are ``None`` when the file has none (a plain
        saved state dict reads as ``{"state_dict": it, "extra": {}, ...}``).

    Raises:
        FileNotFoundError: If there is no file at ``path``.
        CheckpointError: If the file is empty, truncated, not a torch file, or holds something
            other than a checkpoint; the message names the file and the defect.
    """
    path = Path(path)
    obj = _load_file(path)
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, not a dict")
    out: dict[str, Any] = {key: None for key in _OPTIONAL}
    if "format" not in obj:  # a plain torch.save(model.state_dict())
        if not all(isinstance(v, Tensor) for v in obj.values()):
            raise CheckpointError(f"checkpoint {path} holds a dict that is not a state dict")
        return {**out, "state_dict": obj, "extra": {}}
    if obj["format"] != FORMAT:
        raise CheckpointError(
            f"checkpoint {path} has format {obj['format']!r}; this version reads {FORMAT!r}"
        )
    missing = [k for k in ("state_dict", "extra") if k not in obj]
    if missing or not isinstance(obj["state_dict"], dict):
        raise CheckpointError(f"checkpoint {path} lacks a valid {missing or 'state_dict'}")
    try:
        extra = json.loads(obj["extra"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path} has unreadable metadata: {err}") from err
    out.update({key: obj.get(key) for key in _OPTIONAL})
    return {**out, "state_dict": obj["state_dict"], "extra": extra}


_OPTIONAL = ("optimizer", "optimizer_class", "scheduler", "training")


def _load_file(path: Path) -> Any:
    """``torch.load`` (tensors and plain containers only), after checking the file is there,
    not empty and intact; a failure is diagnosed from the file itself."""
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is not a regular file")
    if path.stat().st_size == 0:
        raise CheckpointError(
            f"checkpoint {path} is empty (0 bytes): an interrupted copy or a truncated file"
        )
    _verify_records(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch reports damage as OSError, EOFError, KeyError, ...
        raise CheckpointError(f"checkpoint {path} {_diagnose(path, err)}") from err


def _verify_records(path: Path) -> None:
    """Check every record of torch's zip archive against the CRC-32 the archive stores:
    torch.load does not, so a flipped bit inside a tensor would load as a changed weight."""
    if not zipfile.is_zipfile(path):
        return  # not an archive (or truncated): torch.load's failure is diagnosed below
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()  # reads every record; the first whose CRC fails, or None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        raise CheckpointError(
            f"checkpoint {path} is damaged ({type(err).__name__}: {err})"
        ) from err
    if bad is not None:
        raise CheckpointError(
            f"checkpoint {path} is damaged: record {bad!r} fails its CRC-32 check (a changed "
            "byte on disk or in a copy); use an earlier checkpoint or a fresh copy"
        )


def _diagnose(path: Path, err: Exception) -> str:
    """Why torch.load failed, from the file itself: torch writes a zip archive, which ends in
    a directory record that a truncated copy lacks."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        zipped = f.read(4) == b"PK\x03\x04"
    complete = zipfile.is_zipfile(path)
    detail = str(err).splitlines()[0] if str(err) else "no details"
    detail = f"{type(err).__name__}: {detail}"
    if zipped and not complete:
        return f"is truncated or damaged ({size} bytes, no zip directory at its end; {detail})"
    if complete and "Weights only load failed" in str(err):
        return f"holds Python objects other than tensors and plain containers ({detail})"
    if complete:
        return f"is damaged ({size} bytes; {detail})"
    return f"is not a torch checkpoint (not a torch zip archive; {detail})"


def load(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save` (or a plain saved state dict) into ``model``,
    and into ``optimizer`` and ``scheduler`` when given.

    Tensors are read onto the CPU (``weights_only``) and copied to the model's device.

    Returns:
        The ``extra`` metadata given to :func:`save` (``{}`` for a plain state dict).

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        CheckpointError: (a ``ValueError``) If the file is damaged, holds no state dict, or
            lacks the optimizer/scheduler state asked for.
        RuntimeError: If the checkpoint's keys or shapes do not match the model (strict).
    """
    ckpt = read_checkpoint(path)
    load_into(model, ckpt, path, optimizer=optimizer, scheduler=scheduler)
    return ckpt["extra"]


def load_into(
    model: nn.Module,
    ckpt: dict[str, Any],
    path: str | os.PathLike[str],
    *,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
) -> None:
    """Apply a checkpoint read by :func:`read_checkpoint` from ``path`` (named in errors)."""
    try:
        unwrap(model).load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as err:  # missing/unexpected keys or shapes: say which file
        raise RuntimeError(f"checkpoint {path} does not fit the model: {err}") from err
    if optimizer is not None:
        _check_optimizer_class(ckpt, path, optimizer)
    for name, target in (("optimizer", optimizer), ("scheduler", scheduler)):
        if target is None:
            continue
        if ckpt[name] is None:
            raise CheckpointError(f"checkpoint {path} holds no {name} state")
        try:
            target.load_state_dict(ckpt[name])
        except (ValueError, KeyError, RuntimeError) as err:
            raise CheckpointError(
                f"checkpoint {path}: its {name} state does not fit: {err}"
            ) from err
    if optimizer is not None:  # files without optimizer_class: a class's options are missing
        _check_optimizer_options(ckpt, path, optimizer)


def _check_optimizer_class(ckpt: dict[str, Any], path, optimizer: torch.optim.Optimizer) -> None:
    saved, given = ckpt.get("optimizer_class"), type(optimizer).__qualname__
    if saved is not None and saved != given:
        what = f"an optimizer of class {saved}"
        raise _wrong_optimizer(path, what, given, what)


def _check_optimizer_options(ckpt: dict[str, Any], path, optimizer: torch.optim.Optimizer) -> None:
    """After loading (files that do not name the class): every option of the optimizer's class
    is in every group; an optimizer completes the options its own older versions lacked."""
    lacking = sorted({k for g in optimizer.param_groups for k in optimizer.defaults if k not in g})
    if lacking:
        given = type(optimizer).__qualname__
        what = f"another optimizer class (its groups lack {given}'s options {lacking})"
        raise _wrong_optimizer(path, what, given, "an optimizer of the class that saved it")


def _wrong_optimizer(path, what: str, given: str, fix: str) -> CheckpointError:
    return CheckpointError(
        f"checkpoint {path} holds the state of {what}, which does not load into the given "
        f"{given}: pass {fix} over the same parameters (fit's default, "
        "optimizer=None, is Adam), or start afresh without the saved optimizer state (fit "
        "without resume=, load() without optimizer=)"
    )


# ---------------------------------------------------------------------------------- RNG states
def capture_rng(shuffler: torch.Generator | None = None) -> dict[str, Any]:
    """The state of every generator a training run may draw from (plain tensors and tuples)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()  # this process's device only (one per rank)
    if shuffler is not None:
        state["shuffler"] = shuffler.get_state()
    return state


def restore_rng(state: dict[str, Any], shuffler: torch.Generator | None = None) -> None:
    """Set the generators back to a state from :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    random.setstate(_tuples(state["python"]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    if shuffler is not None and "shuffler" in state:
        shuffler.set_state(state["shuffler"])


def _tuples(obj):
    """random.setstate needs tuples all the way down; a serializer may hand back lists."""
    return tuple(_tuples(v) for v in obj) if isinstance(obj, list | tuple) else obj
