"""Predictions as ``sermo predict`` prints them: a table, CSV or JSON."""

from __future__ import annotations

import json


def format_predictions(rows: list, summaries: dict, fmt: str, *, bundle: str) -> str:
    """``rows`` (:class:`~sermo.serving.predictor.Prediction`) and the per-recording summaries of
    ``--segment`` as ``fmt`` (``table``, ``csv`` or ``json``); ends with a newline."""
    import pandas as pd

    if fmt == "json":
        out: dict[str, object] = {"bundle": bundle, "predictions": [p.to_dict() for p in rows]}
        if summaries:
            out["summaries"] = summaries
        return json.dumps(out, indent=1) + "\n"
    # a column the model does not predict (A/V/D of a categorical model) is left out
    table = pd.DataFrame([p.flat() for p in rows]).dropna(axis=1, how="all")
    if fmt == "csv":
        return table.to_csv(index=False)
    cols = [c for c in ("source", "start", "end", "arousal", "valence", "dominance", "category", "transcript_source")
            if c in table] + [c for c in table if c.startswith("p_")]
    lines = []
    with pd.option_context("display.max_rows", None, "display.width", 200, "display.max_colwidth", 60):
        lines.append(table[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}") if len(table) else "")
    if rows and rows[0].scale:
        lines.append(f"dimensions on the scale {rows[0].scale[0]:g}-{rows[0].scale[1]:g} the model was trained on")
    for src, s in summaries.items():  # a recording's segments in one line, not a JSON blob inside a table
        dims = ", ".join(f"{d} {s[d]:.2f}" for d in ("arousal", "valence", "dominance") if d in s)
        lines.append(f"{src}: {s['segments']} segment(s), {s['speech_seconds']:.1f} s of speech"
                     + (f", mostly {s['category']}" if s.get("category") else "") + (f"; {dims}" if dims else ""))
    return "\n".join(lines) + "\n"
