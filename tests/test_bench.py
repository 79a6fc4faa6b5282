from sermo.bench.extract import run_extract_bench


def test_bench_extract_writes_its_report(tmp_path, iemocap_synth, monkeypatch):
    import sermo.bench.extract as bench

    # a tiny speech model stands in for the HuBERT-base-sized one to keep the test fast
    from tests.conftest import tiny_speech_model

    monkeypatch.setattr(bench, "hubert_base_sized", lambda folder, seed=0: tiny_speech_model(folder))
    report = run_extract_bench(tmp_path / "out", utterances=8, corpus=iemocap_synth, encoders=("logmel",))
    text = report.read_text()
    assert "| logmel |" in text and "hubert-base-sized" in text and "plain per-utterance" in text
    import json

    facts = json.loads((tmp_path / "out" / "extract.json").read_text())
    assert facts["utterances"] == 8 and facts["plain_loop_s"] > 0 and facts["sermo_s"] > 0


def test_bench_predict_measures_latency_throughput_and_the_service(tmp_path, monkeypatch):
    import json

    import sermo.bench.extract as bench
    from sermo.bench.predict import run_predict_bench
    from tests.conftest import tiny_speech_model

    monkeypatch.setattr(bench, "hubert_base_sized", lambda folder, seed=0: tiny_speech_model(folder))
    report = run_predict_bench(tmp_path / "out", repeats=2, batch_files=2)
    assert "Prediction / encoder forward" in report.read_text()
    facts = json.loads((tmp_path / "out" / "predict.json").read_text())
    assert facts["ratio_p50"] > 0 and facts["service_rps"] > 0 and facts["throughput_files_per_s"] > 0
    assert [r["measure"].split(",")[0] for r in facts["rows"]] == ["encoder forward", "Predictor.predict_signal",
                                                                    "HTTP /predict"]
    # the same files through the torch and the exported paths, each timed, their outputs compared
    onnx = facts["onnx"]
    assert [r["path"] for r in onnx["rows"]] == ["torch Predictor", "ONNX runtime (no torch)"]
    assert all(r["files/s"] > 0 and r["real-time factor"] > 0 for r in onnx["rows"])
    assert onnx["folder_mb"] > 0 and onnx["max_difference"] < 1e-4 and "ONNX model" in report.read_text()
