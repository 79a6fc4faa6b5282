"""Score fusion of the speech and text rows: ``p_f = w1 p_s + w2 p_t``, the pair picked on validation."""

from __future__ import annotations

import numpy as np

from sermo.systems.common import aligned_probs, fuse
from sermo.systems.cross_representation.config import CrossRepresentationConfig


def fusion_grid(p_s: np.ndarray, p_t: np.ndarray, truth: np.ndarray, grid: list[float]) -> list[dict]:
    """UA and WA of ``argmax(w1 p_s + w2 p_t)`` for every pair of the grid (``(0, 0)`` left out)."""
    from sermo.evaluation.metrics import classification_metrics

    out = []
    for w1 in grid:
        for w2 in grid:
            if w1 == 0 and w2 == 0:
                continue
            m = classification_metrics(truth, (w1 * p_s + w2 * p_t).argmax(1))
            out.append({"w1": w1, "w2": w2, "ua": m["ua"], "wa": m["wa"]})
    return out


def score_fusion(ctx, models: dict, cfg: CrossRepresentationConfig):
    """``p_f = w1 p_s + w2 p_t``: the grid on validation, the best pair on the test sets."""
    if cfg.fusion_speech not in models or "text" not in models:
        return ctx.skipped_row("fusion", ("audio", "text"), f"needs the rows {cfg.fusion_speech} and text")
    speech, text = models[cfg.fusion_speech], models["text"]  # (model, data, test predictions)
    ids, (p_s, p_t) = aligned_probs(*(ctx.predict(m, d, ["valid"])["valid"] for m, d, _ in (speech, text)))
    truth = np.array([ctx.labels.category[u] for u in ids])
    grid = fusion_grid(p_s, p_t, truth, cfg.fusion_grid)
    best = max(grid, key=lambda g: (round(g["ua"], 6), round(g["wa"], 6)))
    ctx.write_analysis("fusion_grid.json", {"speech": cfg.fusion_speech, "valid": grid,
                                                                   "best": best})

    def weighted(p_s, p_t):  # the rows' own test predictions, weighted
        fused = best["w1"] * p_s + best["w2"] * p_t
        return fused / fused.sum(1, keepdims=True)

    return ctx.combined_row("fusion", ("audio", "text"), fuse([speech[2], text[2]], weighted),
                            info={"of": [cfg.fusion_speech, "text"], "w1": best["w1"], "w2": best["w2"]})
