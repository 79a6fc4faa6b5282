"""Markdown reports: corpus summaries (and, with the engine, the paper-style result tables)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import pandas as pd

from sermo.data.manifest import DIMENSIONS, Manifest

if TYPE_CHECKING:
    from sermo.evaluation.runfolder import RunResults


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
    facts: list[dict] = [
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


COLUMNS = {
    "ccc_mean": "CCC", "ccc_arousal": "CCC A", "ccc_valence": "CCC V", "ccc_dominance": "CCC D",
    "pearson_arousal": "r A", "pearson_valence": "r V", "pearson_dominance": "r D",
    "ua": "UA", "wa": "WA", "macro_f1": "F1", "weighted_f1": "wF1",
}
METRIC_NOTES = {
    "CCC": "CCC: concordance correlation per dimension (A arousal, V valence, D dominance) and their mean",
    "r": "r: Pearson correlation",
    "UA": "UA: unweighted accuracy, the mean of per-class recalls over the classes present",
    "WA": "WA: weighted accuracy, the share of utterances classified correctly (paper 004 swaps UA and WA's "
          "names; sermo does not)",
    "F1": "F1: macro F1 over the classes",
    "wF1": "wF1: F1 per class weighted by its share of the test utterances (what MELD-style corpora report)",
}


def metric_note(rows: Sequence[Mapping[str, Any]], folds: int) -> str:
    """What the metrics shown in a results table mean, and what ± is (only those shown)."""
    shown = {COLUMNS[k].split()[0] for r in rows for k in r.get("mean", {}) if k in COLUMNS}
    parts = [text for short, text in METRIC_NOTES.items() if short in shown]
    spread = ("Values are the mean ± the sample standard deviation (ddof 1) over folds." if folds > 1
              else "One fold (or partition): values are its scores, with no spread over folds to show.")
    return (". ".join(parts) + ". " if parts else "") + spread


def results_table(rows: Sequence[Mapping[str, Any]], key: str = "mean") -> str:
    """The paper-style table: one line per row, mean ± std over folds of each metric it has."""
    cols = [c for c in COLUMNS if any(c in r.get(key, {}) for r in rows)]
    counted = any("utterances" in r for r in rows)
    lines = []
    for r in rows:
        if r.get("skipped"):
            lines.append({"row": f"{r['name']} (skipped: {r['skipped']})", "modalities": "+".join(r["modalities"]),
                          "#params": ""})
            continue
        line = {"row": r["name"], "modalities": "+".join(r["modalities"]), "#params": f"{r['trainable_params']:,}"}
        if counted:
            line["test utts"] = f"{r['utterances']:,}" if "utterances" in r else ""
        for c in cols:
            if c in r[key]:
                spread = (r.get("std") or {}).get(c)
                line[COLUMNS[c]] = f"{r[key][c]:.3f}" + (f" ± {spread:.3f}" if spread is not None else "")
        lines.append(line)
    return markdown_table(lines, ["row", "modalities", "#params"] + (["test utts"] if counted else [])
                          + [COLUMNS[c] for c in cols]) + test_set_note(rows)


def test_set_note(rows: Sequence[Mapping[str, Any]]) -> str:
    """A line naming the rows scored on other test utterances than the table's others (a row
    leaves out those that lack its input: no transcript, unreadable audio), or nothing."""
    scored = [r for r in rows if not r.get("skipped") and r.get("ids_digest")]
    if len({r["ids_digest"] for r in scored}) < 2:
        return ""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for r in scored:
        groups.setdefault(r["ids_digest"], []).append(r)
    common = max(groups.values(), key=lambda g: (len(g), g[0]["utterances"]))  # most rows, then most utterances
    odd = [r for r in scored if r["ids_digest"] != common[0]["ids_digest"]]
    return ("\nNot every row was scored on the same test utterances: "
            + ", ".join(f"{r['name']} on {r['utterances']:,}" for r in odd)
            + f" (the other rows on {common[0]['utterances']:,}); a row leaves out the utterances that lack its input (a transcript, readable audio), "
            "so compare these rows with care. The significance tests below pair the utterances both rows have.\n")


def is_builtin_corpus(path) -> bool:
    """Whether a corpus path (folder, table or manifest) is sermo's synthetic corpus."""
    from pathlib import Path

    p = Path(path)
    candidates = [p, *p.parents] if p.exists() else []
    if p.is_file() and p.suffix == ".parquet":
        try:
            audio = pd.read_parquet(p, columns=["audio"])["audio"].iloc[0]
            candidates += list(Path(audio).parents)
        except Exception:  # a broken manifest is reported elsewhere
            pass
    return any((c / "SERMO_SYNTH.json").is_file() for c in candidates)


