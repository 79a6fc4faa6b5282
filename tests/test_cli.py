import pytest

from sermo.cli import build_parser, main
from sermo.data.manifest import Manifest


def test_every_command_has_help(capsys):
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name in commands:
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0
        assert "usage: sermo " + name in capsys.readouterr().out


def test_synth_then_prepare(tmp_path, capsys):
    out = tmp_path / "D"
    assert main(["synth", "--layout", "iemocap", "--out", str(out), "--utterances", "40", "--seed", "1",
                 "--quiet"]) == 0
    assert main(["prepare", "iemocap", str(out), "--out", str(tmp_path / "m.jsonl")]) == 0
    m = Manifest.load(tmp_path / "m.jsonl")
    assert len(m) == 40 and m.df["speaker"].nunique() == 10
    assert "manifest written" in capsys.readouterr().out


def test_user_errors_are_one_line(tmp_path, capsys):
    assert main(["prepare", "iemocap", str(tmp_path), "--out", str(tmp_path / "m.parquet")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sermo: error:") and "EmoEvaluation" in err and "Traceback" not in err


def test_transcribe_cli(tmp_path, iemocap_synth, capsys):
    from sermo.data.corpora import prepare

    m = prepare("iemocap", iemocap_synth)
    m.subset(m.ids[:4]).save(tmp_path / "small.jsonl")
    out = tmp_path / "asr.parquet"
    assert main(["transcribe", "--corpus", f"c={tmp_path / 'small.jsonl'}", "--store", str(tmp_path / "s"),
                 "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "4 transcribed" in text and "WER" in text
    assert set(Manifest.load(out).df["transcript_source"]) == {"asr:whisper-tiny.en"}  # the default engine


def test_labels_option_is_checked_and_becomes_an_override(tmp_path, capsys, monkeypatch):
    assert main(["run", "hierarchical", "--corpus", f"iemocap={tmp_path}", "--labels", "iemocap"]) == 2
    assert "expected CORPUS=TYPE" in capsys.readouterr().err
    seen = {}

    def fake_run(system, corpora, **kw):
        seen.update(kw)
        return tmp_path

    monkeypatch.setattr("sermo.training.runner.run_system", fake_run)
    main(["run", "hierarchical", "--corpus", f"iemocap={tmp_path}", "--corpus", f"msp={tmp_path}",
          "--labels", "iemocap=continuous,msp=discrete"])
    assert seen["overrides"] == ["model.labels={iemocap: continuous, msp: discrete}"]


def test_predict_names_a_folder_that_is_not_a_bundle(tmp_path, capsys):
    (tmp_path / "bundle").mkdir()
    assert main(["predict", str(tmp_path / "bundle"), str(tmp_path)]) == 2
    assert "not a sermo bundle" in capsys.readouterr().err
