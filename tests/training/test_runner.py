"""The engine end to end on the built-in corpus: files, resume, DDP."""

import json

import pytest

from sermo.features import FeatureStore
from sermo.data.bundle import read_bundle
from sermo.training.runner import run_system
from sermo.training.task import SystemTask

FAST = ["train.epochs=3", "train.batch_size=16", "model.hidden=32", "model.embedding=16"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return FeatureStore(tmp_path_factory.mktemp("store"))


def test_baselines_run_writes_everything(iemocap_synth, store, tmp_path):
    out = run_system("baselines", [("iemocap", iemocap_synth)], folds=[1], out=tmp_path / "run", overrides=FAST,
                     store=store, progress=False, profile="demo")
    results = json.loads((out / "results.json").read_text())
    assert {k: results[k] for k in ("system", "corpus", "protocol", "profile", "label_space")} == {
        "system": "baselines", "corpus": "iemocap", "protocol": "iemocap-loso", "profile": "demo",
        "label_space": "iemocap-4"}
    rows = {r["name"]: r for r in results["rows"]}
    assert list(rows) == ["linear", "audio", "text", "fusion"]
    # the linear probe, fitted on pooled frozen features and tuned on validation, beside the neural rows
    assert rows["linear"]["modalities"] == ["audio"] and rows["linear"]["info"][0]["linear_c"] > 0
    assert "| linear | audio |" in (out / "REPORT.md").read_text()
    for r in rows.values():
        assert {"ccc_arousal", "ccc_valence", "ccc_dominance", "ccc_mean", "pearson_valence", "ua", "wa",
                "macro_f1", "weighted_f1"} <= set(r["mean"])
        assert r["folds"][0]["fold"] == "fold1" and r["trainable_params"] > 0
        assert all(v is None for v in r["std"].values())  # one fold: no spread, not a spread of 0
    assert rows["fusion"]["modalities"] == ["audio", "text"]
    report = (out / "REPORT.md").read_text()
    assert "built-in synthetic corpus" in report and "| fusion | audio+text |" in report
    assert "test Ses01, validation Ses02" in report and "UA: unweighted accuracy" in report
    assert "Encoders: `whisper-tiny.en`, `minilm`. Transcripts: oracle." in report
    assert "no spread over folds" in report and " ± " not in report.split("## Results")[1].split("##")[0]
    # each neural row read against the probe, in UA and in CCC
    assert "| audio vs linear | ua |" in report and "| fusion vs audio | ccc_valence |" in report
    for name in ("confusion_audio.png", "scatter_text.png", "curves_fusion.png"):
        assert (out / "plots" / name).stat().st_size > 1000
    pred = out / "predictions" / "fusion.fold1.test.parquet"
    import pandas as pd

    df = pd.read_parquet(pred)
    assert len(df) == 40 and {"valence_true", "valence_pred", "p_neutral"} <= set(df.columns)
    assert rows["fusion"]["utterances"] == 40 and "| test utts |" in report
    assert df["valence_pred"].between(-1, 7).all()  # on the corpus scale, not [0, 1]
    assert set(df["class_pred"]) <= {"neutral", "happy", "angry", "sad"}
    assert (df["class_true"].isna() == (df["category_true"] < 0)).all()
    cfg, weights = read_bundle(out / "bundles" / "fusion")
    assert cfg.system == "baselines" and cfg.row == "fusion" and cfg.label_scale == [1.0, 5.0]
    assert cfg.label_space["classes"] == ["neutral", "happy", "angry", "sad"] and weights
    assert cfg.spec.inputs.audio.encoder == "whisper-tiny.en" and cfg.spec.inputs.text.encoder == "minilm"
    assert (out / "config.yaml").is_file() and json.loads((out / "protocol.json").read_text())["folds"]


class Interrupt(BaseException):
    """Stands in for a kill: not an Exception, so nothing on the way catches it."""


def test_killed_run_resumes_to_the_same_metrics(iemocap_synth, store, tmp_path, monkeypatch):
    overrides = FAST + ["model.rows=[audio]", "train.epochs=4"]
    clean = run_system("baselines", [("iemocap", iemocap_synth)], folds=[1], out=tmp_path / "clean",
                       overrides=overrides, store=store, progress=False, profile="demo")
    original = SystemTask.on_train_epoch_end

    def die_at_epoch_two(self):
        if self.current_epoch == 2:
            raise Interrupt
        return original(self)

    monkeypatch.setattr(SystemTask, "on_train_epoch_end", die_at_epoch_two, raising=False)
    with pytest.raises(Interrupt):
        run_system("baselines", [("iemocap", iemocap_synth)], folds=[1], out=tmp_path / "killed",
                   overrides=overrides, store=store, progress=False, profile="demo")
    assert (tmp_path / "killed" / "fold1" / "audio" / "last.ckpt").is_file()
    assert not (tmp_path / "killed" / "fold1" / "audio" / "DONE").exists()
    monkeypatch.undo()
    resumed = run_system("baselines", [("iemocap", iemocap_synth)], folds=[1], out=tmp_path / "killed",
                         overrides=overrides, store=store, progress=False, profile="demo")
    a = json.loads((clean / "results.json").read_text())["rows"][0]["mean"]
    b = json.loads((resumed / "results.json").read_text())["rows"][0]["mean"]
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == pytest.approx(b[k], abs=1e-6), k


def test_finished_folds_are_not_trained_again(iemocap_synth, store, tmp_path, monkeypatch):
    overrides = FAST + ["model.rows=[text]", "train.epochs=1"]
    run_system("baselines", [("iemocap", iemocap_synth)], folds=[1], out=tmp_path / "r", overrides=overrides,
               store=store, progress=False, profile="demo")
    monkeypatch.setattr(SystemTask, "training_step", lambda *a: (_ for _ in ()).throw(AssertionError("trained")))
    out = run_system("baselines", [("iemocap", iemocap_synth)], folds=[1], out=tmp_path / "r", overrides=overrides,
                     store=store, progress=False, profile="demo")
    results = json.loads((out / "results.json").read_text())
    assert results["rows"][0]["name"] == "text"
    # the run time counts the fold the first session trained, not only the second session's minutes
    fold = json.loads((out / "fold1" / "seconds.json").read_text())["seconds"]
    assert results["seconds_earlier"] == fold > 0
    assert results["seconds"] == pytest.approx(results["seconds_this_session"] + fold, abs=0.11)
    assert "in the session that finished it" in (out / "REPORT.md").read_text()


def test_gru_head_and_classification_only(iemocap_synth, store, tmp_path):
    out = run_system("baselines", [("iemocap", iemocap_synth)], folds=[2], out=tmp_path / "gru", store=store,
                     overrides=FAST + ["model.head=gru", "model.rows=[audio]", "train.epochs=1",
                                       "model.tasks=[category]"], progress=False, profile="demo")
    row = json.loads((out / "results.json").read_text())["rows"][0]
    assert set(row["mean"]) == {"ua", "wa", "macro_f1", "weighted_f1"}  # only what the row predicts
    assert row["folds"][0]["fold"] == "fold2"


def test_fusion_from_frozen_unimodal_branches_with_auxiliary_heads(iemocap_synth, store, tmp_path):
    out = run_system("baselines", [("iemocap", iemocap_synth)], folds=[1], out=tmp_path / "fz", store=store,
                     overrides=FAST + ["train.epochs=1", "model.fusion_init=unimodal", "model.freeze_branches=true",
                                       "model.aux_weight=0.5"], progress=False, profile="demo")
    rows = {r["name"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    # frozen branches: only the joint and auxiliary heads train
    assert rows["fusion"]["trainable_params"] < rows["audio"]["trainable_params"] + rows["text"]["trainable_params"]
    assert "ccc_valence" in rows["fusion"]["mean"]
    with pytest.raises(ValueError, match="needs the rows"):
        run_system("baselines", [("iemocap", iemocap_synth)], folds=[1], out=tmp_path / "bad", store=store,
                   overrides=FAST + ["model.rows=[fusion]", "model.fusion_init=unimodal"], progress=False, profile="demo")


def test_loader_workers_give_the_same_run(iemocap_synth, store, tmp_path):
    """Batches prepared by two worker processes (as GPU runs do by default) train the same model as
    batches prepared in the training process."""
    from sermo.training.datamodule import loader, loader_workers
    from sermo.features.pipeline import UtteranceDataset

    means = {}
    for workers in (0, 2):
        out = run_system("baselines", [("iemocap", iemocap_synth)], folds=[1], out=tmp_path / f"w{workers}",
                         store=store, progress=False,
                         overrides=FAST + ["model.rows=[audio]", "train.epochs=2", f"data.loader_workers={workers}"], profile="demo")
        means[workers] = json.loads((out / "results.json").read_text())["rows"][0]["mean"]
    assert means[0] == means[2]
    # by default: none on the CPU, some on a GPU, none for live features there
    ds = UtteranceDataset(["a"])
    assert loader_workers(None, ds, __import__("torch").device("cpu")) == 0
    assert loader_workers(3, ds, __import__("torch").device("cpu")) == 3
    assert loader_workers(None, ds, __import__("torch").device("cuda"), devices=1) >= 1
    assert loader(ds, 4, shuffle=False, workers=0).num_workers == 0
