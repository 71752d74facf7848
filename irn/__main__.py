"""Command line: ``python -m irn experiments <name> [--full] [--out FILE [--resume]] ...``.

Every field of an experiment's ``Config`` dataclass becomes an option (``--noise-stds 0 0.5``,
``--clamp/--no-clamp``); the values start from the reduced defaults, ``--full`` applies the
experiment's ``FULL`` overrides, and explicit options win over both. Bad arguments print one
line on stderr and exit with status 2. With ``--out FILE`` every finished cell (θ, seed, ...)
is kept in ``FILE.partial.jsonl`` until the results are written; ``--resume`` continues an
interrupted run from there (:mod:`irn.experiments.cells`), and without it such a file is
refused rather than overwritten. Under ``torchrun`` (``WORLD_SIZE`` > 1) the process
joins the process group first and only rank 0 shows progress, prints and writes.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import io
import json
import os
import sys
import textwrap
import tokenize
import types
import typing
from typing import Any

from . import experiments
from .experiments import cells

PROG = "python -m irn"


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr (exit status 2)."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class _Usage(Exception):
    """A bad command line found outside argparse: one line, exit status 2."""


# ------------------------------------------------------------------- options from a Config
def _field_comments(cls: type) -> dict[str, str]:
    """Help text of every dataclass field: its trailing ``# comment``, else the comment lines
    right above it, else its ``name: text`` line in the class docstring."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    comments: dict[int, str] = {}
    code_lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
        elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT):
            code_lines.add(tok.start[0])
    docs: dict[str, str] = {}
    for line in (inspect.getdoc(cls) or "").splitlines():
        name, sep, text = line.strip().partition(":")
        if sep and name.isidentifier() and text.strip():
            docs.setdefault(name, text.strip())
    out: dict[str, str] = {}
    for node in ast.parse(source).body[0].body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            text = comments.get(node.end_lineno, "")
            row, above = node.lineno - 1, []
            while not text and row in comments and row not in code_lines:
                above.insert(0, comments[row])
                row -= 1
            text = text or " ".join(above) or docs.get(node.target.id, "")
            out[node.target.id] = text.replace("%", "%%")  # argparse formats help with %
    return out


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """``(X, True)`` for ``X | None`` / ``Optional[X]``, else ``(tp, False)``."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _converter(tp: Any, optional: bool):
    """An argparse ``type=`` for a scalar field type (``none`` allowed if optional)."""
    scalar = tp if tp in (int, float, str) else str

    def convert(text: str):
        if optional and text.lower() == "none":
            return None
        try:
            return scalar(text)
        except ValueError:
            what = _NAMES.get(scalar, "a value")
            raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None

    convert.__name__ = scalar.__name__  # shown by argparse in "invalid int value" messages
    return convert


_NAMES = {int: "an integer", float: "a number", str: "a string"}


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return " ".join(_show(v) for v in value) or "(empty)"
    if isinstance(value, str):
        return repr(value) if value == "" else value
    return str(value)


def _add_config_options(parser: argparse.ArgumentParser, module: types.ModuleType) -> list[str]:
    """One option per Config field; returns the field names (the options' ``dest``)."""
    cls = module.Config
    hints = typing.get_type_hints(cls)
    helps = _field_comments(cls)
    full = dict(getattr(module, "FULL", {}))
    group = parser.add_argument_group("configuration (defaults: the reduced run)")
    names = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        tp, optional = _unwrap_optional(hints.get(f.name, str))
        flag = f"--{f.name.replace('_', '-')}"
        text = helps.get(f.name, "")
        extra = f"default: {_show(default)}"
        if f.name in full:
            extra += f"; --full: {_show(full[f.name])}"
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS}
        origin = typing.get_origin(tp)
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif origin is tuple:
            item = typing.get_args(tp)[0] if typing.get_args(tp) else str
            kwargs.update(nargs="+", type=_converter(item, False), metavar=item.__name__.upper())
        else:
            kwargs.update(
                type=_converter(tp, optional), metavar=getattr(tp, "__name__", "X").upper()
            )
        group.add_argument(flag, **kwargs, help=f"{text} ({extra})" if text else f"({extra})")
        if "_" in f.name and tp is not bool:  # --field_name works too, without a help line
            group.add_argument(f"--{f.name}", **kwargs, help=argparse.SUPPRESS)
        names.append(f.name)
    return names


# ---------------------------------------------------------------------------------- parsers
def _listing() -> str:
    lines = [
        f"usage: {PROG} experiments NAME [--full] [--out FILE [--resume]] [--FIELD VALUE ...]",
        "",
        "Run one of the book's experiments and print (or write) its results as JSON.",
        "",
        "experiments:",
    ]
    width = max(len(n) for n in experiments.names())
    for name in experiments.names():
        text = experiments.describe(name) or "(not available: module not installed)"
        lines.append(f"  {name:<{width}}  {text}")
    lines += ["", f"'{PROG} experiments NAME --help' lists the options of one experiment."]
    return "\n".join(lines)


