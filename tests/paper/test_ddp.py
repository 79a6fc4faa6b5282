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
