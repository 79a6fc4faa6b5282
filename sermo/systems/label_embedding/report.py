"""The K grid, the initialisation table, the attention example and the keywords in the report."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sermo.evaluation.runfolder import RunFolder, RunResults


def finish(out: Path, results: RunResults) -> str:
    """The K grid (Figure 3), the attention example (Figure 4) and what the label embeddings hold."""
    import matplotlib.pyplot as plt

    from sermo.evaluation.plots import save_figure
    from sermo.evaluation.report import markdown_table

    sections = []
    grids = [g for _, g in RunFolder(out).analyses("k_grid.json")]
    if grids:
        ks = [g["k"] for g in grids[0]]
        ua = [float(np.mean([g[i]["ua"] for g in grids])) for i in range(len(ks))]
        wa = [float(np.mean([g[i]["wa"] for g in grids])) for i in range(len(ks))]
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.plot(ks, ua, marker="o", label="UA")
        ax.plot(ks, wa, marker="s", label="WA")
        ax.set_xscale("log")
        ax.set_xlabel("K (units per class in L_s)")
        ax.set_ylabel("accuracy")
        ax.legend()
        path = save_figure(fig, out / "plots" / "k_grid.png")
        sections.append("## K for the speech label embedding (Figure 3)\n\n`speech_le` with each K, on the test "
                        "set of the first fold(s).\n\n" + markdown_table([{"K": k, "UA": u, "WA": w} for k, u, w in
                                                                          zip(ks, ua, wa)])
                        + f"\n![K grid]({path.relative_to(out)})\n")
    inits = [i for _, i in RunFolder(out).analyses("inits.json")]
    if inits:
        names = {"tfidf": "TF-IDF keywords (A5)", "label_words": "label word (A4)", "random": "random (A3/B3)",
                 "codebook": "speech units (B5)", "text": "text embedding of the label (B4)"}
        table = []
        for entry in inits[0]:
            same = [e for run in inits for e in run if e["row"] == entry["row"] and e["init"] == entry["init"]]
            scored = [e for e in same if "ua" in e]
            table.append({"row": entry["row"], "initialisation": names.get(entry["init"], entry["init"]),
                          "UA": float(np.mean([e["ua"] for e in scored])) if scored else "-",
                          "WA": float(np.mean([e["wa"] for e in scored])) if scored else "-",
                          "note": "" if scored else entry.get("skipped", "")})
        sections.append("## Label embedding initialisations (Table 1, A3-A5 and B3-B5)\n\nOn the test set of the "
                        "first fold(s).\n\n" + markdown_table(table))
    att = RunFolder(out).analyses("attention.json")
    if att:
        ex = att[0][1]
        fig, axes = plt.subplots(2, 1, figsize=(max(7.0, 0.18 * len(ex["g_t"])), 5.5))
        n_own = ex.get("own_tokens") or 0
        colors = ["tab:gray"] * (len(ex["g_t"]) - n_own) + ["tab:blue"] * n_own
        axes[0].bar(range(len(ex["g_t"])), ex["g_t"], color=colors)
        if ex.get("tokens"):
            axes[0].set_xticks(range(len(ex["tokens"])), ex["tokens"], rotation=90, fontsize=7)
        axes[0].set_title("class-averaged G_t per token (grey: the dialog context, blue: the utterance)")
        t = np.arange(len(ex["g_s"])) * ex["frame_seconds"]
        axes[1].plot(t, ex["g_s"])
        axes[1].set_title("class-averaged G_s per frame")
        axes[1].set_xlabel("seconds")
        path = save_figure(fig, out / "plots" / "attention.png")
        sections.append(f"## Label-token and label-frame scores (Figure 4)\n\nUtterance `{ex['id']}`"
                        + (f": \"{ex['transcript'][-200:]}\"" if ex.get("transcript") else "")
                        + f"\n\n![attention]({path.relative_to(out)})\n")
    row = next((r for r in results["rows"] if r["name"] == "text_context_le" and r.get("info")), None)
    if row and row["info"][0].get("text_labels", {}).get("keywords"):
        info = row["info"][0]["text_labels"]
        kw = info["keywords"]
        overlap = info.get("overlap")
        sections.append("## Keywords of the text label embeddings (first fold)\n\n"
                        + "\n".join(f"- {c}: {', '.join(ws)}" for c, ws in kw.items()) + "\n"
                        + (f"\nOverlap of the classes' keyword lists (mean over class pairs of shared / all "
                           f"keywords; 0: each class its own): {overlap:.2f}.\n" if overlap is not None else ""))
    row = next((r for r in results["rows"] if r["name"] == "speech_le" and r.get("info")), None)
    if row and row["info"][0].get("speech_labels", {}).get("units"):
        info = row["info"][0]["speech_labels"]
        sections.append(f"Speech units (first fold): {info['units']}"
                        + (f"; overlap of the classes' top units: {info['overlap']:.2f}" if "overlap" in info else "")
                        + ".\n")
    return "\n".join(sections)
