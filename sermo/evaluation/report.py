"""Markdown reports: corpus summaries (and, with the engine, the paper-style result tables)."""

from __future__ import annotations

import pandas as pd

from sermo.data.manifest import DIMENSIONS, Manifest


def markdown_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """A GitHub-flavoured markdown table of ``rows`` (dicts), columns in the given order."""
    if not rows:
        return "(no rows)\n"
    cols = columns or list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r.get(c, "")) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def _cell(v) -> str:
    if isinstance(v, float):
        return "" if pd.isna(v) else f"{v:.3f}"
    return str(v)


def describe_manifest(manifest: Manifest, *, title: str | None = None) -> str:
    """A markdown summary of a manifest: size, hours, speakers, label coverage and counts."""
    df = manifest.df
    hours = df["duration"].sum(skipna=True) / 3600
    out = [f"### {title}\n" if title else ""]
    facts = [
        {"what": "utterances", "value": len(df)},
        {"what": "hours of audio", "value": f"{hours:.2f}"},
        {"what": "speakers", "value": df["speaker"].nunique()},
        {"what": "sessions", "value": df["session"].nunique()},
        {"what": "dialogs", "value": df["dialog"].nunique()},
        {"what": "with transcript", "value": int(df["transcript"].notna().sum())},
    ]
    for dim in DIMENSIONS:
        if df[dim].notna().any():
            facts.append({"what": f"{dim} (mean ± sd)", "value": f"{df[dim].mean():.2f} ± {df[dim].std():.2f}"})
    out.append(markdown_table(facts))
    if df["category"].notna().any():
        counts = df["category"].value_counts()
        out.append("\nCategories: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + "\n")
    if df["partition"].notna().any():
        counts = df["partition"].value_counts()
        out.append("\nPartitions: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + "\n")
    return "".join(out)
