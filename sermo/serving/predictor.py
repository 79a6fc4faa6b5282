"""Predictions for new audio from a model bundle: ``Predictor.from_pretrained(path).predict(...)``.

A bundle names the system, the row, exactly what its model reads and the label space and
scale (see :mod:`sermo.data.bundle`). The predictor rebuilds the model (from the system's
code, never from the bundle), turns audio (and a transcript, or the configured ASR engine's)
into the model's inputs through the same input pipeline training used
(:mod:`sermo.features.pipeline`, with live encoders in place of the feature store), and
returns typed results on the label scale the model was trained on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sermo.data.audio import SAMPLE_RATE, AudioError, load_audio, prepare_waveform
from sermo.data.bundle import SYNTHETIC_CAVEAT, BundleConfig, BundleError, check_shapes
from sermo.data.spec import FeatureInput


@dataclass
class Prediction:
    """Emotion predicted for one input (a file, an array, or a segment of a recording).

    Attributes:
        source: the file path, or ``array[i]`` for arrays.
        arousal, valence, dominance: on ``scale`` (``None`` when the model predicts no dimensions);
            a model output beyond the scale is clipped to its ends.
        scale: ``(min, max)`` of the label scale the model was trained on (the corpus's).
        categories: class -> probability (``None`` when the model predicts no categories).
        category: the most probable class.
        modalities: what the model read (``audio``, ``text``).
        transcript: the transcript used (``None`` for audio-only models).
        transcript_source: ``given`` or ``asr:<engine>`` (``None`` for audio-only models).
        start, end: seconds within the recording for segments (``None`` for whole inputs).
        duration: seconds of audio.
        windows: the windows the audio was read in: audio longer than the model reads at once
            (its ``max_frames``) is cut into equal windows, predicted each, and their outputs
            averaged weighted by duration (1: read whole).
    """

    source: str
    arousal: float | None = None
    valence: float | None = None
    dominance: float | None = None
    scale: tuple[float, float] | None = None
    categories: dict[str, float] | None = None
    category: str | None = None
    modalities: list[str] = field(default_factory=list)
    transcript: str | None = None
    transcript_source: str | None = None
    start: float | None = None
    end: float | None = None
    duration: float = 0.0
    windows: int = 1

    def to_dict(self) -> dict:
        """JSON-ready form."""
        d = asdict(self)
        d["scale"] = list(self.scale) if self.scale else None
        return d

    def flat(self) -> dict:
        """One flat row (categories as ``p_<class>`` columns) for tables and CSV."""
        d = self.to_dict()
        cats = d.pop("categories") or {}
        d["scale"] = f"{self.scale[0]:g}-{self.scale[1]:g}" if self.scale else None
        d["modalities"] = "+".join(self.modalities)
        d.update({f"p_{k}": v for k, v in cats.items()})
        return d


class Predictor:
    """A trained sermo model ready to predict emotion for any audio.

    >>> p = Predictor.from_pretrained("runs/baselines/iemocap-demo/bundles/fusion")  # doctest: +SKIP
    >>> p.predict("speech.wav").valence  # doctest: +SKIP
    """

    def __init__(self, config: BundleConfig, weights: dict[str, torch.Tensor], *, asr: str | None = None,
                 folder: str | None = None, accelerator: str = "auto"):
        from sermo.accelerator import resolve_device
        from sermo.config import build
        from sermo.data.labels import LabelSpace
        from sermo.systems import get_system

        self.config, self.folder = config, folder
        self.device = resolve_device(accelerator)
        where = folder or "bundle"
        try:
            sysdef = get_system(config.system)
            model_cfg = build(sysdef.config_cls, config.model, f"{where}: model")
            # the model the config describes is laid out without memory first: a config edited to a
            # width of 10^9 is refused before anything that size is allocated
            check_shapes(lambda: sysdef.model_for(config.row, model_cfg, config.spec), weights, where)
            self.model = sysdef.model_for(config.row, model_cfg, config.spec)
        except BundleError:
            raise
        except (KeyError, ValueError, OSError, RuntimeError, TypeError) as exc:
            raise BundleError(f"{where}: the config does not describe a model sermo can build ({exc})") from exc
        try:
            missing, unexpected = self.model.load_state_dict(weights, strict=False)
        except RuntimeError as exc:  # a tensor of another shape than the config's model has
            first = next((ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln), str(exc)[:200])
            raise BundleError(f"{where}: the weights do not fit the model its config describes ({first}); was the "
                              "bundle edited?") from None
        if missing or unexpected:
            raise BundleError(f"{where}: the weights do not fit the model (missing {list(missing)[:3]}, "
                              f"unexpected {list(unexpected)[:3]}); was the bundle edited?")
        self.model.eval().to(self.device)
        self.trained_on = dict(config.trained_on)
        self.caveat = SYNTHETIC_CAVEAT if self.trained_on.get("builtin") else None
        self.space = LabelSpace.from_dict(config.label_space)
        self.scale = (float(config.label_scale[0]), float(config.label_scale[1])) if config.label_scale else None
        self.modalities = list(config.modalities)
        self.inputs = inputs = config.spec.inputs
        self.tokenizer = None
        try:  # what a bundle names is data from elsewhere: anything that cannot be loaded names the bundle
            self.audio_encoder = self._encoder(inputs.audio)
            self.text_encoder = self._encoder(inputs.text)
            if inputs.tokens:
                from sermo.encoders.registry import checkpoint_folder
                from sermo.encoders.text import TextTokenizer

                self.tokenizer = TextTokenizer(checkpoint_folder(inputs.tokens)[1], max_tokens=inputs.max_tokens)
        except (OSError, ValueError, RuntimeError, TypeError, KeyError, AttributeError) as exc:
            what = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise BundleError(f"{where}: an encoder or tokenizer it names cannot be loaded here ({what})") from None
        # models that read a speaker embedding get the utterance's own (no speaker is known)
        self.speaker_encoder = self._encoder(FeatureInput("resemblyzer", None, 1, 256)) if inputs.speaker else None
        engine = config.transcripts or "oracle"
        from sermo.encoders.asr import DEFAULT_ASR

        self.asr_engine = asr or (engine if engine != "oracle" else DEFAULT_ASR)
        self._asr: Any = None
        if self.caveat:  # once the bundle has loaded whole
            import warnings

            warnings.warn(f"{where}: {self.caveat}", stacklevel=3)

    @classmethod
    def from_pretrained(cls, path: str | Path, *, asr: str | None = None, accelerator: str = "auto") -> "Predictor":
        """Load a bundle folder (``<run>/bundles/<row>``); nothing in it is executed or unpickled.

        Args:
            path: the bundle folder.
            asr: the ASR engine for models that read text when no transcript is given
                (default: the one the model was trained with; whisper-tiny.en for oracle transcripts).
            accelerator: ``auto`` (the GPU when there is one), ``cpu`` or ``gpu``.

        Raises:
            BundleError: not a bundle, or a config / weights that do not fit together.
        """
        from sermo.data.bundle import read_bundle

        config, weights = read_bundle(path)
        return cls(config, weights, asr=asr, folder=str(path), accelerator=accelerator)

    def _encoder(self, entry: FeatureInput | None):
        """The frozen encoder of a feature input, warning when its weights are not the ones the
        model was trained on."""
        from sermo.encoders import get_encoder

        if entry is None:
            return None
        enc = get_encoder(entry.encoder, layers=entry.layers, dtype=entry.dtype, device=str(self.device),
                          padding=entry.padding)
        if entry.weights is not None and enc.identity.weights != entry.weights:
            import warnings

            warnings.warn(f"the encoder {entry.encoder!r} here has other weights than the one the model was "
                          "trained with: predictions may be off", stacklevel=3)
        return enc

    # -- inputs ---------------------------------------------------------------------------

    def _transcribe(self, wave: np.ndarray) -> str:
        if self._asr is None:
            from sermo.encoders.asr import get_asr

            self._asr = get_asr(self.asr_engine, device=str(self.device))
        return str(self._asr.transcribe(wave))

    def _as_waves(self, audio, sampling_rate) -> list[tuple[str, np.ndarray]]:
        items = audio if isinstance(audio, (list, tuple)) else [audio]
        out = []
        for i, item in enumerate(items):
            if isinstance(item, (str, Path)):
                name, wave = str(item), load_audio(item)
            else:
                if sampling_rate is None:
                    raise ValueError("predict() got an array without sampling_rate: pass sampling_rate=16000 (or "
                                     "the array's rate)")
                name = f"array[{i}]"
                wave = prepare_waveform(item, int(sampling_rate), name=name)
            check_duration(name, wave)
            out.append((name, wave))
        return out

    @property
    def window_seconds(self) -> float | None:
        """The most audio the model reads at once (``None``: no limit): its ``max_frames`` of
        audio features, or the seconds of waveform it was trained on."""
        spec = self.inputs
        limits = []
        if spec.audio is not None and spec.audio.frame_rate:
            limits.append(spec.max_frames / float(spec.audio.frame_rate))
        if spec.wave and spec.max_wave_seconds:
            limits.append(float(spec.max_wave_seconds))
        return min(limits) if limits else None

    def _windows(self, source: str, wave: np.ndarray, transcript) -> list[np.ndarray]:
        """``wave`` in equal windows the model reads whole (one when it fits)."""
        limit = self.window_seconds
        if limit is None or len(wave) <= limit * SAMPLE_RATE:
            return [wave]
        if transcript is not None:
            raise AudioError(source, f"{len(wave) / SAMPLE_RATE:.1f} s of audio is longer than the {limit:g} s the "
                                     "model reads at once, and one transcript cannot be split across windows: leave "
                                     "the transcript out (each window is transcribed) or cut the audio (sermo predict "
                                     "--segment)")
        return list(np.array_split(wave, int(np.ceil(len(wave) / (limit * SAMPLE_RATE)))))

    @torch.inference_mode()
    def _run(self, waves: list[np.ndarray], transcripts: list[str | None]) -> tuple[list[dict], list[tuple]]:
        """Model outputs for 16 kHz waveforms; returns per-item dicts and the transcripts used."""
        from sermo.features.pipeline import GivenUtterances, SpeakerEmbeddings, UtteranceDataset, collate_for
        from sermo.features.source import LiveFeatures

        n = len(waves)
        used: list[tuple] = [(None, None)] * n
        if self.inputs.needs_transcript:
            used = [(t, "given") if t is not None else (self._transcribe(w), f"asr:{self.asr_engine}")
                    for w, t in zip(waves, transcripts)]
        ids = [str(i) for i in range(n)]
        utterances = GivenUtterances(dict(zip(ids, waves)), {u: t for u, (t, _) in zip(ids, used)})
        spec = self.inputs
        pool = spec.audio.pool if spec.audio is not None else 1
        live = lambda enc: LiveFeatures(enc, utterances, pool=pool) if enc is not None else None  # noqa: E731
        dataset = UtteranceDataset(
            ids, utterances=utterances, audio=live(self.audio_encoder), text=live(self.text_encoder), wave=spec.wave,
            tokenizer=(spec.tokens, self.tokenizer) if self.tokenizer is not None and spec.tokens else None,
            speaker=SpeakerEmbeddings(live(self.speaker_encoder)) if self.speaker_encoder is not None else None,
            max_frames=spec.max_frames, max_tokens=spec.max_tokens)
        out = self.model(collate_for(dataset)(dataset.__getitems__(list(range(n)))).to(self.device))
        results = []
        for i in range(n):
            r: dict = {}
            if out.dims is not None and out.dims.shape[1] == 3:
                d = out.dims[i].float().clamp(0.0, 1.0).cpu().numpy()  # never off the stated scale
                lo, hi = self.scale or (0.0, 1.0)
                r.update(zip(("arousal", "valence", "dominance"), (float(lo + v * (hi - lo)) for v in d)))
            if out.logits is not None:
                p = torch.softmax(out.logits[i].float(), dim=-1).cpu().numpy()
                r["categories"] = {c: float(v) for c, v in zip(self.space.classes, p)}
                r["category"] = self.space.classes[int(p.argmax())]
            results.append(r)
        return results, used

    # -- public ---------------------------------------------------------------------------

    def predict(self, audio, sampling_rate: int | None = None, transcript=None, *, batch_size: int = 8):
        """Emotion for a path, an array, or a list of them.

        Args:
            audio: a file path, a waveform array (with ``sampling_rate``), or a list of either.
            sampling_rate: the arrays' rate (files carry their own).
            transcript: the words spoken (a string, or a list matching ``audio``); models that
                read text transcribe with their ASR engine when it is missing or blank (as the
                service does with an empty form field).
            batch_size: inputs per model call.

        Returns:
            One :class:`Prediction` for a single input; a pandas DataFrame (one row per input)
            for a list.

        Raises:
            AudioError: an unreadable file or a bad array (the message names it).
        """
        single = not isinstance(audio, (list, tuple))
        items = self._as_waves(audio, sampling_rate)
        texts = transcript if isinstance(transcript, (list, tuple)) else [transcript] * len(items)
        if len(texts) != len(items):
            raise ValueError(f"{len(texts)} transcripts for {len(items)} inputs")
        texts = [t if isinstance(t, str) and t.strip() else None for t in texts]  # blank: not given
        preds = []
        for k in range(0, len(items), batch_size):
            chunk = items[k:k + batch_size]
            preds += self._predictions([s for s, _ in chunk], [w for _, w in chunk], texts[k:k + batch_size],
                                       batch_size=batch_size)
        if single:
            return preds[0]
        import pandas as pd

        return pd.DataFrame([p.flat() for p in preds])

    def _predictions(self, sources, waves, texts, spans=None, batch_size: int = 8) -> list[Prediction]:
        pieces = [(j, x) for j, (src, w, t) in enumerate(zip(sources, waves, texts)) for x in self._windows(src, w, t)]
        results: list[dict] = []
        used: list[tuple] = []
        for k in range(0, len(pieces), batch_size):
            part = pieces[k:k + batch_size]
            r, u = self._run([x for _, x in part], [texts[j] for j, _ in part])
            results += r
            used += u
        out = []
        for j, (src, w) in enumerate(zip(sources, waves)):
            mine = [i for i, (owner, _) in enumerate(pieces) if owner == j]
            joined = combine([results[i] for i in mine], [len(pieces[i][1]) for i in mine])
            words = [used[i][0] for i in mine if used[i][0]]
            start, end = spans[j] if spans else (None, None)
            out.append(Prediction(source=src, scale=self.scale, modalities=self.modalities,
                                  transcript=" ".join(words) if words else used[mine[0]][0],
                                  transcript_source=used[mine[0]][1], start=start, end=end,
                                  duration=len(w) / SAMPLE_RATE, windows=len(mine), **joined))
        return out

    def predict_long(self, path: str | Path, *, max_seconds: float = 10.0, batch_size: int = 8,
                     aggressiveness: int = 2) -> tuple[list[Prediction], dict]:
        """A long recording, segmented by voice activity into utterances of at most
        ``max_seconds``; memory stays bounded by the segment length, not the file's.

        Returns:
            ``(per-segment predictions with start and end, summary)``; the summary holds the
            duration-weighted means of the dimensions and category probabilities, the
            dominant category, the number of segments and the speech seconds.
        """
        from sermo.serving.segment import speech_segments

        preds: list[Prediction] = []
        pending: list[tuple[float, float, np.ndarray]] = []
        for seg in speech_segments(path, max_seconds=max_seconds, aggressiveness=aggressiveness):
            pending.append(seg)
            if len(pending) == batch_size:
                preds += self._segment_batch(str(path), pending)
                pending = []
        if pending:
            preds += self._segment_batch(str(path), pending)
        return preds, summarise(preds)

    def _segment_batch(self, source: str, segs) -> list[Prediction]:
        return self._predictions([source] * len(segs), [w for _, _, w in segs], [None] * len(segs),
                                 spans=[(round(s, 3), round(e, 3)) for s, e, _ in segs])


MIN_SECONDS = 0.25
"""The shortest audio a prediction is made for: below it there is no utterance to judge."""


def check_duration(source: str, wave: np.ndarray) -> None:
    """Raise :class:`AudioError` for audio shorter than :data:`MIN_SECONDS`."""
    if len(wave) < MIN_SECONDS * SAMPLE_RATE:
        raise AudioError(source, f"is {len(wave) / SAMPLE_RATE:.3f} s long; a prediction needs at least "
                                 f"{MIN_SECONDS:g} s of audio")


def combine(results: list[dict], weights) -> dict:
    """The outputs of a recording's windows as one: dimensions and category probabilities
    averaged weighted by the windows' lengths."""
    if len(results) == 1:
        return results[0]
    w = np.asarray(weights, dtype=float)
    out: dict = {}
    for d in ("arousal", "valence", "dominance"):
        if d in results[0]:
            out[d] = float(np.average([r[d] for r in results], weights=w))
    if "categories" in results[0]:
        classes = list(results[0]["categories"])
        probs = np.average([[r["categories"][c] for c in classes] for r in results], axis=0, weights=w)
        out["categories"] = {c: float(v) for c, v in zip(classes, probs)}
        out["category"] = classes[int(np.argmax(probs))]
    return out


def summarise(preds: list[Prediction]) -> dict:
    """Duration-weighted means over segments, the dominant category, counts."""
    if not preds:
        return {"segments": 0, "speech_seconds": 0.0}
    out: dict = {"segments": len(preds), "speech_seconds": round(float(sum(p.duration for p in preds)), 2)}
    fields = ("arousal", "valence", "dominance", "categories", "category")
    outputs = [{k: getattr(p, k) for k in fields if getattr(p, k) is not None} for p in preds]
    out.update(combine(outputs, [p.duration for p in preds]))
    out["scale"] = list(preds[0].scale) if preds[0].scale else None
    return out
