"""The run plan (sizes before anything runs), live features, and what a run extracts."""

import json

import pytest

from sermo.cli import main
from sermo.features import FeatureStore
from sermo.training import plan as plan_mod
from sermo.training.plan import PlanError
from sermo.training.runner import plan_system, run_system
from tests.conftest import small_iemocap, tiny_speech_model


def test_the_paper_plan_sizes_every_encoder_without_weights(iemocap_synth, tmp_path, capsys):
    assert main(["run", "cross_representation", "--profile", "paper", "--corpus", f"iemocap={iemocap_synth}",
                 "--plan", "--store", str(tmp_path / "store")]) == 0
    table = capsys.readouterr().out
    # each encoder's line names the rows that read it
    assert "| wav2vec2-large | speech_small, speech_large | 25 x 1024 |" in table and "fits" in table
    assert "| resemblyzer | speech_small (speaker embeddings), speech_large (speaker embeddings)" in table
    assert not (tmp_path / "store" / "content.sqlite").exists() or not any((tmp_path / "store").glob("*/identity.json"))
    plan = plan_system("cross_representation", [("iemocap", iemocap_synth)], profile="paper")
    w2v = next(e for e in plan.entries if e.encoder == "wav2vec2-large")
    # iemocap-4 only: utterances without one of the four classes are not read (nor extracted)
    df = __import__("sermo.data.corpora", fromlist=["prepare"]).prepare("iemocap", iemocap_synth).df
    four = df["category"].isin(["neu", "hap", "exc", "ang", "sad"]).sum()
    assert w2v.utterances == four < len(df)
    seconds = df.loc[df["category"].isin(["neu", "hap", "exc", "ang", "sad"]), "duration"]
    assert w2v.bytes == pytest.approx((seconds * 50).apply(__import__("math").ceil).sum() * 25 * 1024 * 2, rel=0.01)
    resemblyzer = next(e for e in plan.entries if e.encoder == "resemblyzer")
    assert resemblyzer.utterances == len(df)  # speaker embeddings use every utterance of a speaker


def test_auto_mode_computes_the_largest_encoders_live_and_stored_mode_stops_before_running(
        iemocap_synth, tmp_path, monkeypatch):
    monkeypatch.setattr(plan_mod, "free_space", lambda root: 300_000_000)  # a 300 MB disk
    plan = plan_system("cross_representation", [("iemocap", iemocap_synth)], profile="paper")
    modes = {e.encoder: e.mode for e in plan.entries}
    assert modes["wav2vec2-large"] == "live" and modes["logmel"] == "stored" and plan.fits()
    w2v = next(e for e in plan.entries if e.encoder == "wav2vec2-large")
    assert w2v.passes_per_epoch > 0 and "0 (live)" in plan.table()
    with pytest.raises(PlanError, match="would not fit") as err:
        run_system("cross_representation", [("iemocap", iemocap_synth)], profile="paper", out=tmp_path / "run",
                   store=FeatureStore(tmp_path / "s"), overrides=["data.feature_mode=stored"], progress=False)
    assert "feature_mode=auto" in str(err.value) and "| wav2vec2-large |" in str(err.value)
    assert not (tmp_path / "run").exists()  # nothing ran


@pytest.mark.slow
def test_max_folds_runs_the_protocols_first_folds_and_says_so(iemocap_synth):
    from sermo.training.runner import prepare_run

    prep = prepare_run("baselines", [("iemocap", iemocap_synth)], overrides=["data.max_folds=2"], transcribe=False,
                       progress=False, profile="demo")
    assert [f.name for f in prep.protocol.folds] == ["fold1", "fold2"]
    assert prep.protocol.description.endswith("(of its 5 folds, folds 1, 2 ran)")
    assert len(prepare_run("baselines", [("iemocap", iemocap_synth)], overrides=["data.max_folds=9"],
                           transcribe=False, progress=False, profile="demo").protocol.folds) == 5


def test_stored_and_live_features_give_identical_metrics(iemocap_synth, tmp_path):
    small = small_iemocap(iemocap_synth, tmp_path / "small.parquet", 5)
    speech = tiny_speech_model(tmp_path / "hubert")
    results = {}
    for mode in ("stored", "live"):
        out = run_system("baselines", [("iemocap", small)], folds=[1], out=tmp_path / mode, progress=False,
                         store=FeatureStore(tmp_path / f"store-{mode}"), overrides=[
                             f"data.feature_mode={mode}", f"data.audio_encoder={speech}", "data.audio_layers=[-1]",
                             "data.frame_pool=2",  # live frames pooled as the stored ones are
                             "model.rows=[audio]", "train.epochs=2", "train.batch_size=8", "model.hidden=16",
                             "model.embedding=8"], profile="demo")
        results[mode] = json.loads((out / "results.json").read_text())["rows"][0]["mean"]
        assert f"| {mode} |" in (out / "PLAN.md").read_text()
    # the tiny HuBERT has no attention mask: its utterances are padded to 0.25 s buckets either way,
    # so stored and live features agree but for the float rounding of other batch sizes
    assert results["stored"].keys() == results["live"].keys()
    for k, v in results["stored"].items():
        assert abs(v - results["live"][k]) < 2e-3, k
    # live: the encoder's features were never written to the store
    assert not list((tmp_path / "store-live").glob("*/identity.json"))
    assert list((tmp_path / "store-stored").glob("*/identity.json"))


