"""Figures 2 and 3 and Table 2 in the run's report."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sermo.evaluation.metrics import DIMENSIONS
from sermo.evaluation.runfolder import RunFolder, RunResults


def finish(out: Path, results: RunResults) -> str:
    """Figures 2 and 3 and Table 2 from the run folder."""
    from sermo.evaluation.report import markdown_table

    sections: list[str] = []
    folder = RunFolder(out)
    importance = [data for _, data in folder.analyses("layer_importance.json")]
    if importance:
        path = plot_layer_importance(importance, out / "plots" / "layer_importance.png")
        lines: list = []
        for name, entry in importance[0].items():
            if "skipped" in entry:
                lines.append(f"- `{name}`: {entry['skipped']}")
                continue
            mean = {d: np.mean([imp[name]["weights"][d] for imp in importance], axis=0) for d in DIMENSIONS}
            peaks = ", ".join(f"{d} peaks at layer {int(np.argmax(w))}" for d, w in mean.items())
            lines.append(f"- `{name}` ({entry['modality']}, {len(mean['valence'])} hidden states): {peaks}")
        sections.append("## Layer importance (Figure 2)\n\nOne frozen model per dimension, softmax weights over "
                        "the hidden states (index 0: the CNN / embedding output).\n\n" + "\n".join(lines)
                        + (f"\n\n![layer importance]({path.relative_to(out)})\n" if path else "\n"))
    gains = ft_frz_gains(results)
    if gains:
        path = plot_gains(gains, out / "plots" / "ft_vs_frz.png")
        table = markdown_table([{"encoder": g["encoder"], "test set": g["test"], "mode": g["mode"],
                                 "valence CCC audio": g["audio"], "valence CCC audio+text": g["audio_text"],
                                 "relative gain": f"{g['gain']:+.1%}"} for g in gains])
        sections.append("## Fine-tune vs freeze (Figure 3)\n\nRelative valence CCC gain of audio+text over "
                        f"audio only.\n\n{table}\n" + (f"\n![gains]({path.relative_to(out)})\n" if path else ""))
    robust = [data for _, data in folder.analyses("transcripts.json")]
    if robust:
        lines = []
        for entry in robust[0]["rows"]:
            if "skipped" in entry:
                lines.append({"transcripts": entry["transcripts"], "WER": "-", "note": entry["skipped"]})
                continue
            same = [e for r in robust for e in r["rows"] if e["transcripts"] == entry["transcripts"] and "skipped" not in e]
            row = {"transcripts": entry["transcripts"], "WER": f"{np.mean([e['wer'] for e in same]):.1%}"}
            row.update({f"CCC {d[0].upper()}": float(np.mean([e[f'ccc_{d}'] for e in same])) for d in DIMENSIONS})
            row["note"] = ""
            lines.append(row)
        sizes = robust[0]["utterances"]
        sections.append(f"## Transcript robustness (Table 2)\n\n`{robust[0]['encoder']}` + text, trained and tested "
                        f"with each transcript source on the same utterances (train {sizes['train']}, valid "
                        f"{sizes['valid']}, test {sizes['test']}; {len(robust)} fold(s)).\n\n"
                        + markdown_table(lines))
    return "\n".join(sections)


def ft_frz_gains(results: RunResults) -> list[dict]:
    """Relative valence CCC gain of ``+text`` (mode ft) and ``+text@ft_frz`` over the audio row."""
    rows = {r["name"]: r for r in results["rows"] if not r.get("skipped")}
    gains = []
    for name, row in rows.items():
        if "+text" in name or f"{name}+text" not in rows:
            continue
        for suffix in ("+text", "+text@ft_frz"):
            other = rows.get(name + suffix)
            if other is None:
                continue
            mode = ((other.get("info") or [{}])[0]).get("mode", "ft")
            tests = [(row["test_set"], row["mean"], other["mean"])]
            tests += [(t, row["tests"][t]["mean"], other.get("tests", {}).get(t, {}).get("mean", {}))
                      for t in row.get("tests", {})]
            for test, a, b in tests:
                if "ccc_valence" in a and "ccc_valence" in b:
                    base = a["ccc_valence"]
                    gains.append({"encoder": name, "test": test, "mode": "FT=>FRZ" if mode == "ft_frz" else mode.upper(),
                                  "audio": base, "audio_text": b["ccc_valence"],
                                  "gain": (b["ccc_valence"] - base) / abs(base) if base else float("nan")})
    return gains


def plot_layer_importance(importance: list[dict], path: Path) -> Path | None:
    """One panel per encoder: the mean layer weight per dimension over the analysed folds."""
    import matplotlib.pyplot as plt

    from sermo.evaluation.plots import save_figure

    names = [n for n, e in importance[0].items() if "skipped" not in e]
    if not names:
        return None
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.5), squeeze=False)
    for ax, name in zip(axes[0], names):
        for d in DIMENSIONS:
            w = np.mean([imp[name]["weights"][d] for imp in importance], axis=0)
            ax.plot(range(len(w)), w, marker="o", label=d)
        ax.set_title(name)
        ax.set_xlabel("hidden state (0 = CNN / embeddings)")
        ax.set_ylabel("normalised weight")
        ax.legend()
    return save_figure(fig, path)


def plot_gains(gains: list[dict], path: Path) -> Path | None:
    """Bars of the relative valence gain per encoder, one colour per mode, a panel per test set."""
    import matplotlib.pyplot as plt

    from sermo.evaluation.plots import save_figure

    tests = sorted({g["test"] for g in gains})
    modes = sorted({g["mode"] for g in gains})
    fig, axes = plt.subplots(1, len(tests), figsize=(5 * len(tests), 3.5), squeeze=False)
    for ax, test in zip(axes[0], tests):
        encs = sorted({g["encoder"] for g in gains if g["test"] == test})
        width = 0.8 / len(modes)
        for k, mode in enumerate(modes):
            vals = [next((100 * g["gain"] for g in gains if g["test"] == test and g["encoder"] == e
                          and g["mode"] == mode), 0.0) for e in encs]
            ax.bar(np.arange(len(encs)) + k * width, vals, width, label=mode)
        ax.set_xticks(np.arange(len(encs)) + width * (len(modes) - 1) / 2, encs, rotation=15)
        ax.set_ylabel("valence CCC gain (%)")
        ax.set_title(test)
        ax.legend()
    return save_figure(fig, path)
