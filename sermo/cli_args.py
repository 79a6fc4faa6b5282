"""The command line's argument types: numbers, fold lists and scales checked as they are
parsed, and a parser whose errors are the one ``sermo: error:`` line every user error gets."""

from __future__ import annotations

import argparse


def json_quote(text: str) -> str:
    """A string as a YAML scalar that stays a string (``--set`` values are parsed as YAML)."""
    import json

    return json.dumps(text)


def one_line_warnings(default_show):
    """A ``warnings.showwarning`` that prints sermo's own warnings (``UserWarning``) as one
    ``sermo: warning:`` line without the source location, and others as ``default_show`` does."""
    import sys

    def show(message, category, filename, lineno, file=None, line=None):
        if category is UserWarning:
            print(f"sermo: warning: {message}", file=sys.stderr)
        else:
            default_show(message, category, filename, lineno, file, line)

    return show


class UsageError(ValueError):
    """A command-line mistake; printed without a traceback."""


class Parser(argparse.ArgumentParser):
    """argparse, with its errors as the one ``sermo: error:`` line (and exit 2) every other user
    error gets."""

    def error(self, message: str):  # noqa: D102
        self.exit(2, f"sermo: error: {self.prog}: {message} (see {self.prog} --help)\n")


def number(kind, *, positive: bool = False, low=None, high=None, what: str = "a number"):
    """An argparse type: a finite number of ``kind``, optionally > 0 or within [low, high]."""
    import math

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if positive and value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be above 0")
        if (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text!r} must be within {low}-{high}")
        return value

    return parse


def fold_numbers(text: str) -> list[int]:
    """``--folds 1,3``: fold numbers from 1."""
    try:
        folds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of fold numbers such as 1,3") from None
    if not folds or min(folds) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: folds are numbered from 1, e.g. 1,3")
    return folds


def scale(text: str) -> tuple[float, float]:
    """``--scale MIN,MAX``."""
    import math

    try:
        lo, hi = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not MIN,MAX, e.g. 1,5") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise argparse.ArgumentTypeError(f"{text!r}: MIN and MAX must be finite and MIN below MAX")
    return lo, hi


def system_names() -> list[str]:
    """The system modules under ``sermo/systems/``, listed without importing them (or torch)."""
    import importlib.util
    import pkgutil

    spec = importlib.util.find_spec("sermo.systems")
    skip = {"api", "common", "definition", "linear_probe"}  # sermo.systems.INTERNAL, without importing it
    assert spec is not None and spec.submodule_search_locations is not None, "sermo.systems is a package"
    return sorted(m.name for m in pkgutil.iter_modules(spec.submodule_search_locations)
                  if m.name not in skip and not m.name.startswith("_"))