def test_reference_sized_iemocap_plans_every_paper_profile_within_64_gb(tmp_path, monkeypatch):
    from sermo.bench.plan import BUDGET, reference_manifest

    manifest = reference_manifest("iemocap")
    assert len(manifest) == 10_039 and manifest.df["duration"].sum() / 3600 == pytest.approx(12.46)
    path = manifest.save(tmp_path / "iemocap.parquet")
    monkeypatch.setattr(plan_mod, "free_space", lambda root: int(BUDGET))
    hier = plan_system("hierarchical", [("iemocap", path)], profile="paper")
    (entry,) = hier.entries
    # every hidden state of HuBERT large over the 5.5 h of the five classes the paper keeps (excited
    # is not happy there): ~51 GB, which the disk's 64 GB holds
    assert entry.utterances == 4492 and entry.hours == pytest.approx(5.50, abs=0.01)
    assert entry.shape == (25, 1024) and entry.bytes > 50e9 and entry.mode == "stored" and hier.fits()
    ts = plan_system("teacher_student", [("iemocap", path)], profile="paper")
    assert all(e.mode == "stored" for e in ts.entries) and ts.stored_bytes < 5e9


def test_plan_gives_gpu_hours_stored_and_live_with_the_epochs_a_system_derives(tmp_path, monkeypatch):
    from sermo.bench.plan import BUDGET, reference_manifest
    from sermo.training import cost

    monkeypatch.setenv("SERMO_MODELS", str(tmp_path / "models"))  # nothing measured here
    path = reference_manifest("iemocap").save(tmp_path / "iemocap.parquet")
    monkeypatch.setattr(plan_mod, "free_space", lambda root: int(BUDGET))
    plan = plan_system("cross_representation", [("iemocap", path)], profile="paper")
    speech = next(e for e in plan.entries if e.encoder == "wav2vec2-large")
    # the speech rows train for the paper's 1M iterations of batch 2, not train.epochs (450)
    assert speech.epochs > 450 and speech.mode == "live"
    once, live = speech.device_hours(plan.flop_per_second, plan.folds)
    # one pass over the four classes' 6.8 h against hundreds of epochs over the training sessions
    per_pass = cost.hours(speech.hours * 3600 * cost.flop_per_second_of_audio("wav2vec2-large", (25, 1024, 50.0)), 25e12)
    assert speech.hours == pytest.approx(6.8, abs=0.1) and once == pytest.approx(per_pass)
    # live: every epoch reads the training and validation sessions (four of five) once per reader
    assert speech.seconds_per_epoch == pytest.approx(speech.readers * 0.8 * speech.hours * 3600, rel=0.1)
    assert live == pytest.approx(once * speech.seconds_per_epoch / (speech.hours * 3600) * speech.epochs * plan.folds)
    assert live > 100 * once
    assert plan.throughput_source.startswith("documented") and plan.flop_per_second == 25e12
    table = plan.table()
    assert "GPU h stored (once)" in table and "GPU h live (run)" in table and "GPU h live (fold)" in table
    assert "Encoder time as planned" in table and "would be stored, saving about" in table
    # a throughput measured here replaces the documented one (for this machine's device kind)
    cost.record_throughput(1e12, device="cpu")
    cpu = plan_system("cross_representation", [("iemocap", path)], profile="paper", accelerator="cpu")
    assert cpu.flop_per_second == 1e12 and "measured" in cpu.throughput_source and "CPU h" in cpu.table()


def test_encoder_operations_per_second_of_audio():
    from sermo.training.cost import flop_per_second_of_audio

    base = flop_per_second_of_audio("hubert-base", (13, 768, 50.0))
    large = flop_per_second_of_audio("wav2vec2-large", (25, 1024, 50.0))
    # 12 layers of 768 at 50 frames a second: 2 x 12 x 768^2 x 12 x 50 + the CNN's 4.9 GFLOP
    assert base == pytest.approx(2 * 12 * 768**2 * 12 * 50 + 4.9e9)
    assert 2.3 < large / base < 2.8
    assert flop_per_second_of_audio("bert-base", (13, 768, None)) is None
    assert flop_per_second_of_audio("egemaps", (1, 25, 100.0)) is None