def encoders_line(sysdef, cfg) -> str:
    """The encoders a run's rows read, and where its transcripts come from, in one sentence."""
    from dataclasses import fields

    names: list[str] = [u.encoder for u in sysdef.feature_uses(cfg)]
    for f in fields(cfg.model):  # fine-tuned and extra encoders a system names in its model section
        if f.name.endswith(("_encoder", "_encoders")):
            value = getattr(cfg.model, f.name)
            names += [value] if isinstance(value, str) else list(value or [])
    names = list(dict.fromkeys(n for n in names if n))
    transcripts = cfg.data.transcripts if cfg.data.text_encoder else None
    return ("Encoders: " + (", ".join(f"`{n}`" for n in names) or "none") + "."
            + (f" Transcripts: {transcripts}." if transcripts else ""))


def run_report(results: RunResults, protocol, sysdef, corpora, plots: dict, extra: str = "", *, run_folder=None,
               cfg=None) -> str:
    """REPORT.md of a run (``run_folder`` and ``cfg``: for the significance of the paper's
    comparisons, the training summary and the deviations from the paper)."""
    out = [f"# {results['system']} on {results['corpus']} ({results['profile']} profile)\n\n"]
    if sysdef.title:
        out.append(f"{sysdef.title}.\n\n")
    if any(is_builtin_corpus(p) for _, p in corpora):
        out.append("**This ran on sermo's built-in synthetic corpus** (espeak-ng speech, simulated annotators). "
                   "Its numbers show the method works end to end; they say nothing about IEMOCAP or MSP-Podcast "
                   "and are not comparable with the paper's.\n\n")
    elif results["profile"] == "demo":
        out.append("Profile `demo`: stand-in encoders and smaller sizes that run on 2 CPU cores in minutes, the "
                   "protocol's first fold only; `sermo run` without `--profile` runs every fold, trained until "
                   "validation stops improving (profile `default`), and `--profile paper` the paper's settings.\n\n")
    elif results["profile"] == "default":
        out.append("Profile `default` (for one's own corpus): the offline encoders (Whisper tiny.en, MiniLM), every "
                   "fold of the protocol, each model trained until validation stops improving (the Training table "
                   "says how often the best epoch was the last); `--profile paper` runs the paper's settings.\n\n")
    out.append(f"Protocol `{protocol.spec}`: {protocol.description}. Label space `{results['label_space']}`"
               + (f": {', '.join(results['classes'])}" if results.get("classes") else "") + ".")
    if results.get("left_out"):
        out.append(" Categories it leaves out (neither trained nor scored on): "
                   + ", ".join(f"{c} {n}" for c, n in results["left_out"].items()) + ".")
    if cfg is not None:
        out.append(" " + encoders_line(sysdef, cfg))
    asr = results.get("transcripts")
    if asr:
        out.append(f" The `{asr['engine']}` transcripts' word error rate against the oracle: "
                   + (f"{asr['wer']:.1%} on {asr['wer_utterances']:,} utterances" if asr.get("wer") is not None
                      else "none (the corpus has no oracle transcripts)")
                   + (f"; {asr['skipped']:,} could not be transcribed" if asr.get("skipped") else "") + ".")
    out.append("\n\n")
    for f in protocol.folds:
        out.append(f"- {f.name}: {f.description} ({len(f.train)} / {len(f.valid)} / "
                   f"{sum(len(t) for t in f.tests.values())} utterances)\n")
    rows = results["rows"]
    test = next((str(r["test_set"]) for r in rows if r.get("test_set")), "test")
    out.append(f"\n## Results ({test})\n\n")
    out.append(results_table(rows))
    extra_tests = sorted({t for r in rows for t in r.get("tests", {})})
    for t in extra_tests:
        sub = [{**r["tests"][t], "name": r["name"], "modalities": r["modalities"],
                "trainable_params": r["trainable_params"]} for r in rows if t in r.get("tests", {})]
        out.append(f"\n## Results ({t})\n\n")
        out.append(results_table(sub))
    out.append(f"\n{metric_note(rows, len(protocol.folds))}\n")
    # a mixed run has its own tables; "<corpus>/<test set>" holds a further test set's numbers
    for key in [results["corpus"]] + [f"{results['corpus']}/{t}" for t in extra_tests]:
        paper = sysdef.paper.get(key, {}) if sysdef.paper else {}
        if paper and not any(is_builtin_corpus(p) for _, p in corpora):
            lines = [{"row": name, **{COLUMNS.get(k, k): v for k, v in vals.items()}} for name, vals in paper.items()]
            where = f" ({key.split('/', 1)[1]})" if "/" in key else ""
            out.append(f"\n## The paper's numbers{where}\n\n" + markdown_table(lines))
    if run_folder is not None and cfg is not None:
        out.append(_significance(run_folder, sysdef, cfg, rows, test))
        out.append(_training(run_folder))
        out.append(_deviations(sysdef, cfg, results["corpus"].split("+")))
    if extra:
        out.append("\n" + extra.strip() + "\n")
    pics = [p for paths in plots.values() for p in paths]
    if pics:
        out.append("\n## Plots\n\n" + "".join(f"- [{p.name}](plots/{p.name})\n" for p in pics))
    session = results.get("seconds_this_session")
    resumed = bool(results.get("seconds_earlier"))
    out.append(f"\nRun time: {results.get('seconds', 0):.0f} s"
               + (f" ({session:.0f} s in the session that finished it; folds finished by earlier sessions count "
                  "their own time)" if resumed else "") + ".\n")
    return "".join(out)


