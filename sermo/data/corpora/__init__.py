"""Corpus loaders: each knows one on-disk layout and turns it into a :class:`Manifest`."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from sermo.data.corpora.iemocap import prepare_iemocap
from sermo.data.corpora.msp_podcast import prepare_msp_podcast
from sermo.data.corpora.table import prepare_table
from sermo.data.manifest import Manifest

LOADERS: dict[str, Callable[..., Manifest]] = {"iemocap": prepare_iemocap, "msp-podcast": prepare_msp_podcast, "table": prepare_table}
"""Loader per corpus layout name (the names ``sermo prepare`` takes)."""


class CorpusError(ValueError):
    """A corpus argument that names nothing sermo can read; the message says what was looked for."""


def prepare(layout: str, root: str | Path, **options) -> Manifest:
    """Build the manifest of the corpus at ``root`` with the loader for ``layout``.

    Raises:
        CorpusError: unknown layout; the message lists the known ones.
    """
    try:
        loader = LOADERS[layout]
    except KeyError:
        raise CorpusError(f"unknown corpus layout {layout!r}; known: {', '.join(LOADERS)}") from None
    return loader(root, **options)


def detect_layout(root: str | Path) -> str:
    """Guess the layout of ``root``: a folder of IEMOCAP or MSP-Podcast, or a table file.

    Raises:
        CorpusError: nothing there, or nothing recognisable; says which layouts were looked for.
    """
    p = Path(root)
    if not p.exists():
        raise CorpusError(f"{p}: no such file or folder; --corpus takes NAME=PATH to a corpus folder, a table or "
                          "a manifest")
    if p.is_file() and p.suffix.lower() in (".csv", ".jsonl", ".json"):
        return "table"
    if p.is_dir():
        if any((s / "dialog" / "EmoEvaluation").is_dir() for s in p.glob("Session*")):
            return "iemocap"
        if (p / "Labels").is_dir():
            return "msp-podcast"
    raise CorpusError(f"{p}: not an IEMOCAP folder (Session*/dialog/EmoEvaluation), an MSP-Podcast folder "
                     "(Labels/labels_consensus.csv) or a corpus table (.csv/.jsonl)")


def load_corpus(path: str | Path) -> Manifest:
    """A manifest from a manifest file, or from a corpus folder / table prepared on the fly.

    A ``.parquet``/``.jsonl``/``.csv`` file with ``id`` and ``audio`` columns is read as a
    manifest; anything else goes through :func:`detect_layout` and its loader.
    """
    p = Path(path)
    if p.is_file() and p.suffix.lower() in (".parquet", ".jsonl", ".json", ".csv"):
        if p.suffix.lower() == ".parquet":
            return Manifest.load(p)
        import pandas as pd

        try:
            head = pd.read_json(p, lines=True, nrows=1) if p.suffix.lower() != ".csv" else pd.read_csv(p, nrows=1)
        except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
            raise CorpusError(f"{p}: not a readable table ({str(exc).strip().splitlines()[0]}); "
                              "a corpus table is UTF-8 CSV or JSON lines") from None
        if {"id", "audio"} <= set(head.columns):
            return Manifest.load(p)
    return prepare(detect_layout(p), p)


def parse_corpus_arg(text: str) -> tuple[str, Path]:
    """``NAME=PATH`` (or a bare PATH, named after its folder) from ``--corpus``."""
    name, sep, path = text.partition("=")
    if not sep:
        path, name = text, Path(text).name
    if not name or not path:
        raise CorpusError(f"--corpus takes NAME=PATH, got {text!r}")
    return name, Path(path)
