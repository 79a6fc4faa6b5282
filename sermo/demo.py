"""``sermo demo`` / ``make demo``: the built-in corpus and every registered system on it."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from sermo.data.corpora import prepare
from sermo.data.io import write_text_atomic
from sermo.data.manifest import Manifest
from sermo.data.synth import synthesize_corpus
from sermo.data.synth.corpus import MARKER, SynthError
from sermo.data.synth.plan import MINIMUM
from sermo.data.synth.check import modality_check
from sermo.evaluation.report import describe_manifest, markdown_table, results_table

DEMO_CORPORA = {"iemocap": (0, 1.0), "msp-podcast": (1, 0.6)}
"""layout -> (seed offset: different voices and words; share of ``--utterances``: MSP-Podcast serves
only hierarchical's corpus-transfer run, whose training takes as many utterances as IEMOCAP's)"""


def demo_corpus(out: Path, layout: str, *, utterances: int, seed: int, progress: bool = True) -> Path:
    """Synthesise (if absent) one built-in corpus of the demo and cache its manifest; returns
    the manifest path (what systems are run on)."""
    root = out / "corpus" / layout
    offset, share = DEMO_CORPORA[layout]
    n = max(MINIMUM[layout], round(utterances * share))
    try:
        synthesize_corpus(layout, root, utterances=n, seed=seed + offset, progress=progress)
    except SynthError:
        if not (root / MARKER).is_file():  # not a corpus sermo made: never removed
            raise
        # a corpus of another size, seed or version of the demo: made again (as its runs are)
        print(f"sermo demo: {root} holds a built-in corpus of other settings; synthesising it again")
        shutil.rmtree(root)
        synthesize_corpus(layout, root, utterances=n, seed=seed + offset, progress=progress)
    cached = root / "manifest.parquet"
    if not (cached.is_file() and cached.stat().st_mtime >= (root / "SERMO_SYNTH.json").stat().st_mtime):
        manifest = prepare(layout, root)
        manifest.validate()
        manifest.save(cached)
    return cached


def run_demo(out: Path, *, utterances: int = 1000, seed: int = 0, systems: list[str] | None = None,
             progress: bool = True) -> Path:
    """Run the demo into ``out`` and return the path of its REPORT.md.

    Every registered system (or those named in ``systems``) runs its ``demo`` profile on the
    built-in corpora it asks for; finished runs are reused, so an interrupted demo resumes.
    """
    from sermo.evaluation.runfolder import RunFolder
    from sermo.systems import load_all
    from sermo.training.folder import RunFolderChanged
    from sermo.training.runner import run_system

    t0 = time.time()
    sections = ["# sermo demo\n\n",
                "Everything below ran on the built-in synthetic corpus (`sermo synth`): espeak-ng speech "
                "with simulated annotators. It is not IEMOCAP or MSP-Podcast, and its numbers say nothing "
                "about the papers' results.\n"]
    registry = load_all()
    chosen = systems or list(registry)
    unknown = [s for s in chosen if s not in registry]
    if unknown:
        raise ValueError(f"unknown system(s) {unknown}; known: {', '.join(registry)}")
    # only the layouts the chosen systems run on are synthesised
    needed = {layout for s in chosen for layouts in (registry[s].demo_corpora, *registry[s].demo_extra)
              for layout in layouts}
    corpora = {layout: demo_corpus(out, layout, utterances=utterances, seed=seed, progress=progress)
               for layout in DEMO_CORPORA if layout in needed}
    timings = []
    for name in chosen:
        t1 = time.time()
        sysdef = registry[name]
        runs = [(name, sysdef.demo_corpora)] + [(f"{name}-{'+'.join(ls)}", ls) for ls in sysdef.demo_extra]
        for folder, layouts in runs:
            pairs = [(layout, corpora[layout]) for layout in layouts]
            try:
                run_dir = run_system(name, pairs, profile="demo", out=out / folder, progress=progress)
            except RunFolderChanged:  # made by another version or profile of the demo: start it over
                print(f"sermo demo: {out / folder} was made with other settings; starting it over")
                run_dir = run_system(name, pairs, profile="demo", out=out / folder, progress=progress, fresh=True)
            results = RunFolder(run_dir).read_results()
            sections.append(f"\n## {folder}\n\n{sysdef.title}, on {' + '.join(layouts)}. Full report: "
                            f"[{folder}/REPORT.md]({folder}/REPORT.md)\n\n")
            sections.append(results_table(results["rows"]))
        timings.append({"system": name, "seconds": round(time.time() - t1, 1)})
    for layout, path in corpora.items():
        manifest = Manifest.load(path)
        sections.append(f"\n## Corpus: {layout} layout\n\n")
        sections.append(describe_manifest(manifest))
        check = modality_check(manifest)
        rows = [{"dimension": d, "text r": r["text"], "prosody r": r["prosody"]} for d, r in check.items()]
        sections.append("\nWhich modality carries which dimension (5-fold CV correlation of a lexicon score "
                        "and of prosodic statistics with the consensus labels):\n\n")
        sections.append(markdown_table(rows))
    if timings:
        sections.append("\n## Time\n\n" + markdown_table(timings))
    sections.append(f"\nTotal time: {time.time() - t0:.1f} s on this machine.\n")
    report = out / "REPORT.md"
    write_text_atomic(report, "".join(sections))
    return report
