"""Every ``paper`` profile, end to end, on tiny models under the papers' own Hub ids.

Each run is the paper's recipe unchanged (encoders, layers, rows, protocol, label space, model
sizes, optimiser) but for how long it trains: one epoch, the protocol's first fold, and the few
settings that count steps (label_embedding's continued pre-training, cross_representation's
iterations, distilled's per-layer models). Every row must train, predict, write its bundle and
appear in REPORT.md, or be skipped for a reason that holds with the real weights too; one bundle
per run must predict a file through ``Predictor``.
"""

from __future__ import annotations

import os

import pytest

from tests.paper.conftest import results_of

pytestmark = pytest.mark.paper

ONE_EPOCH = ["train.epochs=1", "data.max_folds=1"]

# (id, system, profile, corpus layouts, the step settings it overrides, skips allowed: row -> why,
#  the rows expected: None for the recipe's model.rows, else a prefix each of which some row has)
TABLE2 = tuple(f"t{i}_" for i in range(1, 9))
PROFILES = [
    ("teacher_student", "teacher_student", "paper", ("iemocap",), [], {}, None),
    ("teacher_student-msp", "teacher_student", "paper-msp", ("msp-podcast",), [], {}, None),
    ("distilled", "distilled", "paper", ("msp-podcast",), ["model.importance_epochs=1"], {}, None),
    ("hierarchical", "hierarchical", "paper", ("iemocap",), [], {}, None),
    ("hierarchical-msp", "hierarchical", "paper", ("msp-podcast",), [], {}, None),
    ("hierarchical-transfer", "hierarchical", "paper", ("iemocap", "msp-podcast"), [], {}, TABLE2),
    ("label_embedding", "label_embedding", "paper", ("iemocap",), ["model.pretrain_steps=2"], {}, None),
    ("cross_representation", "cross_representation", "paper", ("iemocap",),
     ["model.speech_iterations=20", "model.text_iterations=20", "model.probe_epochs=1"], {}, None),
    ("baselines", "baselines", "paper", ("iemocap",), [], {}, None),
]


def _accelerator() -> list[str]:
    """``--accelerator X`` when ``SERMO_PAPER_ACCELERATOR`` asks for one."""
    acc = os.environ.get("SERMO_PAPER_ACCELERATOR")
    return ["--accelerator", acc] if acc else []


def _precision() -> list[str]:
    """``train.precision=X`` when ``SERMO_PAPER_PRECISION`` asks for one."""
    precision = os.environ.get("SERMO_PAPER_PRECISION")
    return [f"train.precision={precision}"] if precision else []


# every system once more in bfloat16 mixed precision (CPU autocast here, a GPU's on one), its
# first paper profile: the rows as in fp32; the analyses that train no row left out for time
BF16 = [
    ("teacher_student", []),
    ("distilled", ["model.layer_importance=false", "model.transcript_engines=[]"]),
    ("hierarchical", []),
    ("label_embedding", ["model.k_grid=[]", "model.analysis_folds=0"]),
    ("cross_representation", ["model.probe_epochs=1"]),
    ("baselines", []),
]


@pytest.mark.parametrize("name,system,profile,layouts,steps,skips,expect", PROFILES, ids=[p[0] for p in PROFILES])
def test_paper_profile_runs_end_to_end(paper_env, name, system, profile, layouts, steps, skips, expect):
    run_and_check(paper_env, name, system, profile, layouts, steps + _precision(), skips, expect)


@pytest.mark.parametrize("system,extra", BF16, ids=[b[0] for b in BF16])
def test_paper_profile_trains_and_predicts_in_bf16(paper_env, system, extra):
    name, _, profile, layouts, steps, skips, expect = next(p for p in PROFILES if p[1] == system)
    run_and_check(paper_env, f"{name}-bf16", system, profile, layouts,
                  steps + extra + ["train.precision=bf16-mixed"], skips, expect)


def run_and_check(paper_env, name, system, profile, layouts, sets, skips, expect):
    """Run the profile with ``sets`` (``section.key=value``) and check every row (see the module's
    docstring)."""
    from sermo.config import load_recipe
    from sermo.systems import get_system

    out = paper_env.root / "runs" / name
    args = ["run", system, "--profile", profile, "--out", str(out), "--store", str(paper_env.store), "--quiet"]
    for layout in layouts:
        args += ["--corpus", f"{layout}={paper_env.corpus(layout)}"]
    for s in ONE_EPOCH + sets:
        args += ["--set", s]
    paper_env.sermo(args + _accelerator(), log=paper_env.root / f"{name}.log")

    results = results_of(out)
    assert results["profile"] == profile
    # the plan sized every feature the run read: the system's declared rows and analyses say all it reads
    assert results["unplanned"] == [], f"read but not declared (so not planned): {results['unplanned']}"
    rows = {r["name"]: r for r in results["rows"]}
    sysdef = get_system(system)
    cfg = load_recipe(system, profile, sysdef.config_cls, path=sysdef.recipe_path)
    if expect is None:
        missing = [r for r in getattr(cfg.model, "rows", None) or [] if r not in rows]
    else:
        missing = [p for p in expect if not any(r.startswith(p) for r in rows)]
    assert not missing, f"rows of the recipe with no result: {missing}"
    report = (out / "REPORT.md").read_text()
    bundled = []
    for row_name, row in rows.items():
        skipped = row.get("skipped")
        if skipped:
            assert row_name in skips and skips[row_name] in skipped, f"{row_name} skipped: {skipped}"
            continue
        assert row["mean"], f"{row_name} has no metrics"
        assert f"| {row_name} " in report or f"| `{row_name}` " in report, f"{row_name} is not in REPORT.md"
        if row["trainable_params"] > 0:
            assert (out / "bundles" / row_name / "config.json").is_file(), f"{row_name} wrote no bundle"
            bundled.append(row_name)
    assert bundled, "no row wrote a bundle"
    if cfg.data.transcripts != "oracle" and cfg.data.text_encoder:  # the run's own ASR transcripts are scored
        assert results["transcripts"]["wer"] is not None and "word error rate against the oracle" in report
    assert "overrode its" in report and "| train.epochs | 1 |" in report  # what ran, not the profile as written
    # a bundle predicts new audio through `sermo predict`: the last one (fine-tuned and fusion rows
    # come last), in the same offline cache
    wav = sorted(paper_env.corpus(layouts[0]).rglob("*.wav"))[0]
    log = paper_env.root / f"{name}.predict.log"
    paper_env.sermo(["predict", str(out / "bundles" / bundled[-1]), str(wav), "--transcript", "i am so glad",
                     "--format", "json", *_accelerator()], log=log)
    assert wav.name in log.read_text()
