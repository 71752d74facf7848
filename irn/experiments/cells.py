"""The cells of an experiment's grid, kept on disk as they finish so that an interrupted run
loses nothing (``python -m irn experiments NAME --out FILE [--resume]``).

An experiment's grid is a list of cells, each a dict of its parameters (``{"theta": 0.5,
"seed": 2}``); every cell seeds its random number generators from its own parameters, so its
result does not depend on which cells ran before it. :func:`run_cells` runs the cells in order
and, given a :class:`Partial`, rewrites ``FILE.partial.jsonl`` after each finished cell:

    line 1       {"format", "experiment", "config", "argv", "environment"}
    lines 2 ...  {"cell": {...}, "wall": s, "cpu": s, "result": {...}}   one per finished cell

``environment`` holds what decides the numbers besides the config: the irn commit, a digest of
irn's source (a dirty tree keeps its commit name while its code changes), torch's version, the
torch threads and the CPU model. With ``resume`` the cells found in the file are not run again;
a file from another experiment, config or environment is refused, naming the difference.

Results come back exactly: Python's JSON writes a float as its ``repr``, which reads back to
the same double. Every cell's result takes the same JSON round trip in an uninterrupted run,
so a resumed run and an uninterrupted one hand identical objects to the code after the grid.

The file is rewritten whole (temporary file, fsync, ``os.replace``), not appended to: every
version on disk is complete, a kill during a write leaves the previous one, and reading needs no
repair of a torn last line (which appending would need, with a checksum per line). Rewriting
costs at most a few megabytes per cell, nothing next to a cell's training.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..atomic import write_atomic
from . import meta

__all__ = ["FORMAT", "SUFFIX", "Partial", "PartialError", "partial_path", "run_cells"]

FORMAT = "irn-experiment-cells/1"
SUFFIX = ".partial.jsonl"


class PartialError(ValueError):
    """A partial file that cannot be used as asked; the message says why and what to do."""


def partial_path(out: str | os.PathLike[str]) -> Path:
    """Where the finished cells of a run writing ``out`` are kept: ``out`` + ``.partial.jsonl``."""
    return Path(os.fspath(out) + SUFFIX)


def _key(cell: dict) -> str:
    return json.dumps(cell, sort_keys=True)


def _canonical(value: Any, what: str) -> Any:
    """``value`` after a JSON round trip: what a resumed run reads back from the file."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as err:
        raise TypeError(f"{what} is not JSON-serializable ({err})") from None


