"""Audio input: any common file format, any sample rate and channel count, in 16 kHz mono.

Every reader of audio in sermo goes through :func:`load_audio`, so a broken file gives the
same clear error everywhere: an :class:`AudioError` that names the file and the problem.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16_000
"""The sample rate every encoder and system in sermo consumes."""


class AudioError(ValueError):
    """A file that cannot serve as audio; ``path`` and ``problem`` say which and why."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class AudioTooLong(AudioError):
    """Audio longer than a stated limit (``max_seconds``)."""


@dataclass(frozen=True)
class AudioInfo:
    """Header facts of an audio file (no samples read)."""

    path: str
    sample_rate: int
    channels: int
    frames: int
    format: str

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Read the header of ``path``.

    Raises:
        AudioError: the file is missing, empty, or not readable as audio.
    """
    p = _check_file(path)
    try:
        with _sound_file(p) as f:
            _check_length(f, p)
            info = f
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioError(p, f"cannot be read as audio ({_short(exc)}); is it truncated or not an audio file?") from None
    return AudioInfo(str(p), int(info.samplerate), int(info.channels), int(info.frames), str(info.format))


def _check_length(f, p: Path) -> None:
    """Raise :class:`AudioError` for a header that gives no length (a FLAC written as a stream
    says 2^63 - 1 frames), which libsndfile cannot read past its first block."""
    if f.frames >= 1 << 62:
        raise AudioError(p, "its header gives no length (written as a stream), which cannot be read here; re-encode "
                            "it with one, e.g. `ffmpeg -i IN.flac OUT.flac` or `sox IN.flac OUT.flac`")


def _sound_file(p: Path) -> "sf.SoundFile":
    """``p`` open for reading through a Python file object: libsndfile cannot take every name
    (over its 1,024 characters, bytes that are not UTF-8), and how far it read tells whether a
    header understated the length (:func:`_check_read_all`)."""
    handle = open(p, "rb")  # noqa: SIM115 - closed with the SoundFile below
    try:
        f = sf.SoundFile(handle)
    except Exception:
        handle.close()
        raise
    original_close = f.close

    def close():
        original_close()
        handle.close()

    f.close = close
    f.sermo_handle = handle
    return f


def _check_read_all(f, p: Path) -> None:
    """Raise :class:`AudioError` when a FLAC file holds audio past the length its header gives:
    libsndfile stops at the header's count, so the rest would be left out in silence."""
    if str(f.format).upper() != "FLAC":
        return
    size, read = os.path.getsize(p), f.sermo_handle.tell()
    if size - read > max(65536, size // 20):
        raise AudioError(p, f"its header says {f.frames / f.samplerate:.1f} s, but the file goes on ({read:,} of "
                            f"{size:,} bytes hold those seconds): the header understates its length; re-encode it, "
                            "e.g. `ffmpeg -i IN.flac OUT.flac`")


def load_audio(
    path: str | os.PathLike,
    *,
    start: float | None = None,
    end: float | None = None,
    sample_rate: int = SAMPLE_RATE,
    max_seconds: float | None = None,
) -> np.ndarray:
    """Load ``path`` (wav, flac, ogg, mp3, ...) as mono float32 at ``sample_rate``.

    The file is decoded in blocks of at most :data:`BLOCK_SAMPLES` samples (over all its
    channels), each averaged to mono and resampled as a stream (soxr; identical to resampling
    the whole signal at once): memory grows with the 16 kHz mono result, never with the file's
    rate x channels.

    Args:
        path: the audio file.
        start: segment start in seconds (``None``: the beginning).
        end: segment end in seconds (``None``: the end of the file).
        sample_rate: the rate of the returned samples.
        max_seconds: refuse more audio than this (checked on the header before decoding, and on
            what is decoded, for headers that understate it).

    Returns:
        ``(samples,)`` float32 array in [-1, 1].

    Raises:
        AudioError: the file is missing, unreadable, empty, has no samples at ``sample_rate``,
            contains NaN or infinite samples, is longer than ``max_seconds``, or the segment lies
            outside the file.
    """
    p = _check_file(path)
    try:
        with _sound_file(p) as f:
            _check_length(f, p)
            sr = int(f.samplerate)
            total = f.frames
            first = 0 if start is None else int(round(start * sr))
            last = total if end is None else int(round(end * sr))
            if start is not None and (start < 0 or first > total):
                raise AudioError(p, f"segment start {start:.3f} s lies outside the file ({total / sr:.3f} s)")
            if end is not None and end <= (start or 0.0):
                raise AudioError(p, f"segment end {end:.3f} s is not after its start {start or 0.0:.3f} s")
            if last > total:
                # Annotated end times of real corpora overshoot the file by a few ms; more is an error.
                if (last - total) / sr > 0.05:
                    raise AudioError(p, f"segment end {end:.3f} s lies outside the file ({total / sr:.3f} s)")
                last = total
            if max_seconds is not None and (last - first) / sr > max_seconds:
                raise AudioTooLong(p, f"{(last - first) / sr:.1f} s of audio is over the limit of {max_seconds:g} s")
            raw_cap = None if max_seconds is None else int(max_seconds * RAW_PER_SECOND)
            if raw_cap is not None and (last - first) * f.channels > raw_cap:
                raise AudioTooLong(p, f"{sr:,} Hz x {f.channels} channels: {(last - first) * f.channels / 1e6:.0f} M "
                                      f"samples to decode, over the {raw_cap / 1e6:.0f} M that {max_seconds:g} s of "
                                      "96 kHz stereo would be; resample it (16-48 kHz, mono or stereo)")
            f.seek(first)
            cap = None if max_seconds is None else int(max_seconds * sample_rate) + sample_rate // 10
            out = _decode(f, p, max(last - first, 0), sample_rate, cap, max_seconds, raw_cap)
            if end is None:
                _check_read_all(f, p)
    except AudioError:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise AudioError(p, f"cannot be read as audio ({_short(exc)}); is it truncated or not an audio file?") from None
    return out


BLOCK_SAMPLES = 1 << 20
"""Samples (frames x channels) decoded at a time: 4 MB of float32, whatever the file."""

CLIP_LIMIT = 2.0
"""Float samples beyond this magnitude are an error (audio in another scale); between 1 and it
they are clipped to [-1, 1] with a warning."""

RAW_PER_SECOND = 96_000 * 2
"""Under a ``max_seconds`` limit, the samples (frames x channels) a file may hold per second of
that limit: 96 kHz stereo. Decoding costs what the file holds, not what it resamples to: a small
FLAC of silence at 655 kHz x 8 channels would otherwise cost seconds of CPU within the limit."""


def _blocks(f, p: Path, frames: int | None, to_rate: int, block: int):
    """Mono float32 blocks at ``to_rate`` of ``frames`` frames (``None``: to the end) of the open
    file ``f`` from its position, read ``block`` frames at a time and resampled as a stream;
    raises for non-finite samples and for no samples at all."""
    rate = int(f.samplerate)
    stream = soxr.ResampleStream(rate, to_rate, 1, dtype="float32", quality="HQ") if rate != to_rate else None
    read = produced = 0
    clipped = False
    while True:
        want = block if frames is None else min(block, frames - read)
        x = f.read(frames=want, dtype="float32", always_2d=True) if want > 0 else np.zeros((0, 1), "float32")
        read += len(x)
        last = len(x) < block or (frames is not None and read >= frames)
        if len(x) and not np.isfinite(x).all():
            raise AudioError(p, "contains NaN or infinite samples")
        peak = float(np.abs(x).max()) if len(x) else 0.0
        if peak > CLIP_LIMIT:  # float samples in another scale (int16's) would be scored as a scream
            raise AudioError(p, f"holds samples up to {peak:.5g}, far outside [-1, 1]: float audio written in another "
                                "scale (int16's is 32768); rescale it to [-1, 1] or save it as PCM")
        if peak > 1.0 + 1e-4:
            if not clipped:
                warnings.warn(f"{p}: samples up to {peak:.3g} lie outside [-1, 1]; clipped to it", stacklevel=3)
                clipped = True
            np.clip(x, -1.0, 1.0, out=x)
        mono = x.mean(axis=1)  # a new array: the block itself is freed before it is resampled
        del x
        y = stream.resample_chunk(mono, last=last) if stream is not None else mono
        if len(y):
            produced += len(y)
            yield np.asarray(y, dtype=np.float32)
        if last:
            break
    if read == 0:
        raise AudioError(p, "has no samples (0 s of audio)")
    if produced == 0:
        raise AudioError(p, f"has no samples at {to_rate} Hz ({read} sample(s) at {rate} Hz)")


def _decode(f, p: Path, frames: int, to_rate: int, cap: int | None, max_seconds: float | None,
            raw_cap: int | None = None) -> np.ndarray:
    """``frames`` frames of the open file ``f`` from its position, mono at ``to_rate``, block by block."""
    chunks: list[np.ndarray] = []
    produced = 0
    block = max(1, BLOCK_SAMPLES // max(1, f.channels))
    decoded_cap = None if raw_cap is None else raw_cap // max(1, f.channels) + block
    for y in _blocks(f, p, frames, to_rate, block):
        chunks.append(y.copy())  # resampler output may be a view of its internal buffer
        produced += len(y)
        if cap is not None and produced > cap:
            raise AudioTooLong(p, f"holds more than the limit of {max_seconds:g} s of audio (its header says less)")
        if decoded_cap is not None and produced * f.samplerate / to_rate > decoded_cap:
            raise AudioTooLong(p, f"holds more samples than the limit of {max_seconds:g} s allows (its header says "
                                  "less)")
    return np.concatenate(chunks) if len(chunks) > 1 else chunks[0]


def stream_audio(path: str | os.PathLike, block_seconds: float = 20.0, sample_rate: int = SAMPLE_RATE):
    """Mono float32 blocks of about ``block_seconds`` at ``sample_rate`` of a whole file, decoded
    and resampled as a stream (memory bounded by the block, not the file).

    Raises:
        AudioError: unreadable, non-finite or without samples.
    """
    p = _check_file(path)
    try:
        f = _sound_file(p)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise AudioError(p, f"cannot be read as audio ({_short(exc)}); is it truncated or not an audio file?") from None
    with f:
        _check_length(f, p)
        block = max(1, min(int(block_seconds * f.samplerate), BLOCK_SAMPLES // max(1, f.channels)))
        yield from _blocks(f, p, None, sample_rate, block)


def resample(samples: np.ndarray, from_rate: int, to_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Resample a mono float array with soxr (high quality); a no-op at equal rates."""
    x = np.ascontiguousarray(samples, dtype=np.float32)
    if from_rate == to_rate:
        return x
    return soxr.resample(x, from_rate, to_rate, quality="HQ").astype(np.float32, copy=False)


def prepare_waveform(samples: np.ndarray, sample_rate: int, *, name: str = "<array>") -> np.ndarray:
    """Bring an in-memory signal to the form :func:`load_audio` returns.

    Args:
        samples: ``(samples,)`` or ``(samples, channels)`` array.
        sample_rate: its rate in Hz.
        name: what to call the signal in errors.

    Raises:
        AudioError: empty, non-finite, or more than two dimensions.
    """
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim == 2:
        x = x.mean(axis=1)
    elif x.ndim != 1:
        raise AudioError(name, f"expected (samples,) or (samples, channels), got shape {x.shape}")
    if x.size == 0:
        raise AudioError(name, "has no samples (0 s of audio)")
    if not np.isfinite(x).all():
        raise AudioError(name, "contains NaN or infinite samples")
    peak = float(np.abs(x).max())
    if peak > CLIP_LIMIT:
        raise AudioError(name, f"holds samples up to {peak:.5g}, far outside [-1, 1]: pass float samples in [-1, 1] "
                               "(int16 audio divided by 32768)")
    if peak > 1.0 + 1e-4:
        warnings.warn(f"{name}: samples up to {peak:.3g} lie outside [-1, 1]; clipped to it", stacklevel=2)
        x = np.clip(x, -1.0, 1.0)
    return resample(x, int(sample_rate), SAMPLE_RATE)


def _check_file(path: str | os.PathLike) -> Path:
    import errno

    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise AudioError(p, "is a broken symbolic link" if os.path.islink(p) else "does not exist") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise AudioError(p, "is a symbolic link loop") from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise AudioError(p, "cannot be read: permission denied (check its permissions)") from None
        raise AudioError(p, f"cannot be read ({exc.strerror or exc})") from None
    import stat

    if not stat.S_ISREG(st.st_mode):
        raise AudioError(p, "is not a file")
    if st.st_size == 0:
        raise AudioError(p, "is empty (0 bytes)")
    try:
        os.close(os.open(p, os.O_RDONLY))
    except PermissionError:
        raise AudioError(p, "cannot be read: permission denied (check its permissions)") from None
    except OSError as exc:
        raise AudioError(p, f"cannot be read ({exc.strerror or exc})") from None
    return p


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__
