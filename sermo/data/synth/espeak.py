"""espeak-ng through ctypes (the library and its data ship in the ``espeakng-loader`` package).

espeak-ng keeps its voice and parameters in global state, so one process must synthesise
one utterance at a time: the corpus generator runs a pool of processes, each with its own
:class:`Espeak`, never threads.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass

import numpy as np

# espeak_PARAMETER values (speak_lib.h)
_RATE, _VOLUME, _PITCH, _RANGE, _WORDGAP = 1, 2, 3, 4, 7
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class EspeakError(RuntimeError):
    """espeak-ng could not be loaded or refused a voice or a text."""


@dataclass(frozen=True)
class Prosody:
    """espeak-ng settings for one utterance.

    Attributes:
        voice: voice name with optional variant (``en-us+f3``).
        rate: words per minute (80-450).
        pitch: base pitch, 0-99.
        pitch_range: pitch range, 0-99 (0 = monotone).
        word_gap: extra pause between words, in units of 10 ms.
    """

    voice: str
    rate: int
    pitch: int
    pitch_range: int
    word_gap: int = 0


class Espeak:
    """One espeak-ng engine in synchronous mode; synthesises text to int16 samples."""

    def _seed(self, seed: int) -> None:
        value = ctypes.c_long(int(seed) % (2**31 - 1))
        if hasattr(self._lib, "espeak_ng_SetRandSeed"):
            self._lib.espeak_ng_SetRandSeed(value)
        ctypes.CDLL(None).srand(ctypes.c_uint(value.value))

    _lock = threading.Lock()

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as exc:  # pragma: no cover - a dependency of sermo
            raise EspeakError("the espeakng-loader package is missing; run `make install`") from exc
        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self._lib.espeak_Initialize.restype = ctypes.c_int
        self.sample_rate = self._lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0
        )
        if self.sample_rate <= 0:
            raise EspeakError("espeak-ng failed to initialise from the espeakng-loader data folder")
        self._chunks: list[np.ndarray] = []
        self._callback = _CALLBACK(self._collect)  # kept referenced: espeak calls it later
        self._lib.espeak_SetSynthCallback(self._callback)
        self._voice: str | None = None

    def _collect(self, wav, n, _events) -> int:
        if n > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    def synthesize(self, text: str, prosody: Prosody, *, seed: int | None = None) -> np.ndarray:
        """Speak ``text`` with ``prosody``.

        ``seed`` seeds espeak-ng's random source (and the C library's ``rand``, which older
        builds use), so the same text, prosody and seed give the same samples from a fresh
        engine whatever else the process did before.

        Returns:
            ``(samples,)`` int16 at :attr:`sample_rate` (22,050 Hz).

        Raises:
            EspeakError: unknown voice, or no audio came out.
        """
        with self._lock:
            if prosody.voice != self._voice:
                if self._lib.espeak_SetVoiceByName(prosody.voice.encode()) != 0:
                    raise EspeakError(f"espeak-ng has no voice {prosody.voice!r}")
                self._voice = prosody.voice
            for param, value in ((_RATE, prosody.rate), (_PITCH, prosody.pitch),
                                 (_RANGE, prosody.pitch_range), (_WORDGAP, prosody.word_gap), (_VOLUME, 100)):
                self._lib.espeak_SetParameter(param, int(value), 0)
            if seed is not None:
                self._seed(seed)
            self._chunks = []
            data = text.encode("utf-8")
            self._lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            self._lib.espeak_Synchronize()
            chunks, self._chunks = self._chunks, []
        if not chunks:
            raise EspeakError(f"espeak-ng produced no audio for {text!r}")
        return np.concatenate(chunks)