def _significance(run_folder, sysdef, cfg, rows: Sequence[Mapping[str, Any]], test: str) -> str:
    from sermo.evaluation.significance import significance_table

    ran = [r["name"] for r in rows if not r.get("skipped")]
    tests = [test] + sorted({t for r in rows for t in r.get("tests", {})} - {test})
    table = significance_table(run_folder, sysdef.paper_comparisons(cfg), tests, ran)
    if not table:
        return ""
    return ("\n## Significance of the paper's comparisons\n\nThe difference between two rows on the test utterances of "
            "every fold pooled, with a 95% interval from a paired bootstrap (1,000 resamples of utterances, both rows' "
            "predictions kept together), and its sign per fold. An interval that contains zero is a difference these "
            "data cannot carry.\n\n" + markdown_table(table))


def _training(run_folder) -> str:
    """Per stage, over the folds: epochs run, the best epoch, optimizer steps, the warm-up."""
    import json

    from sermo.evaluation.runfolder import RunFolder

    stages: dict[str, list[dict]] = {}
    for stage, done in RunFolder(run_folder).stage_records():
        try:
            stages.setdefault(stage, []).append(json.loads(done.read_text()))
        except (OSError, ValueError):
            continue
    if not stages:
        return ""
    lines = []
    for stage, recs in stages.items():
        sched = [r["schedule"] for r in recs if r.get("schedule")]
        best = [r["best_epoch"] for r in recs if r.get("best_epoch") is not None]
        # Lightning counts epochs from 0: the best epoch was the last run when it is epochs - 1
        last = sum(1 for r in recs if r.get("best_epoch") is not None and r["best_epoch"] >= r.get("epochs", 0) - 1)
        line = {"stage": stage, "folds": len(recs), "epochs": f"{np.mean([r.get('epochs', 0) for r in recs]):.0f}",
                "best epoch (mean)": f"{np.mean(best) + 1:.1f}" if best else "-",
                "best = last": f"{last} of {len(recs)}" if best else "-",
                "steps": f"{np.mean([r.get('steps', 0) for r in recs]):.0f}"}
        if sched:
            cut = sched[0]["warmup_steps"] < sched[0]["warmup_requested"]
            line["warm-up"] = f"{sched[0]['warmup_steps']}" + (f" (paper: {sched[0]['warmup_requested']})" if cut else "")
            line["peak lr reached"] = f"{min(s['peak_factor'] for s in sched):.0%}"
        lines.append(line)
    return ("\n## Training\n\nPer stage, over the folds: epochs run, the epoch whose weights were kept (counted from 1) "
            "and in how many folds it was the last one run (a model still improving when its budget ended: raise "
            "train.epochs). A warm-up longer than 30% of a run's real steps is cut so that the peak learning rate "
            "is reached; the paper's length is shown beside it.\n\n"
            + markdown_table(lines))


