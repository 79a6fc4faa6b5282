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
    assert main(["run", "hierarchical", "--profile", "demo", "--corpus", f"iemocap={tmp_path}", "--labels", "iemocap"]) == 2
    assert "expected CORPUS=TYPE" in capsys.readouterr().err
    seen = {}

    def fake_run(system, corpora, **kw):
        seen.update(kw)
        return tmp_path

    monkeypatch.setattr("sermo.training.runner.run_system", fake_run)
    main(["run", "hierarchical", "--profile", "demo", "--corpus", f"iemocap={tmp_path}", "--corpus", f"msp={tmp_path}",
          "--labels", "iemocap=continuous,msp=discrete"])
    assert seen["overrides"] == ["model.labels={iemocap: continuous, msp: discrete}"]


def test_predict_names_a_folder_that_is_not_a_bundle(tmp_path, capsys):
    (tmp_path / "bundle").mkdir()
    assert main(["predict", str(tmp_path / "bundle"), str(tmp_path)]) == 2
    assert "not a sermo bundle" in capsys.readouterr().err


def one_line_error(capsys, argv) -> str:
    """Run ``sermo argv``; assert it ends as one ``sermo: error:`` line and exit 2; return the line."""
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    lines = [x for x in capsys.readouterr().err.strip().splitlines() if not x.startswith("sermo: warning:")]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("sermo: error:"), lines
    return lines[0]


def test_every_user_error_is_one_line_and_exit_2(tmp_path, capsys, iemocap_synth):
    corpus = f"iemocap={iemocap_synth}"
    assert "unknown system 'resnet'" in one_line_error(capsys, ["run", "resnet", "--profile", "demo", "--corpus", corpus])
    assert "no such file or folder" in one_line_error(capsys, ["run", "baselines", "--profile", "demo", "--corpus",
                                                               f"iemocap={tmp_path / 'nowhere'}"])
    assert "'abc'" in one_line_error(capsys, ["run", "baselines", "--profile", "demo", "--corpus", corpus, "--folds", "abc"])
    (tmp_path / "a-file").write_text("x")
    assert "a-file" in one_line_error(capsys, ["run", "baselines", "--profile", "demo", "--corpus", corpus, "--out",
                                               str(tmp_path / "a-file")])
    assert "section.key=value" in one_line_error(capsys, ["run", "baselines", "--profile", "demo", "--corpus", corpus, "--set",
                                                          "train.epochs"])
    assert "label space" in one_line_error(capsys, ["run", "baselines", "--profile", "demo", "--corpus", corpus, "--label-space",
                                                    "no-such-space", "--out", str(tmp_path / "r")])
    # reliability review N12c-f, N12i: tracebacks before
    assert "not valid YAML" in one_line_error(capsys, ["run", "baselines", "--profile", "demo", "--corpus", corpus, "--set",
                                                       "model.rows=[audio", "--out", str(tmp_path / "ry")])
    assert "is a file" in one_line_error(capsys, ["synth", "--layout", "iemocap", "--utterances", "5", "--out",
                                                  str(tmp_path / "a-file")])
    assert "--layers 'a,b'" in one_line_error(capsys, ["extract", "--corpus", corpus, "--encoder", "logmel",
                                                       "--layers", "a,b", "--store", str(tmp_path / "st")])
    assert "unknown ASR engine 'nosuch'" in one_line_error(capsys, ["transcribe", "--corpus", corpus, "--engine",
                                                                    "nosuch", "--store", str(tmp_path / "st")])
    header_only = tmp_path / "header_only.csv"
    header_only.write_text("path,speaker,category\n")
    assert "no rows" in one_line_error(capsys, ["prepare", "table", str(header_only), "--out",
                                                str(tmp_path / "m.jsonl")])
    # reliability review N12g: no rows ran and exited 0 with an empty report
    assert "model.rows is empty" in one_line_error(capsys, ["run", "baselines", "--profile", "demo", "--corpus", corpus, "--set",
                                                            "model.rows=[]", "--out", str(tmp_path / "r0")])
    # table corpora: ragged, latin-1, a bad number, bad JSONL, a bad scale
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("path,speaker,category\na.wav,s1,angry\nb.wav,s2,happy,extra,cells\n")
    assert "ragged.csv" in one_line_error(capsys, ["prepare", "table", str(ragged), "--out",
                                                   str(tmp_path / "m.jsonl")])
    latin = tmp_path / "latin.csv"
    latin.write_bytes("path,speaker,category,transcript\na.wav,s1,angry,caf\xe9 au lait\n".encode("latin-1"))
    assert "latin.csv" in one_line_error(capsys, ["prepare", "table", str(latin), "--out", str(tmp_path / "m.jsonl")])
    start = tmp_path / "start.csv"
    start.write_text("path,speaker,category,start\na.wav,s1,angry,abc\n")
    assert "line 2: start 'abc' is not a number" in one_line_error(
        capsys, ["prepare", "table", str(start), "--out", str(tmp_path / "m.jsonl")])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "audio": "a.wav"}\n{"id": "b", "audio"\n')
    assert "bad.jsonl" in one_line_error(capsys, ["run", "baselines", "--profile", "demo", "--corpus", f"c={bad}"])
    assert "MIN below MAX" in one_line_error(capsys, ["prepare", "table", str(start), "--scale", "5,1", "--out",
                                                      str(tmp_path / "m.jsonl")])
    for value in ("0", "-5", "nan"):
        assert "--max-seconds" in one_line_error(capsys, ["predict", str(tmp_path), str(tmp_path), "--segment",
                                                          "--max-seconds", value])
    assert "port" in one_line_error(capsys, ["serve", str(tmp_path), "--port", "99999"])


def test_what_the_machine_refuses_is_one_line_that_says_what_to_do(tmp_path, capsys, monkeypatch):
    # reliability review S25a/S25c (disk full), N8b (memory), N13b (permission): tracebacks before
    import errno

    import sermo.cli as cli

    cases = [(OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "store" / "x.npy")), "disk is full"),
             (RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you "
                           "tried to allocate 3072000000000 bytes"), "out of memory"),
             (PermissionError(errno.EACCES, "Permission denied", "perm/x.wav"), "permission denied: perm/x.wav")]
    for exc, expected in cases:
        def boom(args, exc=exc):
            raise exc
        parser = cli.build_parser()
        monkeypatch.setattr(cli, "build_parser", lambda parser=parser, boom=boom: _with_func(parser, boom))
        assert expected in one_line_error(capsys, ["prepare", "table", str(tmp_path / "t.csv"), "--out",
                                                   str(tmp_path / "m.jsonl")])
    monkeypatch.undo()

    def bug(args):
        raise KeyError("a bug")
    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: _with_func(parser, bug))
    with pytest.raises(KeyError):  # a bug keeps its traceback
        cli.main(["prepare", "table", str(tmp_path / "t.csv"), "--out", str(tmp_path / "m.jsonl")])


def _with_func(parser, func):
    """``parser`` whose subcommands all run ``func``."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                sub.set_defaults(func=func)
    return parser


def test_a_damaged_store_index_is_set_aside_and_rebuilt(tmp_path):
    # reliability review N10c: a traceback ending in sqlite3.DatabaseError
    import numpy as np

    from sermo.features import FeatureStore

    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "content.sqlite").write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.warns(UserWarning, match="content.sqlite: damaged .* kept as content.sqlite.damaged"):
        store = FeatureStore(tmp_path / "store")
    assert (tmp_path / "store" / "content.sqlite.damaged").is_file()
    assert store._db.execute("SELECT count(*) FROM audio").fetchone() == (0,)
