"""``sermo export`` and the torch-free runtime: the exported model predicts what the torch
Predictor predicts, in a process that cannot import torch."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sermo.data.audio import load_audio
from sermo.data.corpora import prepare
from sermo.serving import Predictor
from sermo.serving.core import ExportError
from sermo.serving.export import export_bundle

REPO = Path(__file__).resolve().parents[2]

# runs in a fresh interpreter where importing torch fails: the runtime must not need it
NO_TORCH = textwrap.dedent("""
    import json, sys
    class NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError("torch is not available in this process")
    sys.meta_path.insert(0, NoTorch())
    from sermo.serving import Segmenter
    from sermo.serving.runtime import OnnxPredictor
    folder, files, transcripts, long = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
    p = OnnxPredictor(folder)
    out = {"files": [r.to_dict() for r in p.predict_files(files, transcripts, batch_size=4)]}
    if long:
        out["long"] = p.predict_file(long).to_dict()
        out["segments"] = [r.to_dict() for r in Segmenter(max_seconds=4).predict_file(p, long).segments]
    out["torch_loaded"] = "torch" in sys.modules
    print(json.dumps(out))
""")


def _outputs(pred: dict) -> np.ndarray:
    """A prediction's A/V/D (on its scale) and class probabilities, as one vector."""
    dims = [pred[d] for d in ("arousal", "valence", "dominance") if pred.get(d) is not None]
    return np.array(dims + [v for _, v in sorted((pred.get("categories") or {}).items())])


@pytest.fixture(scope="module")
def exported(baselines_run, tmp_path_factory):
    return export_bundle(baselines_run / "bundles" / "audio", tmp_path_factory.mktemp("export") / "audio")