def _deviations(sysdef, cfg, corpora=()) -> str:
    """The system's deviations from the paper that apply to this run's profile and corpora,
    those its settings make (gradient clipping), and every setting in which this run differs
    from the paper profile: for the demo profile the stand-in encoders and smaller sizes, for a
    paper profile the overrides it ran with (``train.epochs=1`` ...)."""
    import dataclasses

    lines = [{"what": d.what, "why": d.why, "effect on the comparison": d.effect}
             for d in sysdef.deviations_for(cfg.lineage, corpora) + engine_deviations(cfg)]
    out = "\n## Deviations from the paper\n\n"
    out += markdown_table(lines) if lines else "None recorded for this profile.\n"
    from sermo.config import ConfigError, load_recipe

    reference = cfg.profile if cfg.profile.startswith("paper") else "paper"
    try:
        paper = load_recipe(sysdef.name, reference, sysdef.config_cls, path=sysdef.recipe_path)
    except ConfigError:
        return out
    diffs = []
    for section in ("data", "train", "model"):
        mine, theirs = dataclasses.asdict(getattr(cfg, section)), dataclasses.asdict(getattr(paper, section))
        diffs += [{"setting": f"{section}.{k}", "this run": _setting(mine[k]), f"{reference} profile": _setting(theirs[k])}
                  for k in mine if mine[k] != theirs.get(k)]
    if diffs:
        what = (f"This run's `{cfg.profile}` profile differs from the `paper` profile in" if reference != cfg.profile
                else f"This run overrode its `{reference}` profile (the deviations above describe the profile as "
                     "written; these settings are what ran)")
        out += f"\n{what}:\n\n" + markdown_table(diffs)
    return out


def _setting(value):
    """A recipe value as the table shows it: numbers in full (0.0005, not the metrics' 0.001)."""
    return f"{value:g}" if isinstance(value, float) else value


def engine_deviations(cfg) -> list:
    """Deviations a run's own settings make in every system (none of the five papers clips
    gradients)."""
    from sermo.systems.definition import Deviation

    out = []
    if cfg.train.grad_clip:
        out.append(Deviation(f"Gradient norms are clipped at {cfg.train.grad_clip:g} (train.grad_clip).",
                             "None of the five papers mentions clipping; it guards the fine-tuned encoders and the "
                             "warm-up peaks against a diverging step (train.grad_clip=null turns it off).",
                             "Every row of the table is clipped alike; it changes numbers only where a step would "
                             "have exceeded the norm."))
    return out
