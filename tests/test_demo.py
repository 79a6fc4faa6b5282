import json

from sermo.demo import run_demo


def test_demo_runs_registered_systems_and_gathers_their_tables(tmp_path, monkeypatch):
    from sermo.training import runner

    real = runner.run_system
    seen = []

    def quick(system, corpora, **kw):
        seen.append((system, [n for n, _ in corpora]))
        return real(system, corpora, overrides=["train.epochs=1", "model.rows=[audio]"], folds=[1],
                    **{k: v for k, v in kw.items() if k != "overrides"})

    monkeypatch.setattr(runner, "run_system", quick)
    monkeypatch.setenv("SERMO_FEATURES", str(tmp_path / "store"))
    report = run_demo(tmp_path / "demo", utterances=60, systems=["baselines"], progress=False)
    text = report.read_text()
    assert seen == [("baselines", ["iemocap"])]
    # only the layouts the chosen systems read are synthesised
    corpus = tmp_path / "demo" / "corpus"
    assert (corpus / "iemocap").is_dir() and not (corpus / "msp-podcast").exists()
    assert "## baselines" in text and "| audio | audio |" in text and "baselines/REPORT.md" in text
    assert "not IEMOCAP or MSP-Podcast" in text and "Total time" in text and "prosody r" in text
    assert json.loads((tmp_path / "demo" / "baselines" / "results.json").read_text())["rows"]
