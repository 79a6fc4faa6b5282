"""Predictions for new audio from a model bundle: ``Predictor.from_pretrained(path)`` with one
method per kind of input (``predict_signal``, ``predict_file``, ``predict_files``,
``predict_folder``; :class:`~sermo.serving.segment.Segmenter` for long recordings).

A bundle names the system, the row, exactly what its model reads and the label space and
scale (see :mod:`sermo.data.bundle`). The predictor rebuilds the model (from the system's
code, never from the bundle), turns audio (and a transcript, or the configured ASR engine's)
into the model's inputs through the same input pipeline training used
(:mod:`sermo.features.pipeline`, with live encoders in place of the feature store), and
returns typed results on the label scale the model was trained on. ``sermo export`` writes the
same model as ONNX graphs that :mod:`sermo.serving.runtime` runs without torch.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sermo.data.audio import SAMPLE_RATE, load_audio, prepare_waveform
from sermo.data.bundle import SYNTHETIC_CAVEAT, BundleConfig, BundleError, check_shapes
from sermo.data.spec import FeatureInput
from sermo.serving.core import (MIN_SECONDS, BasePredictor, Prediction, check_duration, combine,  # noqa: F401
                                outputs_to_result, summarise)


class Predictor(BasePredictor):
    """A trained sermo model ready to predict emotion for any audio.

    >>> p = Predictor.from_pretrained("runs/baselines/iemocap-demo/bundles/fusion")  # doctest: +SKIP
    >>> p.predict_file("speech.wav").valence  # doctest: +SKIP
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
            warnings.warn(f"the encoder {entry.encoder!r} here has other weights than the one the model was "
                          "trained with: predictions may be off", stacklevel=3)
        return enc

    # -- inputs ---------------------------------------------------------------------------

    def _transcribe(self, wave: np.ndarray) -> str:
        if self._asr is None:
            from sermo.encoders.asr import get_asr

            self._asr = get_asr(self.asr_engine, device=str(self.device))
        return str(self._asr.transcribe(wave))

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
        dims = out.dims.float().cpu().numpy() if out.dims is not None and out.dims.shape[1] == 3 else None
        probs = torch.softmax(out.logits.float(), dim=-1).cpu().numpy() if out.logits is not None else None
        return [outputs_to_result(dims[i] if dims is not None else None, probs[i] if probs is not None else None,
                                  self.scale, self.space.classes) for i in range(n)], used

    # -- the old polymorphic entry points, kept for one release ----------------------------

    def predict(self, audio, sampling_rate: int | None = None, transcript=None, *, batch_size: int = 8):
        """Deprecated: ``predict_file`` / ``predict_signal`` (one input) or ``predict_files``
        (several) say what they return. A path or array gives one :class:`Prediction`; a list
        gives a pandas DataFrame, one row per input."""
        warnings.warn("Predictor.predict is deprecated: use predict_file, predict_signal, predict_files or "
                      "predict_folder", DeprecationWarning, stacklevel=2)
        single = not isinstance(audio, (list, tuple))
        items = self._as_waves(audio, sampling_rate)
        texts = transcript if isinstance(transcript, (list, tuple)) else [transcript] * len(items)
        if len(texts) != len(items):
            raise ValueError(f"{len(texts)} transcripts for {len(items)} inputs")
        texts = [t if isinstance(t, str) and t.strip() else None for t in texts]  # blank: not given
        # every input is already in memory: the windows go through the model batch_size at a time
        preds = self._predictions([s for s, _ in items], [w for _, w in items], texts, batch_size=batch_size)
        if single:
            return preds[0]
        import pandas as pd

        return pd.DataFrame([p.flat() for p in preds])

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

    def predict_long(self, path: str | Path, *, max_seconds: float = 10.0, batch_size: int = 8,
                     aggressiveness: int = 2) -> tuple[list[Prediction], dict]:
        """Deprecated: ``Segmenter(max_seconds=...).predict_file(predictor, path)``."""
        from sermo.serving.segment import Segmenter

        warnings.warn("Predictor.predict_long is deprecated: use Segmenter(...).predict_file(predictor, path)",
                      DeprecationWarning, stacklevel=2)
        result = Segmenter(max_seconds, aggressiveness=aggressiveness, batch_size=batch_size).predict_file(self, path)
        return result.segments, result.summary