def run_without_torch(folder: Path, files: list[str], transcripts: list[str] | None = None, long: Path | None = None):
    """The runtime's predictions in a fresh interpreter that cannot import torch."""
    proc = subprocess.run([sys.executable, "-c", NO_TORCH, str(folder), json.dumps(files), json.dumps(transcripts),
                           str(long or "")], capture_output=True, text=True, cwd=REPO, timeout=600,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["torch_loaded"] is False
    return out


def test_the_exported_audio_bundle_predicts_the_built_in_corpus_as_torch_does_without_torch(
        exported, baselines_run, iemocap_synth, tmp_path):
    df = prepare("iemocap", iemocap_synth).df
    files = [str(p) for p in df["audio"].iloc[::5]]  # 40 utterances of the built-in corpus
    # a 70 s recording: Whisper's 30 s windows joined, and segments through the Segmenter
    parts = []
    for path in df["audio"].iloc[:40]:
        parts += [load_audio(path), np.zeros(8000, dtype=np.float32)]
    wave = np.concatenate(parts)[: 70 * 16000]
    long = tmp_path / "long.wav"
    sf.write(long, wave, 16000)
    onnx = run_without_torch(exported, files, long=long)

    torch_path = Predictor.from_pretrained(baselines_run / "bundles" / "audio", accelerator="cpu")
    from sermo.serving import Segmenter

    expected = [r.to_dict() for r in torch_path.predict_files(files, batch_size=4)]
    expected_long = torch_path.predict_file(long).to_dict()
    expected_segments = [r.to_dict() for r in Segmenter(max_seconds=4).predict_file(torch_path, long).segments]
    pairs = list(zip(expected, onnx["files"])) + [(expected_long, onnx["long"])] + \
        list(zip(expected_segments, onnx["segments"]))
    assert len(onnx["files"]) == len(files) and len(onnx["segments"]) == len(expected_segments) >= 4
    worst = max(float(np.abs(_outputs(a) - _outputs(b)).max()) for a, b in pairs)
    assert worst < 1e-4, f"largest difference between the torch and ONNX outputs: {worst:.2e}"
    assert all(a["category"] == b["category"] and a["source"] == b["source"] and a["start"] == b["start"]
               for a, b in pairs)
    meta = json.loads((exported / "sermo.json").read_text())
    assert meta["sample_rate"] == 16000 and meta["scale"] == [1.0, 5.0] and meta["trained_on"]["builtin"]
    assert meta["classes"] == list(torch_path.space.classes) and meta["encoder"]["kind"] == "whisper"


@pytest.mark.parametrize("row", ["fusion", pytest.param("text", marks=pytest.mark.long)])
def test_rows_that_read_the_transcript_export_their_text_side_and_match(row, baselines_run, iemocap_synth, tmp_path):
    """The text encoder's graph and its own tokenizer ship beside the head: given the transcript,
    the exported fusion and text rows predict what the torch Predictor does, without torch; with
    no transcript the runtime (which has no speech recogniser) says so."""
    from sermo.serving.runtime import OnnxPredictor

    df = prepare("iemocap", iemocap_synth).df.iloc[::10]  # 20 utterances with their transcripts
    files, texts = [str(p) for p in df["audio"]], [str(t) for t in df["transcript"]]
    folder = export_bundle(baselines_run / "bundles" / row, tmp_path / row)
    meta = json.loads((folder / "sermo.json").read_text())
    assert meta["text"]["name"] == "minilm" and (folder / "tokenizer.json").is_file()
    assert (meta["encoder"] is not None) == (row == "fusion")
    onnx = run_without_torch(folder, files, texts)
    expected = Predictor.from_pretrained(baselines_run / "bundles" / row, accelerator="cpu").predict_files(files, texts)
    worst = max(float(np.abs(_outputs(a.to_dict()) - _outputs(b)).max()) for a, b in zip(expected, onnx["files"]))
    assert worst < 1e-4, f"largest difference between the torch and ONNX outputs: {worst:.2e}"
    assert all(b["transcript"] == t and b["transcript_source"] == "given" for b, t in zip(onnx["files"], texts))
    with pytest.raises(ExportError, match="give each input's transcript"):
        OnnxPredictor(folder).predict_file(files[0])


# make test has the Whisper path above; the paper-path check (CI too) runs these as well
@pytest.mark.long
@pytest.mark.parametrize("encoder", ["logmel", "wav2vec2", "wav2vec2-mask"])
def test_log_mel_and_speech_ssl_rows_export_and_match(encoder, tmp_path):
    """The other feature kinds a row may read: log-mel, and a speech SSL model without an
    attention mask (its samples zero-padded to the quarter second, as its stored features were)
    and with one."""
    from sermo.bench.predict import _bundle
    from sermo.serving.runtime import OnnxPredictor
    from tests.conftest import tiny_speech_model

    folder = encoder if encoder == "logmel" else tiny_speech_model(tmp_path / "ssl", kind="wav2vec2",
                                                                  attention_mask=encoder.endswith("mask"))
    bundle = _bundle(tmp_path / "bundle", folder)
    torch_path, onnx = Predictor.from_pretrained(bundle, accelerator="cpu"), OnnxPredictor(export_bundle(bundle, tmp_path / "x"))
    rng = np.random.default_rng(0)
    for n in (4000, 7777, 33333):  # 0.25 s to 2 s, lengths off the quarter-second grid
        wave = (0.1 * rng.standard_normal(n)).astype(np.float32)
        a, b = torch_path.predict_signal(wave, 16000).to_dict(), onnx.predict_signal(wave, 16000).to_dict()
        assert np.abs(_outputs(a) - _outputs(b)).max() < 1e-4


def test_what_cannot_export_is_refused_with_the_reason_and_nothing_is_overwritten(baselines_run, tmp_path, capsys):
    from sermo.cli import main

    from sermo.serving.export import exportable

    predictor = Predictor.from_pretrained(baselines_run / "bundles" / "audio", accelerator="cpu")
    assert exportable(predictor) == ""
    predictor.inputs = dataclasses.replace(predictor.inputs, speaker=True)  # as cross_representation's rows read
    assert "speaker embedding" in exportable(predictor)
    with pytest.raises(ExportError, match="format 'tflite'"):
        export_bundle(baselines_run / "bundles" / "audio", tmp_path / "t", fmt="tflite")
    assert not (tmp_path / "t").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert main(["export", str(baselines_run / "bundles" / "audio"), "--out", str(mine)]) == 2
    assert "holds other files" in capsys.readouterr().err and (mine / "notes.txt").read_text() == "keep me"


def test_sermo_predict_runs_an_exported_folder(exported, iemocap_synth, capsys):
    from sermo.cli import main

    wav = sorted(iemocap_synth.rglob("*.wav"))[0]
    assert main(["predict", str(exported), str(wav), "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["predictions"][0]["source"] == str(wav) and 1.0 <= out["predictions"][0]["valence"] <= 5.0


def test_an_export_runs_its_graphs_before_it_is_kept(exported):
    """Every graph must load in onnxruntime and the head must give the model's outputs on an
    example; a head that does not (here: expected outputs it cannot give) is refused."""
    import onnxruntime as ort

    from sermo.serving.export import _check_runs

    head = ort.InferenceSession(str(exported / "head.onnx"), providers=["CPUExecutionProvider"])
    shapes = {i.name: i.shape for i in head.get_inputs()}
    layers, dim = shapes["audio"][1], shapes["audio"][3]
    example = {"audio": np.random.default_rng(0).standard_normal((1, layers, 20, dim)).astype(np.float32),
               "audio_mask": np.ones((1, 20), dtype=bool)}
    right = head.run(None, example)
    _check_runs(exported, example, right)  # its own outputs: accepted
    with pytest.raises(ExportError, match="differs from the model by"):
        _check_runs(exported, example, [r + 1e-2 for r in right])
