import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

import sermo
from sermo.data.audio import AudioError, load_audio
from sermo.data.corpora import prepare
from sermo.serving import BundleError, Prediction, Predictor, Segmenter


def test_fusion_bundle_reproduces_the_runs_own_predictions(baselines_run, iemocap_synth):
    preds = pd.read_parquet(baselines_run / "predictions" / "fusion.fold1.test.parquet")
    manifest = prepare("iemocap", iemocap_synth).df.set_index("id")
    predictor = sermo.Predictor.from_pretrained(baselines_run / "bundles" / "fusion")
    ids = preds["id"].tolist()[:4]
    with pytest.warns(DeprecationWarning, match="predict_files"):  # the old entry point, kept for one release
        table = predictor.predict([manifest.loc[u, "audio"] for u in ids],
                                  transcript=[manifest.loc[u, "transcript"] for u in ids])
    assert isinstance(table, pd.DataFrame) and len(table) == 4
    files = predictor.predict_files([manifest.loc[u, "audio"] for u in ids],
                                    [manifest.loc[u, "transcript"] for u in ids], batch_size=3)
    assert [p.source for p in files] == [str(manifest.loc[u, "audio"]) for u in ids]
    assert np.allclose([p.valence for p in files], table["valence"].to_numpy(), atol=1e-6)
    stored = preds.set_index("id").loc[ids]
    for d in ("arousal", "valence", "dominance"):
        # the predictor keeps predictions on the scale; the run's files keep the raw values
        assert np.allclose(table[d].to_numpy(), np.clip(stored[f"{d}_pred"].to_numpy(), 1, 5), atol=1e-4)
    one = predictor.predict_file(manifest.loc[ids[0], "audio"], transcript=manifest.loc[ids[0], "transcript"])
    assert isinstance(one, Prediction) and one.scale == (1.0, 5.0)
    assert one.transcript_source == "given" and one.modalities == ["audio", "text"]
    assert abs(sum(one.categories.values()) - 1.0) < 1e-5 and one.category in one.categories


def test_arrays_and_resampling_and_audio_only_models(baselines_run, iemocap_synth):
    manifest = prepare("iemocap", iemocap_synth).df
    path = manifest["audio"].iloc[0]
    predictor = Predictor.from_pretrained(baselines_run / "bundles" / "audio")
    from_file = predictor.predict_file(path)
    wave = load_audio(path)
    from_array = predictor.predict_signal(wave, 16000)
    assert from_file.transcript is None and from_file.transcript_source is None  # audio-only: no ASR
    assert from_array.arousal == pytest.approx(from_file.arousal, abs=1e-4)
    stereo = np.stack([wave, wave], axis=1)
    assert predictor.predict_signal(stereo, 16000).arousal == pytest.approx(from_file.arousal, abs=1e-4)
    import soxr

    upsampled = soxr.resample(wave, 16000, 44100)
    assert predictor.predict_signal(upsampled, 44100).arousal == pytest.approx(from_file.arousal, abs=0.1)
    assert 1.0 <= from_file.arousal <= 5.0  # always on the stated scale
    with pytest.raises(AudioError, match="NaN"):
        predictor.predict_signal(np.full(1600, np.nan), 16000)


def test_text_model_transcribes_when_no_transcript_is_given(baselines_run, iemocap_synth):
    path = prepare("iemocap", iemocap_synth).df["audio"].iloc[0]
    predictor = Predictor.from_pretrained(baselines_run / "bundles" / "text")
    result = predictor.predict_file(path)
    assert result.transcript_source == "asr:whisper-tiny.en" and isinstance(result.transcript, str)
    assert len(result.transcript.split()) >= 2  # Whisper hears the words
    # a blank transcript is none (as the service's empty form field): reliability review N12h
    blank = predictor.predict_file(path, transcript="  ")
    assert blank.transcript_source == "asr:whisper-tiny.en" and blank.transcript == result.transcript


