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


def test_a_demo_corpus_of_other_settings_is_made_again(tmp_path):
    from sermo.data.manifest import Manifest
    from sermo.demo import demo_corpus

    assert len(Manifest.load(demo_corpus(tmp_path, "iemocap", utterances=20, seed=0, progress=False))) == 20
    # a later demo of another size (an older version's corpus) replaces it instead of stopping
    assert len(Manifest.load(demo_corpus(tmp_path, "iemocap", utterances=24, seed=0, progress=False))) == 24
