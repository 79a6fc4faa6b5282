"""Run folders under changed settings, tampering and interruption (sermo.training.runner's folder
record, sermo.training.resume)."""

import json
import pickle

import numpy as np
import pandas as pd
import pytest

from sermo.cli import main
from sermo.data.manifest import Manifest
from sermo.features import FeatureStore
from sermo.training.folder import RunFolderChanged
from sermo.training.runner import run_system
from sermo.training.task import CheckpointError, SystemTask
from tests.conftest import small_iemocap

QUICK = ["train.epochs=2", "train.batch_size=8", "model.hidden=16", "model.embedding=8", "model.rows=[audio]",
         "data.audio_encoder=logmel",
         "data.text_encoder=null"]


@pytest.fixture(scope="module")
def small(iemocap_synth, tmp_path_factory):
    return small_iemocap(iemocap_synth, tmp_path_factory.mktemp("small") / "small.parquet", 4)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return FeatureStore(tmp_path_factory.mktemp("store"))


def run(small, store, out, overrides=QUICK, **kw):
    return run_system("baselines", [("iemocap", small)], folds=[1], out=out, overrides=list(overrides), store=store,
                      progress=False, **{"profile": "demo", **kw})


class Interrupt(BaseException):
    """Stands in for a kill: not an Exception, so nothing on the way catches it."""


def interrupted_at(monkeypatch, epoch: int):
    original = SystemTask.on_train_epoch_end

    def die(self):
        if self.current_epoch == epoch:
            raise Interrupt
        return original(self)

    monkeypatch.setattr(SystemTask, "on_train_epoch_end", die, raising=False)


def test_a_rerun_with_other_settings_refuses_naming_what_changed(small, store, tmp_path, capsys):
    out = run(small, store, tmp_path / "run")
    made = json.loads((out / "made_with.json").read_text())
    assert made["settings"]["train.epochs"] == 2 and len(made["corpus_hash"]) == 16
    before = (out / "config.yaml").read_text()
    changed = [o for o in QUICK if not o.startswith(("train.epochs", "model.hidden"))] + ["train.epochs=3",
                                                                                           "model.hidden=32"]
    with pytest.raises(RunFolderChanged, match=r"train\.epochs: 2 -> 3.*model\.hidden: 16 -> 32|"
                                                r"model\.hidden: 16 -> 32.*train\.epochs: 2 -> 3"):
        run(small, store, out, changed)
    assert (out / "config.yaml").read_text() == before  # nothing rewritten to claim the new settings
    # the command line: one line, exit 2
    argv = ["run", "baselines", "--profile", "demo", "--corpus", f"iemocap={small}", "--folds", "1", "--out", str(out), "--store",
            str(store.root), "--quiet"] + [a for o in changed for a in ("--set", o)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sermo: error:") and "--fresh" in err[0]
    # the same settings resume (nothing to do: the fold is finished); --fresh starts over with the new ones
    run(small, store, out)
    again = run(small, store, out, changed, fresh=True)
    assert "epochs: 3" in (again / "config.yaml").read_text()
    assert json.loads((again / "fold1" / "audio" / "DONE").read_text())["epochs"] == 3


def test_fresh_never_empties_a_folder_sermo_did_not_make(small, store, tmp_path):
    mine = tmp_path / "thesis"
    mine.mkdir()
    (mine / "chapter1.tex").write_text("precious")
    with pytest.raises(Exception, match="sermo did not write"):
        run(small, store, mine, fresh=True)
    assert (mine / "chapter1.tex").read_text() == "precious"
    with pytest.raises(Exception, match=r"holds files sermo did not write \(chapter1.tex\)"):
        run(small, store, mine)  # nor does a run write into it (reliability review N5e)
    # a project folder whose config.yaml is the user's, not a run's (N5d)
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "config.yaml").write_text("name: my-project\n")
    (project / "src" / "main.py").write_text("print(1)")
    for fresh in (False, True):
        with pytest.raises(Exception, match="sermo did not write"):
            run(small, store, project, fresh=fresh)
    assert (project / "src" / "main.py").is_file() and (project / "config.yaml").read_text() == "name: my-project\n"
    # a user's file put into a real run folder survives --fresh: it is refused, naming the file
    out = run(small, store, tmp_path / "run")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(Exception, match=r"--fresh would delete notes.txt"):
        run(small, store, out, fresh=True)
    assert (out / "notes.txt").read_text() == "mine" and (out / "results.json").is_file()
    (out / "notes.txt").unlink()
    assert (run(small, store, out, fresh=True) / "results.json").is_file()
    (tmp_path / "file").write_text("x")
    with pytest.raises(Exception, match="is a file"):
        run(small, store, tmp_path / "file")