def test_cli_json_matches_the_python_api_and_skips_a_corrupt_file(baselines_run, iemocap_synth, tmp_path):
    manifest = prepare("iemocap", iemocap_synth).df
    folder = tmp_path / "inputs"
    folder.mkdir()
    for i in range(2):
        Path(folder / f"u{i}.wav").write_bytes(Path(manifest["audio"].iloc[i]).read_bytes())
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage")
    bundle = baselines_run / "bundles" / "audio"
    proc = subprocess.run([sys.executable, "-m", "sermo.cli", "predict", str(bundle), str(folder), "--format", "json"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert [Path(p["source"]).name for p in out["predictions"]] == ["u0.wav", "u1.wav"]
    assert "broken.wav" in proc.stderr and "skipped" in proc.stderr
    api = Predictor.from_pretrained(bundle).predict_file(folder / "u0.wav")
    assert out["predictions"][0]["valence"] == pytest.approx(api.valence, abs=1e-6)
    assert out["predictions"][0]["categories"] == pytest.approx(api.categories, abs=1e-6)


def test_tampered_bundles_execute_nothing(baselines_run, tmp_path):
    import pickle
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(baselines_run / "bundles" / "audio", bundle)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    for name in ("pytorch_model.bin", "model.pkl", "extra.pt"):
        (bundle / name).write_bytes(pickle.dumps(Evil()))
    Predictor.from_pretrained(bundle)  # the dropped pickles are never opened
    assert not marker.exists()
    (bundle / "model.safetensors").write_bytes(pickle.dumps(Evil()))  # weights replaced by a pickle
    with pytest.raises(BundleError, match="unreadable"):
        Predictor.from_pretrained(bundle)
    assert not marker.exists()
    config = json.loads((bundle / "config.json").read_text())
    config["system"] = "os.system"
    (bundle / "config.json").write_text(json.dumps(config))
    with pytest.raises(BundleError):
        Predictor.from_pretrained(bundle)
    with pytest.raises(BundleError, match="not a sermo bundle"):
        Predictor.from_pretrained(tmp_path)


def test_a_bundle_whose_names_hold_markup_is_refused_when_it_loads(baselines_run, tmp_path):
    # a class name is shown on the web page and in tables: a tampered config.json must not put
    # markup there (reliability review S15)
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(baselines_run / "bundles" / "audio", bundle)
    config = json.loads((bundle / "config.json").read_text())
    evil = '<img src=x onerror="document.title=1">'
    config["label_space"]["classes"][3] = evil
    config["label_space"]["mapping"] = {k: (evil if v == "sad" else v) for k, v in config["label_space"]["mapping"].items()}
    (bundle / "config.json").write_text(json.dumps(config))
    with pytest.raises(BundleError, match=r"config.json: label_space.classes\[3\].*not a class name"):
        Predictor.from_pretrained(bundle)
    config["label_space"]["classes"][3] = "sad"
    config["row"] = "audio<script>"
    (bundle / "config.json").write_text(json.dumps(config))
    with pytest.raises(BundleError, match="row = "):
        Predictor.from_pretrained(bundle)


def edited_bundle(baselines_run, tmp_path, path: tuple, value):
    """A copy of the audio bundle whose config.json has ``value`` at ``path`` (keys in order)."""
    import shutil

    bundle = tmp_path / "bundle"
    if not bundle.exists():
        shutil.copytree(baselines_run / "bundles" / "audio", bundle)
        shutil.copy(bundle / "config.json", bundle / "config.original.json")
    config = json.loads((bundle / "config.original.json").read_text())
    node = config
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    (bundle / "config.json").write_text(json.dumps(config))
    return bundle


def test_a_config_edited_to_a_huge_model_is_refused_before_it_is_allocated(baselines_run, tmp_path):
    # reliability review S17b: a width of 2 x 10^8 in a 2 KB config.json drove predict to 8 GB
    import resource

    for path, value in ((("spec", "inputs", "audio", "dim"), 200_000_000), (("model", "hidden"), 10**9),
                        (("spec", "num_classes"), 10**9)):
        bundle = edited_bundle(baselines_run, tmp_path, path, value)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with pytest.raises(BundleError, match="do not fit|does not describe|label space has 4 classes"):
            Predictor.from_pretrained(bundle)
        grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        assert grown_mb < 500, f"{path}: the peak memory grew {grown_mb:.0f} MB before the refusal"


def test_impossible_values_and_unloadable_encoders_in_a_bundle_are_one_error(baselines_run, tmp_path, capsys):
    # reliability review S17a (an encoder named /etc), S17c (max_frames 0, label_scale NaN): tracebacks before
    from sermo.cli import main

    edits = [(("spec", "inputs", "max_frames"), 0, "max_frames = 0"),
             (("label_scale",), ["nan", 5], "label_scale"),
             (("spec", "inputs", "audio", "encoder"), "/etc", "cannot be loaded here")]
    for path, value, message in edits:
        bundle = edited_bundle(baselines_run, tmp_path, path, value)
        with pytest.raises(BundleError, match=message):
            Predictor.from_pretrained(bundle)
        assert main(["predict", str(bundle), str(tmp_path / "none.wav")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("sermo: error:"), err


def test_long_recording_is_segmented(baselines_run, iemocap_synth, tmp_path):
    manifest = prepare("iemocap", iemocap_synth).df
    parts = []
    for path in manifest["audio"].iloc[:6]:
        parts += [load_audio(path), np.zeros(16000, dtype=np.float32)]  # 1 s pauses
    long = tmp_path / "long.wav"
    sf.write(long, np.concatenate(parts), 16000)
    result = Segmenter(max_seconds=4).predict_file(Predictor.from_pretrained(baselines_run / "bundles" / "audio"), long)
    preds, summary = result.segments, result.summary
    assert 4 <= len(preds) <= 12 and summary["segments"] == len(preds)
    assert all(p.end - p.start <= 4.5 and p.start < p.end for p in preds)
    assert all(a.end <= b.start + 1e-6 for a, b in zip(preds, preds[1:]))
    assert summary["category"] in summary["categories"] and 1.0 <= summary["valence"] <= 5.0


def test_ten_minute_recording_is_predicted_with_bounded_memory(baselines_run, iemocap_synth, tmp_path):
    """The peak of arrays held while predicting a 10-minute recording is that of a
    1-minute one: it depends on the segment and batch sizes, not on the file's length."""
    import tracemalloc

    manifest = prepare("iemocap", iemocap_synth).df

    def recording(name: str, length: float) -> Path:
        path = tmp_path / name
        seconds = 0.0
        with sf.SoundFile(path, "w", samplerate=16000, channels=1, subtype="PCM_16") as f:
            k = 0
            while seconds < length:
                x = load_audio(manifest["audio"].iloc[k % len(manifest)])
                f.write(np.concatenate([x, np.zeros(8000, dtype=np.float32)]))
                seconds += len(x) / 16000 + 0.5
                k += 1
        return path

    predictor = Predictor.from_pretrained(baselines_run / "bundles" / "audio")

    def peak_of(path: Path) -> tuple[int, dict]:
        tracemalloc.start()
        summary = Segmenter(max_seconds=8).predict_file(predictor, path).summary
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return peak, summary

    short_peak, _ = peak_of(recording("one_minute.wav", 60))
    peak, summary = peak_of(recording("ten_minutes.wav", 600))
    whole_file = 600 * 16000 * 4  # the recording as float32
    assert summary["segments"] > 100 and summary["speech_seconds"] > 400
    assert peak < 1.5 * short_peak and peak < whole_file / 2, \
        f"peak {peak / 1e6:.1f} MB for 10 minutes, {short_peak / 1e6:.1f} MB for one"


def test_audio_longer_than_the_model_reads_is_windowed_not_cut(baselines_run, iemocap_synth, tmp_path):
    import dataclasses

    manifest = prepare("iemocap", iemocap_synth).df
    predictor = Predictor.from_pretrained(baselines_run / "bundles" / "audio")
    audio = predictor.inputs.audio  # the demo profile: Whisper's 50 Hz frames averaged 4 to 1 as they are read
    assert audio.pool == 4 and audio.frame_rate == 12.5
    assert predictor.window_seconds == pytest.approx(predictor.inputs.max_frames / 12.5)
    # a model that reads 8 s at once (its max_frames), to keep the test short
    predictor.inputs = dataclasses.replace(predictor.inputs, max_frames=100)
    limit = predictor.window_seconds
    assert limit == pytest.approx(8.0)
    parts, seconds, k = [], 0.0, 0
    while seconds < 2.2 * limit:
        parts.append(load_audio(manifest["audio"].iloc[k % len(manifest)]))
        seconds += len(parts[-1]) / 16000
        k += 1
    wave = np.concatenate(parts)
    long = tmp_path / "long.wav"
    sf.write(long, wave, 16000)
    result = predictor.predict_file(long)
    assert result.windows == 3 and result.duration == pytest.approx(len(wave) / 16000, abs=0.01)
    # the answer reads the whole file: it is not the answer for its first window
    first = predictor.predict_signal(wave[: int(limit * 16000)], 16000)
    assert first.windows == 1
    assert max([abs(result.arousal - first.arousal)]
               + [abs(result.categories[c] - first.categories[c]) for c in first.categories]) > 1e-4
    fusion = Predictor.from_pretrained(baselines_run / "bundles" / "fusion")
    fusion.inputs = dataclasses.replace(fusion.inputs, max_frames=100)
    with pytest.raises(AudioError, match="one transcript cannot be split"):
        fusion.predict_file(long, transcript="one transcript for a long file")


def test_a_bundle_with_a_changed_tensor_shape_is_one_error_line(baselines_run, tmp_path, capsys):
    import shutil

    from safetensors.torch import load_file, save_file

    from sermo.cli import main

    bundle = tmp_path / "bundle"
    shutil.copytree(baselines_run / "bundles" / "audio", bundle)
    weights = load_file(bundle / "model.safetensors")
    name = next(k for k, v in weights.items() if v.ndim == 2)
    weights[name] = weights[name][:, :-1].contiguous()
    save_file(weights, bundle / "model.safetensors")
    with pytest.raises(BundleError, match="shape|size"):
        Predictor.from_pretrained(bundle)
    assert main(["predict", str(bundle), str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sermo: error:") and "bundle" in err[0]


def test_a_folder_scan_names_what_it_cannot_follow(tmp_path):
    # reliability review N13c: broken links and loops were dropped from a folder scan in silence
    from sermo.serving.files import audio_files

    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "sub" / "a.wav").write_bytes(b"RIFF")
    (tmp_path / "d" / "gone.wav").symlink_to(tmp_path / "nowhere.wav")
    (tmp_path / "d" / "loop.flac").symlink_to(tmp_path / "d" / "loop.flac")
    (tmp_path / "d" / "notes.txt").write_text("not audio")
    with pytest.warns(UserWarning) as caught:
        files = audio_files([str(tmp_path / "d"), str(tmp_path / "named.wav")])
    assert files == [tmp_path / "d" / "sub" / "a.wav", tmp_path / "named.wav"]
    said = " ".join(str(w.message) for w in caught)
    assert "gone.wav: a broken symbolic link or a loop" in said and "loop.flac: a broken symbolic link or a loop" in said


def test_a_model_trained_on_synthetic_speech_says_so_wherever_it_predicts(baselines_run, iemocap_synth, capsys):
    # issue 29, item 4: a demo bundle answered real audio with no word about what it had heard
    from sermo.cli import main

    with pytest.warns(UserWarning, match="trained on sermo's built-in synthetic corpus"):
        predictor = Predictor.from_pretrained(baselines_run / "bundles" / "audio")
    assert predictor.trained_on["builtin"] is True and predictor.trained_on["corpora"] == ["iemocap"]
    assert predictor.trained_on["utterances"] > 0 and predictor.trained_on["speakers"] >= 2
    wav = sorted(iemocap_synth.rglob("*.wav"))[0]
    assert main(["predict", str(baselines_run / "bundles" / "audio"), str(wav)]) == 0
    err = capsys.readouterr().err
    assert "sermo: warning:" in err and "synthetic corpus" in err and "`sermo run`" in err


def test_one_method_per_input_kind_each_with_one_return_type(baselines_run, iemocap_synth, tmp_path):
    """predict_file and predict_signal give a Prediction; predict_files and predict_folder a list
    in order, a broken file raising (predict_files) or reported and left out (predict_folder,
    skip_errors)."""
    manifest = prepare("iemocap", iemocap_synth).df
    predictor = Predictor.from_pretrained(baselines_run / "bundles" / "audio")
    folder = tmp_path / "recordings"
    (folder / "sub").mkdir(parents=True)
    paths = [folder / "a.wav", folder / "sub" / "b.wav"]
    for src, dst in zip(manifest["audio"].iloc[:2], paths):
        sf.write(dst, load_audio(src), 16000)
    (folder / "broken.wav").write_bytes(b"RIFF not audio")
    one = predictor.predict_file(paths[0])
    signal = predictor.predict_signal(load_audio(paths[0]), 16000)
    assert isinstance(one, Prediction) and one.source == str(paths[0]) and signal.source == "signal"
    assert signal.valence == pytest.approx(one.valence, abs=1e-6)
    with pytest.raises(AudioError, match="broken.wav"):
        predictor.predict_files([paths[0], folder / "broken.wav"])
    with pytest.warns(UserWarning, match="broken.wav"):
        found = predictor.predict_folder(folder)
    assert [p.source for p in found] == [str(paths[0]), str(paths[1])]
    assert found[0].valence == pytest.approx(one.valence, abs=1e-6)
    with pytest.raises(AudioError, match="not a folder"):
        predictor.predict_folder(paths[0])
