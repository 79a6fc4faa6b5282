"""The fusion weight grid and the speaker probe's table in the run's report."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sermo.evaluation.runfolder import RunFolder, RunResults


def finish(out: Path, results: RunResults) -> str:
    """The fusion weight grid (validation UA per (w1, w2), averaged over folds) and the probe table."""
    import matplotlib.pyplot as plt

    from sermo.evaluation.plots import save_figure
    from sermo.evaluation.report import markdown_table

    sections = []
    grids = [g for _, g in RunFolder(out).analyses("fusion_grid.json")]
    if grids:
        w1s = sorted({g["w1"] for g in grids[0]["valid"]})
        w2s = sorted({g["w2"] for g in grids[0]["valid"]})
        ua = np.full((len(w1s), len(w2s)), np.nan)
        for i, w1 in enumerate(w1s):
            for j, w2 in enumerate(w2s):
                vals = [g["ua"] for gr in grids for g in gr["valid"] if g["w1"] == w1 and g["w2"] == w2]
                if vals:
                    ua[i, j] = float(np.mean(vals))
        fig, ax = plt.subplots(figsize=(5.5, 4.5))
        im = ax.imshow(ua, origin="lower", cmap="viridis")
        ax.set_xticks(range(len(w2s)), [f"{w:g}" for w in w2s], fontsize=7)
        ax.set_yticks(range(len(w1s)), [f"{w:g}" for w in w1s], fontsize=7)
        ax.set_xlabel("w2 (text)")
        ax.set_ylabel(f"w1 (speech: {grids[0]['speech']})")
        fig.colorbar(im, ax=ax, label="validation UA")
        path = save_figure(fig, out / "plots" / "fusion_grid.png")
        chosen = [{"fold": fold, "w1": g["best"]["w1"], "w2": g["best"]["w2"], "valid UA": g["best"]["ua"]}
                  for fold, g in RunFolder(out).analyses("fusion_grid.json")]
        sections.append("## Score fusion weights\n\n`p_f = w1 p_s + w2 p_t`; each fold picks the pair with the best "
                        "validation UA (the paper's best: w1 = 0.6, w2 = 1).\n\n" + markdown_table(chosen)
                        + f"\n![fusion grid]({path.relative_to(out)})\n")
    probes = RunFolder(out).analyses("probe.json")
    if probes:
        rows, skipped = [], []
        for size in ("small", "large"):
            skipped += [f"{fold} ({size}): {pr[size]['skipped']}" for fold, pr in probes if "skipped" in pr.get(size, {})]
            ran = [(fold, pr[size]) for fold, pr in probes if "ua" in pr.get(size, {})]
            vals = [v for _, v in ran]
            if not vals:
                continue
            row = {"bottleneck": size, **{f"{fold} UA": v["ua"] for fold, v in ran}}
            row["mean UA"] = float(np.mean([v["ua"] for v in vals]))
            row["mean WA"] = float(np.mean([v["wa"] for v in vals]))
            row["chance"] = vals[0]["chance"]
            rows.append(row)
        sections.append("## Speaker identification from the bottleneck (Table 3)\n\nA probe (linear layers "
                        "2048, 1024, 1024) on the frozen codes of each fold's training sessions, 80% of each "
                        "speaker's utterances to train, the rest to test; UA (mean recall) over test utterances, WA "
                        "(accuracy) beside it. Lower is less speaker identity in the emotion features (paper, its "
                        "accuracy: small 17.6%, large 22.9%).\n\n"
                        + (markdown_table(rows) if rows else "No fold could test a probe.\n")
                        + "".join(f"\nSkipped: {line}\n" for line in skipped))
    return "\n".join(sections)
