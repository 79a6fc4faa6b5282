import numpy as np
import pytest
import soundfile as sf

from sermo.data.audio import AudioError, AudioTooLong, audio_info, load_audio, prepare_waveform
from tests.conftest import write_tone


@pytest.mark.parametrize("suffix,fmt", [(".wav", None), (".flac", None), (".ogg", "OGG"), (".mp3", "MP3")])
def test_formats_load_as_16k_mono(tmp_path, suffix, fmt):
    path = write_tone(tmp_path / f"a{suffix}", seconds=1.0, sr=16000, **({"format": fmt} if fmt else {}))
    x = load_audio(path)
    assert x.dtype == np.float32 and x.ndim == 1
    assert abs(len(x) - 16000) < 1200  # mp3 and ogg pad a little


def test_8k_stereo_mp3_is_resampled_and_averaged(tmp_path):
    path = write_tone(tmp_path / "b.mp3", seconds=2.0, sr=8000, channels=2, format="MP3")
    x = load_audio(path)
    assert abs(len(x) - 32000) < 2400
    assert 0.15 < np.abs(x).max() < 0.45  # averaged equal channels keep the amplitude


def test_stereo_channels_are_averaged(tmp_path):
    sr = 16000
    left = np.full(sr, 0.5, np.float32)
    path = tmp_path / "c.wav"
    sf.write(path, np.stack([left, -left], axis=1), sr, subtype="FLOAT")
    assert np.allclose(load_audio(path), 0.0)


def test_segment_and_resampling(tmp_path):
    path = write_tone(tmp_path / "d.wav", seconds=3.0, sr=44100)
    seg = load_audio(path, start=1.0, end=2.5)
    assert len(seg) == 24000
    assert audio_info(path).duration == pytest.approx(3.0)


def test_segment_outside_file_is_an_error(tmp_path):
    path = write_tone(tmp_path / "e.wav", seconds=1.0)
    with pytest.raises(AudioError, match="outside the file"):
        load_audio(path, start=0.5, end=3.0)
    with pytest.raises(AudioError, match="not after its start"):
        load_audio(path, start=0.5, end=0.2)


def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match="does not exist") as e:
        load_audio(tmp_path / "nope.wav")
    assert str(tmp_path / "nope.wav") in str(e.value)


def test_empty_file(tmp_path):
    p = tmp_path / "empty.wav"
    p.write_bytes(b"")
    with pytest.raises(AudioError, match="empty"):
        load_audio(p)


def test_truncated_header(tmp_path):
    good = write_tone(tmp_path / "good.wav")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(good.read_bytes()[:20])
    with pytest.raises(AudioError, match="cannot be read as audio") as e:
        load_audio(bad)
    assert e.value.path == str(bad)


def test_not_audio(tmp_path):
    p = tmp_path / "text.wav"
    p.write_text("this is not audio at all " * 20)
    with pytest.raises(AudioError, match="cannot be read as audio"):
        load_audio(p)