def _experiment_parser(name: str, module: types.ModuleType) -> tuple[_Parser, list[str]]:
    doc = (module.__doc__ or "").strip().split("\n\n")[0]
    parser = _Parser(
        prog=f"{PROG} experiments {name}",
        description=f"{getattr(module, 'DESCRIPTION', '')}\n\n{doc}".strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run = parser.add_argument_group("running")
    run.add_argument("--full", action="store_true", help="paper-scale run (the FULL overrides)")
    run.add_argument(
        "--out",
        metavar="FILE",
        help="write the results as JSON to FILE ('-': stdout); each finished cell is kept in "
        f"FILE{cells.SUFFIX} until the run ends",
    )
    run.add_argument(
        "--resume",
        action="store_true",
        help=f"continue an interrupted run from the cells in FILE{cells.SUFFIX} (same "
        "arguments; without that file: a fresh run)",
    )
    run.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars on stderr (default: when stderr is a terminal)",
    )
    run.add_argument("--threads", type=int, metavar="N", help="torch.set_num_threads(N) first")
    return parser, _add_config_options(parser, module)


# -------------------------------------------------------------------------------- commands
def _summary(module: types.ModuleType, results: dict) -> str:
    if hasattr(module, "summary"):
        return module.summary(results)
    lines = [f"{results['experiment']}: wall time {results['meta']['wall_time']:.1f} s"]
    for key, value in results["results"].items():
        text = json.dumps(value)
        lines.append(f"  {key}: {text if len(text) <= 70 else text[:67] + '...'}")
    return "\n".join(lines)


def _unwritable(out: str) -> str | None:
    """Why ``out`` cannot be written (checked before a run), or None."""
    path = os.path.abspath(out)
    if os.path.isdir(path):
        return "is a folder; name a file"
    folder = os.path.dirname(path)
    while not os.path.exists(folder):  # save_results creates missing folders
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        return f"{folder} is not a folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"the folder {folder} is not writable"
    if os.path.exists(path) and not os.access(path, os.W_OK):
        return "the file exists and is not writable"
    return None


def _distributed_main() -> bool:
    """Join torchrun's process group if there is one; True on the rank that reports."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return True
    try:
        from . import distributed
    except ImportError as err:  # the module belongs to the training code; say what is missing
        raise _Usage(f"WORLD_SIZE > 1 but irn.distributed cannot be imported ({err})") from None
    distributed.init_from_env()
    return distributed.is_main()


def _experiments(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        if not argv:
            raise _Usage(f"missing experiment NAME; choose one of {experiments.names()}")
        print(_listing())
        return 0
    name = argv[0]
    module = _load(name)
    parser, fields = _experiment_parser(name, module)
    args = parser.parse_args(argv[1:])
    config = _config(name, parser, fields, args)
    partial = _partial(name, parser, args, config, argv)
    main_rank = _distributed_main()
    progress = args.progress if args.progress is not None else sys.stderr.isatty()
    try:
        results = module.run(config, progress=bool(progress and main_rank), partial=partial)
    finally:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            from . import distributed

            distributed.cleanup()
    if main_rank:
        _report(module, results, args.out, partial)
    return 0


def _load(name: str):
    """The experiment's module, or a one-line usage error naming what is missing."""
    if name not in experiments.REGISTRY:
        raise _Usage(f"unknown experiment {name!r}; choose one of {experiments.names()}")
    try:
        return experiments.load(name)
    except ModuleNotFoundError as err:
        if err.name != experiments.REGISTRY[name]:
            raise  # a missing dependency inside the module: a real error, with its traceback
        raise _Usage(f"experiment {name!r} is not available ({err.name} is missing)") from None


def _config(name: str, parser, fields, args):
    """Check the command line (before any work) and build the experiment's configuration."""
    overrides = {k: getattr(args, k) for k in fields if hasattr(args, k)}
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    to_file = bool(args.out) and args.out != "-"
    if args.resume and not to_file:
        parser.error("--resume needs --out FILE: the finished cells are kept next to FILE")
    problem = _unwritable(args.out) if to_file else None
    if problem:  # before the run, not after hours of it
        parser.error(f"--out {args.out}: {problem}")
    try:
        config = experiments.make_config(name, full=args.full, **overrides)
    except (ValueError, TypeError) as err:
        parser.error(str(err).splitlines()[0])
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    return config


def _partial(name: str, parser, args, config, argv: list[str]):
    """The run's partial-results file (``None`` without ``--out FILE``); opened after
    ``--threads`` is applied, since the file records the threads the cells ran with."""
    if not args.out or args.out == "-":
        return None
    try:
        partial = cells.Partial.open(args.out, name, config, resume=args.resume, argv=argv)
    except cells.PartialError as err:
        parser.error(str(err))
    if args.resume and os.environ.get("RANK", "0") == "0":  # under torchrun: one line
        found = f"{len(partial)} finished cell(s)" if len(partial) else "no finished cells"
        print(f"resuming {partial.path}: {found}", file=sys.stderr)
    return partial


def _report(module, results, out: str | None, partial) -> None:
    """Write or print the results (rank 0 only) and a summary."""
    if out == "-":
        json.dump(results, sys.stdout, indent=1)
        print()
        return
    if out:
        path = experiments.save_results(results, out)
        partial.remove()  # only now: the results it kept are in the file
        print(f"wrote {path}", file=sys.stderr)
    print(_summary(module, results))


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for a bad command line)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    top = _Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    top.add_argument("command", choices=["experiments"], help="what to do")
    try:
        if not argv or argv[0] in ("-h", "--help"):
            if not argv:
                raise _Usage("missing command; choose from ['experiments']")
            top.print_help()
            print(f"\n{_listing()}")
            return 0
        if argv[0] != "experiments":
            raise _Usage(f"unknown command {argv[0]!r}; choose from ['experiments']")
        return _experiments(argv[1:])
    except _Usage as err:
        print(f"{PROG}: error: {err} (see --help)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
