"""The command lines that README.md and docs/ show stay runnable.

Every `make TARGET` must be a target of the Makefile. Every `python -m prsgd.X ...`,
`python scripts/X.py ...` and `python benchmarks/X.py ...` (bare, or under horovodrun, torchrun,
mpirun, srun, `prsgd.supervise` or `prsgd.lab exec`) is handed to the real entry point in this
process, whose argument parser is caught at its first parse: every flag shown must be one of that
parser's (or its subcommand's) options, spelled out; the trainer's arguments after a sweep's `--`
are checked against the trainer's parser. README's complete commands (no `...`) must also parse as
a whole. Nothing is launched: no subprocess, no training.
"""
from __future__ import annotations

import argparse
import re
import runpy
import shlex
import sys
from dataclasses import dataclass

import pytest

from conftest import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# entry points whose arguments are another command line (checked by finding its entry points)
WRAPPERS = {"prsgd.supervise"}
# entry points that pass the arguments after `--` to every training run
SWEEPS = {"scripts/sweep.py", "prsgd.mpi_sweep"}
TRAINER = "prsgd.train"
# runpy warns when a module it runs as __main__ was imported before (prsgd.plots.clock is)
pytestmark = pytest.mark.filterwarnings("ignore:.*found in sys.modules after import")


# --- finding the commands ----------------------------------------------------------------------
def fenced_commands(text: str) -> list[str]:
    """The lines of ```bash blocks, continuation lines joined, comments dropped."""
    out = []
    for block in re.findall(r"```(?:bash|sh)\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.strip()
            if line and not line.startswith("#") and not line.startswith("$ "):
                out.append(line)
    return out


def inline_commands(text: str) -> list[str]:
    """`code spans` outside fenced blocks that are a command (start with make or python)."""
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    spans = (" ".join(s.split()) for s in re.findall(r"`([^`]+)`", prose))
    return [s for s in spans
            if re.match(r"(PYTHONPATH=\S+ )?(make|python3?|horovodrun|torchrun|mpirun|srun) ", s)]


def simple_commands(line: str) -> list[list[str]]:
    """A shell line as its simple commands (split at ; && || | and `do`), comments dropped."""
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError:   # an unbalanced quote in prose-like lines: nothing to check
        return []
    cmds, cur = [], []
    for t in tokens:
        if t in (";", "&&", "||", "|", "do", "done", "then") or t.endswith(";"):
            if t.endswith(";") and t != ";":
                cur.append(t[:-1])
            cmds.append(cur)
            cur = []
        else:
            cur.append(t)
    cmds.append(cur)
    return [c for c in cmds if c]


def all_commands() -> list[tuple[str, str, list[str]]]:
    """(file, the line as shown, its tokens) for every command in the README and docs/."""
    found = []
    for doc in DOCS:
        text = doc.read_text()
        for line in fenced_commands(text) + inline_commands(text):
            for tokens in simple_commands(line):
                found.append((doc.relative_to(ROOT).as_posix(), line, tokens))
    return found


# --- make --------------------------------------------------------------------------------------
def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z0-9_.-]+):(?!=)", text, flags=re.M))


def make_targets_shown() -> list[tuple[str, str, str]]:
    shown = []
    for doc, line, tokens in all_commands():
        if tokens[0] != "make":
            continue
        for t in tokens[1:]:
            if not t.startswith("-") and "=" not in t and t != "...":
                shown.append((doc, line, t))
    return shown


def test_every_make_target_shown_exists():
    targets = makefile_targets()
    shown = make_targets_shown()
    assert len({t for _, _, t in shown}) >= 10, "the README shows the main make targets"
    missing = [f"{doc}: `{line}`: no target {t!r}" for doc, line, t in shown if t not in targets]
    assert not missing, "\n".join(missing)


# --- python entry points -----------------------------------------------------------------------
@dataclass
class Entry:
    name: str          # "prsgd.train" or "scripts/sweep.py"
    args: list[str]    # its own arguments
    train_args: list   # after a sweep's `--`: the trainer's arguments (else [])
    complete: bool     # shown without `...` placeholders


def _entry_at(tokens: list[str], i: int) -> tuple[str, int] | None:
    """The entry point starting at tokens[i] and the index of its first argument."""
    t = tokens[i]
    if t == "-m" and i + 1 < len(tokens) and tokens[i + 1].startswith("prsgd"):
        return tokens[i + 1], i + 2
    if re.fullmatch(r"(scripts|benchmarks)/\w+\.py", t):
        return t, i + 1
    return None


def entries(tokens: list[str]) -> list[Entry]:
    starts = [(i, e) for i in range(len(tokens)) if (e := _entry_at(tokens, i))]
    out = []
    for k, (i, (name, first)) in enumerate(starts):
        end = starts[k + 1][0] if k + 1 < len(starts) else len(tokens)
        args = tokens[first:end]
        while args and args[-1] in ("python", "python3", "-m") or args and args[-1].endswith("/python"):
            args = args[:-1]    # the next entry's interpreter
        train = []
        if "--" in args:
            cut = args.index("--")
            args, train = args[:cut], args[cut + 1:]
        if name not in SWEEPS:
            train = []
        complete = "..." not in tokens
        out.append(Entry(name, [a for a in args if a != "..."], [a for a in train if a != "..."],
                         complete))
    return out


