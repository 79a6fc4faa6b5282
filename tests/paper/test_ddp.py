"""Two-process DDP runs on CPU (gloo) of the paper profiles that carry state from one stage to the
next: after each stage every rank holds the best epoch's weights, teacher embeddings and residual
masks agree across ranks, analyses and caches are written once, and ``--fresh`` empties the run
folder once (not again when Lightning starts the second rank)."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.paper.conftest import REPO, results_of

pytestmark = pytest.mark.paper


def probes(folder: Path) -> dict[int, list[dict]]:
    out = {}
    for f in sorted(folder.glob("rank*.jsonl")):
        out[int(f.stem[4:])] = [json.loads(line) for line in f.read_text().splitlines()]
    return out


def ddp_run(paper_env, name: str, system: str, layout: str, sets: list[str]) -> tuple[Path, dict]:
    out = paper_env.root / "runs" / f"ddp-{name}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "made_with.json").write_text("{}")  # a run folder from before: --fresh empties it
    (out / "plots").mkdir(exist_ok=True)
    (out / "plots" / "stale.png").write_text("from an older run")  # what sermo wrote there goes
    probe = paper_env.root / f"probe-{name}"
    args = ["run", system, "--profile", "paper-msp" if system == "teacher_student" else "paper",
            "--corpus", f"{layout}={paper_env.corpus(layout)}", "--out", str(out), "--store", str(paper_env.store),
            "--devices", "2", "--accelerator", "cpu", "--fresh", "--quiet",
            "--set", "train.epochs=2", "--set", "data.max_folds=1"]
    for s in sets:
        args += ["--set", s]
    import os

    os.environ["SERMO_DDP_PROBE"] = str(probe)
    os.environ["SERMO_DDP_FIRST_BEST"] = "1"
    try:
        paper_env.sermo(args, log=paper_env.root / f"ddp-{name}.log", timeout=900,
                        launcher=[sys.executable, str(REPO / "tests" / "paper" / "ddp_probe.py")])
    finally:
        del os.environ["SERMO_DDP_PROBE"], os.environ["SERMO_DDP_FIRST_BEST"]
    return out, probes(probe)


def check_stages(ranks: dict[int, list[dict]]) -> list[str]:
    """Every stage's weights on every rank are the best epoch's; returns the stages."""
    assert sorted(ranks) == [0, 1], f"probes from ranks {sorted(ranks)}"
    fits = {r: [e for e in events if e["kind"] == "fit"] for r, events in ranks.items()}
    stages = [e["stage"] for e in fits[0]]
    assert stages and stages == [e["stage"] for e in fits[1]]
    for r, events in fits.items():
        for e in events:
            assert e["weights"] == e["best"], f"rank {r} left {e['stage']} with other weights than the best epoch's"
    assert [e["weights"] for e in fits[0]] == [e["weights"] for e in fits[1]]
    return stages


def test_teacher_student_under_two_process_ddp(paper_env):
    out, ranks = ddp_run(paper_env, "ts", "teacher_student", "msp-podcast",
                         ["model.rows=[multimodal,cts]", "model.student_finetune=false"])
    assert not (out / "plots" / "stale.png").exists()  # emptied by --fresh ...
    assert results_of(out)["rows"] and (out / "REPORT.md").is_file()  # ... once: rank 0's results survive
    stages = check_stages(ranks)
    assert any(s.endswith("/cts") for s in stages)
    for kind in ("teacher", "mask"):
        seen = {r: [e["hash"] for e in events if e["kind"] == kind] for r, events in ranks.items()}
        assert seen[0] and seen[0] == seen[1], f"{kind} differs across ranks"


def test_distilled_under_two_process_ddp(paper_env):
    out, ranks = ddp_run(paper_env, "distilled", "distilled", "msp-podcast", [
        "model.speech_encoders=[distilhubert]", "model.importance_encoders=[distilhubert]",
        "model.importance_epochs=1", "model.transcript_engines=[whisper-tiny]", "model.robustness_utterances=30"])
    check_stages(ranks)
    writes = {r: Counter(e["file"] for e in events if e["kind"] == "write") for r, events in ranks.items()}
    assert writes[0] == {"layer_importance.json": 1, "transcripts.json": 1} and not writes[1]
    assert (out / "partitions" / "analysis" / "transcripts.json").is_file()
    asr = {r: sum(e["utterances"] for e in events if e["kind"] == "asr") for r, events in ranks.items()}
    assert asr[0] > 0 and asr[1] == 0, f"utterances transcribed per rank: {asr}"


def test_ddp_training_with_two_cpu_processes(iemocap_synth, tmp_path):
    """`sermo run --devices 2` trains the baselines with Lightning DDP (gloo) and rank 0 writes the
    results (moved here from make test: the paper-path check holds the multi-process runs)."""
    import os
    import subprocess

    sets = ["train.epochs=2", "train.batch_size=16", "model.hidden=32", "model.embedding=16", "model.rows=[audio,text]"]
    cmd = [sys.executable, "-m", "sermo.cli", "run", "baselines", "--profile", "demo", "--corpus", f"iemocap={iemocap_synth}",
           "--devices", "2", "--folds", "1", "--out", str(tmp_path / "ddp"), "--store", str(tmp_path / "s"),
           "--quiet", *[x for o in sets for x in ("--set", o)]]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "ddp" / "results.json").read_text())
    assert [r["name"] for r in results["rows"]] == ["audio", "text"]
    import pandas as pd

    preds = pd.read_parquet(tmp_path / "ddp" / "predictions" / "audio.fold1.test.parquet")
    assert len(preds) == 40  # every test utterance, not one rank's share