def test_nan_samples(tmp_path):
    x = np.zeros(1600, np.float32)
    x[100] = np.nan
    p = tmp_path / "nan.wav"
    sf.write(p, x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN"):
        load_audio(p)


def test_zero_length(tmp_path):
    p = tmp_path / "zero.wav"
    sf.write(p, np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="no samples"):
        load_audio(p)


def test_prepare_waveform_checks_and_resamples():
    x = prepare_waveform(np.ones((8000, 2), np.float32) * 0.1, 8000)
    assert len(x) == 16000
    with pytest.raises(AudioError, match="no samples"):
        prepare_waveform(np.zeros(0), 16000)
    with pytest.raises(AudioError, match="NaN"):
        prepare_waveform(np.array([0.0, np.inf]), 16000)


def test_a_high_rate_many_channel_file_decodes_in_bounded_memory(tmp_path):
    """20 s at 384 kHz x 8 channels is 245 MB as float32 (a few KB as FLAC of silence): decoded
    block by block, the arrays held at once stay near one block and the 16 kHz result."""
    import tracemalloc

    rate, channels, seconds = 384000, 8, 20
    path = tmp_path / "wide.flac"
    with sf.SoundFile(path, "w", samplerate=rate, channels=channels, subtype="PCM_16") as f:
        for _ in range(seconds):
            f.write(np.zeros((rate, channels), np.int16))
    assert path.stat().st_size < 1e6
    tracemalloc.start()
    x = load_audio(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(x) == seconds * 16000
    assert peak < 40e6, f"peak {peak / 1e6:.0f} MB of arrays for {rate * channels * seconds * 4 / 1e6:.0f} MB of samples"
    with pytest.raises(AudioTooLong, match="over the limit of 5 s"):
        load_audio(path, max_seconds=5)


def test_blockwise_decoding_equals_one_pass(tmp_path, monkeypatch):
    import sermo.data.audio as audio

    path = write_tone(tmp_path / "t.wav", seconds=3.0, sr=44100, channels=2)
    whole, part = load_audio(path), load_audio(path, start=0.5, end=2.0)
    monkeypatch.setattr(audio, "BLOCK_SAMPLES", 4096)  # many small blocks
    assert np.array_equal(load_audio(path), whole)
    assert np.array_equal(load_audio(path, start=0.5, end=2.0), part) and len(part) == 24000


def test_a_rate_that_resamples_to_no_samples_is_an_error(tmp_path):
    p = tmp_path / "tiny.wav"
    sf.write(p, np.zeros(5, np.float32), 192000)  # 5 samples at 192 kHz: nothing at 16 kHz
    with pytest.raises(AudioError, match="no samples at 16000 Hz"):
        load_audio(p)


def test_permission_denied_and_symlink_loops_are_named(tmp_path, monkeypatch):
    import errno
    import os

    loop = tmp_path / "loop.wav"
    os.symlink(loop, loop)
    with pytest.raises(AudioError, match="symbolic link loop"):
        load_audio(loop)
    broken = tmp_path / "broken.wav"
    os.symlink(tmp_path / "gone.wav", broken)
    with pytest.raises(AudioError, match="broken symbolic link"):
        load_audio(broken)
    locked = write_tone(tmp_path / "locked.wav")
    real_open = os.open

    def denied(path, *a, **k):  # root can read anything: stand in for a file it may not
        if str(path) == str(locked):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(AudioError, match="permission denied") as e:
        load_audio(locked)
    assert str(locked) in str(e.value)


def test_a_many_channel_high_rate_file_costs_no_more_than_the_limit_allows(tmp_path, monkeypatch):
    # reliability review S4: a few hundred KB of FLAC silence at 655 kHz x 8 channels is 314 M
    # samples to decode; under a limit of seconds, what the file holds per second is bounded too
    import sermo.data.audio as audio_mod

    bomb = tmp_path / "bomb.flac"
    sf.write(bomb, np.zeros((655_350 * 3, 8), dtype=np.int16), 655_350, subtype="PCM_16")
    assert bomb.stat().st_size < 2_000_000
    with monkeypatch.context() as m:  # refused from the header: nothing is decoded
        m.setattr(audio_mod, "_decode", lambda *a, **k: pytest.fail("decoded"))
        with pytest.raises(AudioTooLong, match="655,350 Hz x 8 channels.*resample"):
            load_audio(bomb, max_seconds=10)
    assert len(load_audio(bomb)) == 3 * 16000  # without a limit (a corpus of one's own) it is read
    ordinary = tmp_path / "stereo96k.wav"
    sf.write(ordinary, np.zeros((96_000 * 9, 2), dtype=np.float32), 96_000)
    assert len(load_audio(ordinary, max_seconds=10)) == 9 * 16000  # 96 kHz stereo within the limit reads


def test_float_audio_outside_its_range_is_an_error_or_clipped_with_a_warning(tmp_path):
    # reliability review S31: a float WAV in int16 scale was scored at the top of every dimension
    int16_scale = tmp_path / "loud.wav"
    sf.write(int16_scale, (np.sin(np.arange(16000) / 5) * 20000).astype(np.float32), 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="loud.wav: holds samples up to 20000, far outside"):
        load_audio(int16_scale)
    hot = tmp_path / "hot.wav"
    sf.write(hot, (np.sin(np.arange(16000) / 5) * 1.3).astype(np.float32), 16000, subtype="FLOAT")
    with pytest.warns(UserWarning, match="hot.wav: samples up to 1.3 lie outside"):
        x = load_audio(hot)
    assert np.abs(x).max() <= 1.0 + 1e-3


def test_file_names_libsndfile_cannot_take_are_read(tmp_path):
    # reliability review S9b, S9c, S10b: a name that is not UTF-8 and a path over libsndfile's 1,024
    # characters were called unreadable audio (and dropped from a test set)
    import os
    import shutil

    ok = tmp_path / "ok.wav"
    sf.write(ok, (np.sin(np.arange(16000) / 5) * 0.3).astype(np.float32), 16000)
    odd = os.fsdecode(os.fsencode(str(tmp_path)) + b"/bad\xff\xfebytes.wav")
    shutil.copy(ok, odd)
    deep = tmp_path
    for part in ("e", "f", "g", "h", "i"):
        deep = deep / (part * 220)
    deep.mkdir(parents=True)
    shutil.copy(ok, deep / "x.wav")
    assert len(str(deep / "x.wav")) > 1024
    for path in (odd, deep / "x.wav"):
        assert len(load_audio(path)) == 16000 and audio_info(path).duration == 1.0


def test_a_flac_without_a_length_is_named_as_such(tmp_path):
    # reliability review S28: refused as "576460752303423.5 s of audio"
    path = tmp_path / "stream.flac"
    sf.write(path, (np.sin(np.arange(48000) / 5) * 0.3).astype(np.float32), 16000)
    data = bytearray(path.read_bytes())
    field = int.from_bytes(data[18:26], "big") & ~((1 << 36) - 1)  # STREAMINFO's total samples: 0, unknown
    data[18:26] = field.to_bytes(8, "big")
    path.write_bytes(bytes(data))
    for read in (audio_info, lambda p: load_audio(p, max_seconds=60)):
        with pytest.raises(AudioError, match="stream.flac: its header gives no length.*re-encode"):
            read(path)


def test_a_flac_whose_header_understates_its_length_is_not_answered_from_its_start(tmp_path):
    # reliability review S27: 90 s of audio under a header saying 1 s was scored on its first second
    path = tmp_path / "long.flac"
    sf.write(path, (np.random.default_rng(0).normal(size=16000 * 20) * 0.1).astype(np.float32), 16000)
    assert len(load_audio(path)) == 16000 * 20  # a whole FLAC reads to its end
    data = bytearray(path.read_bytes())
    field = int.from_bytes(data[18:26], "big") & ~((1 << 36) - 1)
    data[18:26] = (field | 16000).to_bytes(8, "big")  # STREAMINFO: 1 s
    path.write_bytes(bytes(data))
    with pytest.raises(AudioError, match="long.flac: its header says 1.0 s, but the file goes on.*re-encode"):
        load_audio(path, max_seconds=60)