def _source_digest() -> str:
    """SHA-256 of irn's Python source (paths and contents), 16 hex digits."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def environment() -> dict[str, Any]:
    """What, besides the config, decides a cell's numbers (a partial file's ``environment``)."""
    info = meta(0.0)
    return {
        "irn_commit": info["irn_commit"],
        "source": _source_digest(),
        "torch": info["torch"],
        "threads": info["threads"],
        "cpu": info["cpu"],
    }


# How to bring the environment back when it differs: per key of ``environment()``.
_FIXES = {
    "irn_commit": "check out that commit",
    "source": "restore irn's source as it was (the file records a digest of it)",
    "torch": "install that torch version",
    "threads": "pass --threads with the recorded number",
    "cpu": "resume on a machine with that CPU",
}


@dataclasses.dataclass
class Partial:
    """The partial file of one run: its header and the finished cells (key -> line)."""

    path: Path
    header: dict[str, Any]
    lines: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    restored_wall: float = 0.0  # wall and CPU time the restored cells took when they ran
    restored_cpu: float = 0.0

    @classmethod
    def open(cls, out, name: str, config: Any, *, resume: bool, argv=()) -> Partial:
        """The partial file next to ``out`` for experiment ``name`` run with ``config``.

        Without ``resume`` an existing file is refused (it holds finished work); with it, the
        file's cells are loaded after checking that experiment, config and environment match.
        ``resume`` without a file starts afresh (``len(partial) == 0``).

        Raises:
            PartialError: A file that is unreadable, from another run, or left without resume.
        """
        path = partial_path(out)
        header = {
            "format": FORMAT,
            "experiment": name,
            "config": _canonical(dataclasses.asdict(config), "the config"),
            "argv": list(argv),
            "environment": environment(),
        }
        partial = cls(path, header)
        if not (path.exists() or path.is_symlink()):
            return partial
        if not path.is_file():
            raise PartialError(f"{path} is not a file; remove it or choose another --out")
        if not resume:
            cells = max(0, len(path.read_text(encoding="utf-8").splitlines()) - 1)
            raise PartialError(
                f"{path} holds {cells} finished cell(s) of an interrupted run; pass --resume to "
                "continue it, or delete the file to start afresh"
            )
        partial._load()
        return partial

    def __len__(self) -> int:
        return len(self.lines)

    def _load(self) -> None:
        text = self.path.read_text(encoding="utf-8").splitlines()
        damaged = f"{self.path} is damaged (%s); delete it to start afresh"
        try:
            rows = [json.loads(line) for line in text]
        except json.JSONDecodeError as err:
            raise PartialError(damaged % f"not JSON lines: {err}") from None
        if not rows or not isinstance(rows[0], dict) or rows[0].get("format") != FORMAT:
            raise PartialError(damaged % f"its first line is not a {FORMAT} header")
        self._check(rows[0])
        self.header = rows[0]  # the command that started the run stays on record
        for number, row in enumerate(rows[1:], 2):
            if not isinstance(row, dict) or not {"cell", "wall", "cpu", "result"} <= set(row):
                raise PartialError(damaged % f"line {number} is not a finished cell")
            self.lines[_key(row["cell"])] = row
            self.restored_wall += row["wall"]
            self.restored_cpu += row["cpu"]

    def _check(self, found: dict) -> None:
        """Refuse a header from another experiment, config or environment."""
        was = found.get("argv")
        rerun = f" (`python -m irn experiments {shlex.join(was)}`)" if was else ""
        fresh = "or delete it to start afresh"
        if found.get("experiment") != self.header["experiment"]:
            raise PartialError(
                f"--resume: {self.path} holds cells of experiment {found.get('experiment')!r}, "
                f"not {self.header['experiment']!r}; choose another --out, {fresh}"
            )
        old, new = found.get("config", {}), self.header["config"]
        diff = [f"{k}: {old.get(k)!r} there, {new.get(k)!r} here"
                for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]  # fmt: skip
        if diff:
            raise PartialError(
                f"--resume: {self.path} was written with another config ({'; '.join(diff)}); "
                f"resume with the arguments that started it{rerun}, {fresh}"
            )
        old, new = found.get("environment", {}), self.header["environment"]
        for k, fix in _FIXES.items():
            if old.get(k) != new.get(k):
                raise PartialError(
                    f"--resume: {self.path} was written with {k} {old.get(k)!r}, this run has "
                    f"{new.get(k)!r}, and its cells would not match the ones computed now; "
                    f"{fix}, {fresh}"
                )

    def restore(self, keys: list[str]) -> dict[str, Any]:
        """The finished results by cell key; refuses cells that are not in ``keys``."""
        stray = sorted(set(self.lines) - set(keys))
        if stray:
            raise PartialError(
                f"{self.path} holds cells outside this run's grid ({stray[0]}); delete it to "
                "start afresh"
            )
        return {k: row["result"] for k, row in self.lines.items()}

    def add(self, cell: dict, result: Any, wall: float, cpu: float) -> None:
        """Record a finished cell and rewrite the file (atomically)."""
        from .. import distributed

        self.lines[_key(cell)] = {"cell": cell, "wall": wall, "cpu": cpu, "result": result}
        if not distributed.is_main():  # one writer: rank 0
            return
        rows = [self.header, *self.lines.values()]
        write_atomic(self.path, "".join(json.dumps(r) + "\n" for r in rows))

    def remove(self) -> None:
        """Delete the file (once the final results are written)."""
        self.path.unlink(missing_ok=True)


def _broadcast(restored: dict[str, Any]) -> dict[str, Any]:
    """Rank 0's restored cells on every rank, so that all skip the same cells."""
    from .. import distributed

    if not distributed.active():
        return restored
    import torch.distributed as dist

    box = [restored]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def run_cells(
    cells: list[dict],
    fn: Callable[[dict], Any],
    *,
    partial: Partial | None = None,
    desc: str = "",
    progress: bool = False,
) -> list[Any]:
    """``[fn(cell) for cell in cells]``, each result after a JSON round trip; with ``partial``
    the cells it holds are restored instead of run, and every finished cell is recorded there.
    A cell listed twice (a θ given twice) runs once. ``progress`` shows a bar on stderr (the
    restored cells count as done)."""
    from tqdm import tqdm

    keys = [_key(c) for c in cells]
    done = _broadcast(partial.restore(keys)) if partial is not None else {}
    out, seen = [], set()
    with tqdm(total=len(set(keys)), initial=len(done), desc=desc, disable=not progress,
              file=sys.stderr) as bar:  # fmt: skip
        for cell, key in zip(cells, keys, strict=True):
            if key not in done:
                bar.set_postfix(cell, refresh=False)
                wall, cpu = time.perf_counter(), time.process_time()
                result = _canonical(fn(cell), f"{desc} cell {key}")
                if partial is not None:
                    partial.add(cell, result, time.perf_counter() - wall,
                                time.process_time() - cpu)  # fmt: skip
                done[key] = result
                bar.update()
            out.append(copy.deepcopy(done[key]) if key in seen else done[key])
            seen.add(key)
    return out