class Payload:
    """Unpickling this creates a file: the proof that a checkpoint executed code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickle_placed_as_best_ckpt_is_refused_not_run(small, store, tmp_path):
    out = run(small, store, tmp_path / "run")
    marker = tmp_path / "pwned"
    (out / "fold1" / "rows.json").unlink()  # the fold is evaluated again, from its checkpoint
    with open(out / "fold1" / "audio" / "best.ckpt", "wb") as f:
        pickle.dump({"state_dict": Payload(marker)}, f)
    with pytest.raises(CheckpointError, match="best.ckpt: not a readable sermo checkpoint"):
        run(small, store, out)
    assert not marker.exists()


def test_a_damaged_last_ckpt_is_set_aside_and_the_stage_starts_over(small, store, tmp_path, monkeypatch):
    out = tmp_path / "run"
    interrupted_at(monkeypatch, 1)
    with pytest.raises(Interrupt):
        run(small, store, out)
    monkeypatch.undo()
    last = out / "fold1" / "audio" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:100])  # truncated mid-write
    with pytest.warns(UserWarning, match="last.ckpt: not a readable sermo checkpoint.*starts over"):
        run(small, store, out)
    assert (out / "fold1" / "audio" / "last.ckpt.damaged").is_file()
    assert json.loads((out / "fold1" / "audio" / "DONE").read_text())["epochs"] == 2


def test_a_resumed_stage_keeps_its_epochs_before_the_kill_and_done_names_the_selected_epoch(small, store, tmp_path,
                                                                                           monkeypatch):
    quick = [o for o in QUICK if not o.startswith("train.epochs")] + ["train.epochs=4", "train.select=metrics"]
    clean = run(small, store, tmp_path / "clean", quick)
    interrupted_at(monkeypatch, 2)
    with pytest.raises(Interrupt):
        run(small, store, tmp_path / "killed", quick)
    monkeypatch.undo()
    resumed = run(small, store, tmp_path / "killed", quick)
    for folder in (clean, resumed):
        metrics = pd.read_csv(folder / "fold1" / "audio" / "metrics.csv")
        assert sorted(metrics["epoch"].dropna().unique().astype(int)) == [0, 1, 2, 3]
        val = metrics.dropna(subset=["val_select"])
        assert sorted(val["epoch"].astype(int)) == [0, 1, 2, 3]  # one validation row per epoch, none lost
        done = json.loads((folder / "fold1" / "audio" / "DONE").read_text())
        # the kept checkpoint is chosen by val_select; DONE names that epoch, not the lowest val_loss
        assert done["selected_by"] == "val_select"
        assert done["best_epoch"] == int(val.loc[val["val_select"].idxmin(), "epoch"])
        assert done["best_score"] == pytest.approx(float(val["val_select"].min()), rel=1e-5)


def test_duplicate_ids_are_skipped_with_a_warning_not_a_crash(small, store, tmp_path):
    m = Manifest.load(small)
    dup = pd.concat([m.df, m.df.iloc[[0]]], ignore_index=True)
    path = tmp_path / "dup.parquet"
    Manifest(dup).save(path)
    with pytest.warns(UserWarning, match=rf"1 utterance id\(s\) appear more than once \({m.df['id'].iloc[0]}\)"):
        out = run_system("baselines", [("iemocap", path)], folds=[1], out=tmp_path / "run", overrides=QUICK,
                         store=store, progress=False, profile="demo")
    ids = pd.read_parquet(out / "predictions" / "audio.fold1.test.parquet")["id"]
    assert m.df["id"].iloc[0] not in set(ids) and ids.is_unique


def test_a_same_size_corrupted_store_entry_is_recomputed_before_training(small, store, tmp_path):
    from sermo.encoders import get_encoder
    from sermo.features.extraction import feature_keys

    run(small, store, tmp_path / "first")
    identity = get_encoder("logmel").identity
    key = next(iter(feature_keys(Manifest.load(small), "audio", store).values()))
    npy, _ = store._paths(identity, key)
    data = bytearray(npy.read_bytes())
    data[-64:] = np.full(16, np.nan, dtype=np.float32).tobytes()  # the same size, other (non-finite) values
    npy.write_bytes(bytes(data))
    assert not store.verify(identity, key)
    out = run(small, store, tmp_path / "second")
    assert store.verify(identity, key)
    assert json.loads((out / "results.json").read_text())["rows"][0]["mean"]


KILLABLE = """
import sys, time
from sermo.training.task import SystemTask
original = SystemTask.on_train_epoch_end
def slow(self):  # time to be killed between and inside epochs
    time.sleep(0.4)
    return original(self)
SystemTask.on_train_epoch_end = slow
from sermo.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_run_killed_with_sigkill_mid_training_resumes_to_the_same_metrics(small, store, tmp_path):
    # reliability review S26: a real kill -9 (no exception handler, no flush), then the same command
    import os
    import signal
    import subprocess
    import sys
    import time

    quick = [o for o in QUICK if not o.startswith("train.epochs")] + ["train.epochs=8"]
    clean = run(small, store, tmp_path / "clean", quick)
    out = tmp_path / "killed"
    argv = ["run", "baselines", "--profile", "demo", "--corpus", f"iemocap={small}", "--folds", "1", "--out", str(out), "--store",
            str(store.root), "--quiet"] + [a for o in quick for a in ("--set", o)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-c", KILLABLE, *argv], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    metrics, deadline = out / "fold1" / "audio" / "metrics.csv", time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None:
            try:
                validated = pd.read_csv(metrics)["val_loss"].notna().sum()
            except (OSError, KeyError, pd.errors.EmptyDataError, pd.errors.ParserError):
                validated = 0
            if validated >= 3:
                time.sleep(0.5)  # into the next epoch
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert not (out / "fold1" / "audio" / "DONE").exists() and (out / "fold1" / "audio" / "last.ckpt").is_file()
    resumed = run(small, store, out, quick)
    a = json.loads((clean / "results.json").read_text())["rows"][0]
    b = json.loads((resumed / "results.json").read_text())["rows"][0]
    assert a["mean"] == b["mean"]
    done = [json.loads((r / "fold1" / "audio" / "DONE").read_text()) for r in (clean, resumed)]
    assert done[0] == done[1]