class _Caught(BaseException):
    """Raised at an entry point's first parse (BaseException: no `except Exception` eats it)."""

    def __init__(self, parser):
        self.parser = parser


def parser_of(name: str, monkeypatch) -> argparse.ArgumentParser | None:
    """The entry point's top-level parser, caught at its first parse (None: it parses nothing)."""
    def catch(self, args=None, namespace=None):
        raise _Caught(self)
    with monkeypatch.context() as m:
        m.setattr(argparse.ArgumentParser, "parse_known_args", catch)
        m.setattr(sys, "argv", [name])
        try:
            if name.endswith(".py"):
                runpy.run_path(str(ROOT / name), run_name="__main__")
            else:
                runpy.run_module(name, run_name="__main__", alter_sys=True)
        except _Caught as caught:
            return caught.parser
        except SystemExit:
            return None
    return None


def _subparser(parser, args):
    """The subcommand's parser when `args` names one (prsgd.clock calibrate-network ...)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for a in args:
                if a in action.choices:
                    return action.choices[a]
    return parser


def unknown_flags(parser, args: list[str]) -> list[str]:
    """Flags in `args` that the parser (or the subcommand's) does not define, spelled out."""
    known = set(parser._option_string_actions) | set(_subparser(parser, args)._option_string_actions)
    flags = [a.split("=", 1)[0] for a in args if a.startswith("-") and a != "-" and
             not re.fullmatch(r"-\d.*", a)]
    return [f for f in flags if f not in known]


_PARSERS: dict = {}


def cached_parser(name, monkeypatch):
    if name not in _PARSERS:
        _PARSERS[name] = parser_of(name, monkeypatch)
    return _PARSERS[name]


def python_entries():
    return [(doc, line, e) for doc, line, tokens in all_commands() for e in entries(tokens)]


def test_the_docs_show_the_entry_points():
    names = {e.name for _, _, e in python_entries()}
    assert {"prsgd.train", "scripts/sweep.py", "scripts/plot_figure3.py", "prsgd.clock",
            "prsgd.lab"} <= names, names


def test_every_flag_shown_belongs_to_its_entry_point(monkeypatch):
    bad = []
    for doc, line, e in python_entries():
        if e.name in WRAPPERS:
            continue
        parser = cached_parser(e.name, monkeypatch)
        if parser is None:
            if e.args:
                bad.append(f"{doc}: `{line}`: {e.name} takes no arguments, shown with {e.args}")
            continue
        for flag in unknown_flags(parser, e.args):
            bad.append(f"{doc}: `{line}`: {e.name} has no flag {flag}")
        if e.train_args:
            for flag in unknown_flags(cached_parser(TRAINER, monkeypatch), e.train_args):
                bad.append(f"{doc}: `{line}`: the trainer (after --) has no flag {flag}")
    assert not bad, "\n".join(bad)


def test_readme_complete_commands_parse(monkeypatch):
    """The README's commands shown in full parse as a whole: values of the right type and choice,
    required arguments there."""
    failed = []
    for doc, line, e in python_entries():
        if doc != "README.md" or not e.complete or e.name in WRAPPERS or "--help" in e.args:
            continue
        parser = cached_parser(e.name, monkeypatch)
        if parser is None:
            continue
        for p, args in ((parser, e.args),
                        *(((cached_parser(TRAINER, monkeypatch), e.train_args),) if e.train_args else ())):
            try:
                p.parse_args(args)
            except SystemExit:
                failed.append(f"`{line}`: {e.name} refuses {args}")
    assert not failed, "\n".join(failed)


# --- the checks check --------------------------------------------------------------------------
def test_a_wrong_flag_or_target_is_caught(monkeypatch):
    """The checks above fail on a flag that does not exist or a target the Makefile lacks."""
    [e] = entries(shlex.split("horovodrun -np 2 --gloo python -m prsgd.train --preset smoke --see 3"))
    assert e.name == "prsgd.train" and e.args == ["--preset", "smoke", "--see", "3"]
    assert unknown_flags(cached_parser(e.name, monkeypatch), e.args) == ["--see"]
    [s] = entries(shlex.split("python scripts/sweep.py --np 8 --out x -- --preset paper --intervall 4"))
    assert s.train_args == ["--preset", "paper", "--intervall", "4"]
    assert unknown_flags(cached_parser(TRAINER, monkeypatch), s.train_args) == ["--intervall"]
    assert "reproduce" in makefile_targets() and "reproduce-8gpu" not in makefile_targets()
    assert simple_commands("conda env create -f environment.yml && conda activate prsgd") == [
        ["conda", "env", "create", "-f", "environment.yml"], ["conda", "activate", "prsgd"]]
