"""``sermo export`` and the torch-free runtime: the exported model predicts what the torch
Predictor predicts, in a process that cannot import torch."""

from __future__ import annotations

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
    folder, files, long = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    p = OnnxPredictor(folder)
    out = {"files": [r.to_dict() for r in p.predict_files(files, batch_size=4)],
           "long": p.predict_file(long).to_dict(),
           "segments": [r.to_dict() for r in Segmenter(max_seconds=4).predict_file(p, long).segments],
           "torch_loaded": "torch" in sys.modules}
    print(json.dumps(out))
""")


def _outputs(pred: dict) -> np.ndarray:
    """A prediction's A/V/D (on its scale) and class probabilities, as one vector."""
    dims = [pred[d] for d in ("arousal", "valence", "dominance") if pred.get(d) is not None]
    return np.array(dims + [v for _, v in sorted((pred.get("categories") or {}).items())])


@pytest.fixture(scope="module")
def exported(baselines_run, tmp_path_factory):
    return export_bundle(baselines_run / "bundles" / "audio", tmp_path_factory.mktemp("export") / "audio")


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
    proc = subprocess.run([sys.executable, "-c", NO_TORCH, str(exported), json.dumps(files), str(long)],
                          capture_output=True, text=True, cwd=REPO, timeout=600,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    onnx = json.loads(proc.stdout.strip().splitlines()[-1])
    assert onnx["torch_loaded"] is False

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


def test_rows_that_cannot_export_are_refused_by_name_and_nothing_is_overwritten(baselines_run, tmp_path, capsys):
    from sermo.cli import main

    with pytest.raises(ExportError, match="cannot export row 'text' of baselines: it reads text"):
        export_bundle(baselines_run / "bundles" / "text", tmp_path / "t")
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
