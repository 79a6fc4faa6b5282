"""Building, feeding and naming the models of one distilled fold (rows and analyses share it)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from sermo.config import RunConfig
from sermo.encoders.base import EncoderError
from sermo.encoders.registry import encoder_shape, top_input
from sermo.systems.api import Analysis, FeatureRead, Reads, Row, layer_tuple
from sermo.systems.common import fold_task
from sermo.systems.distilled.model import DistilledModel


def label(name: str) -> str:
    """A row name for an encoder: the registry name, or a Hub id's / folder's last part."""
    return Path(name.rstrip("/")).name if "/" in name else name


def declare(cfg: RunConfig) -> list[Row]:
    """Per speech encoder, in the recipe's order: ``<encoder>`` (architecture ``audio``) and
    ``<encoder>+text`` in the recipe's mode (and, fine-tuning with ``compare_ft_frz``,
    ``<encoder>+text@ft_frz``), with what each reads. ``options`` name the row's speech encoder
    and how its text is read (``text_mode``); ``run_fold`` trains them."""
    m = cfg.model
    text_modes = [] if not m.text else ["ft_frz"] if m.mode == "ft_frz" else \
        [m.mode] + ["ft_frz"] * (m.mode == "ft" and m.compare_ft_frz)
    out = []
    for name in m.speech_encoders:
        speech = _speech_reads(cfg, name)
        out.append(Row(label(name), ("audio",), "audio", reads=Reads(other=speech), options={"speech_encoder": name}))
        for i, mode in enumerate(text_modes):
            row = label(name) + "+text" + ("@ft_frz" if i else "")
            reads = Reads(text=mode != "ft", other=speech + (_tuned_text(cfg) if mode == "ft" else ()))
            out.append(Row(row, ("audio", "text"), "audio+text", reads=reads,
                           options={"speech_encoder": name, "text_mode": mode}))
    return out


def analyses(cfg: RunConfig) -> list[Analysis]:
    """Layer importance (Figure 2: every hidden state of each encoder, one model per dimension)
    and transcript robustness (Table 2: the audio+text model once per transcript source)."""
    m, d = cfg.model, cfg.data
    out = []
    if m.layer_importance:
        names = m.importance_encoders or [*m.speech_encoders, *([d.text_encoder] if m.text and d.text_encoder else [])]
        out.append(Analysis("layer_importance.json", tuple(FeatureRead(n, None, readers=3) for n in names)))
    if m.text and m.transcript_engines and d.text_encoder and m.speech_encoders:
        sources = 1 + len(m.transcript_engines)
        name = m.robustness_encoder or m.speech_encoders[-1]
        text = (FeatureRead(d.text_encoder, layer_tuple(d.text_layers)),) if m.mode != "ft" else _tuned_text(cfg)
        out.append(Analysis("transcripts.json", tuple(replace(read, readers=sources)
                                                      for read in _speech_reads(cfg, name) + text)))
    return out


def _speech_reads(cfg: RunConfig, name: str) -> tuple[FeatureRead, ...]:
    """What a row of speech encoder ``name`` reads: its frozen features, the state below its
    fine-tuned top layers (``speech_from_store``, where the encoder runs them apart), or nothing
    stored (samples through the whole encoder)."""
    m = cfg.model
    if m.mode == "frozen":
        return (FeatureRead(name, layer_tuple(m.speech_layers)),)
    below = top_input(name, m.finetune_layers, m.speech_layers) if m.speech_from_store else None
    if below is None:
        return ()
    return (FeatureRead(name, (below,), pooled=cfg.data.pool_finetuned, what="speech below the tuned layers"),)


def _tuned_text(cfg: RunConfig) -> tuple[FeatureRead, ...]:
    """What a row with a fine-tuned text encoder reads: the stored state below its tuned top
    layers (``text_from_store``), else nothing stored (token ids through the whole encoder)."""
    m, d = cfg.model, cfg.data
    if m.text_finetune_layers is None or not m.text_from_store or not d.text_encoder:
        return ()
    try:
        below = encoder_shape(d.text_encoder)[0] - 1 - m.text_finetune_layers
    except EncoderError:  # not here: the row says so when it runs
        return ()
    return (FeatureRead(d.text_encoder, (below,), what="text below the tuned layers"),)


class Rows:
    """Builds, trains and predicts the models of one fold (shared by the rows and analyses)."""

    def __init__(self, ctx):
        self.ctx, self.cfg = ctx, ctx.cfg.model
        self.task = fold_task(ctx, self.cfg.task)  # dims (the paper's), or categories on a corpus with no A/V/D

    def speech(self, name: str):
        """A fresh trainable copy of speech encoder ``name`` in ``ft`` mode, else ``None``."""
        if self.cfg.mode == "frozen":
            return None
        layers = "all" if self.cfg.finetune_layers is None else self.cfg.finetune_layers
        return self.ctx.trainable_encoder("speech", name, layers=layers)[0]

    def speech_top(self, speech) -> int | None:
        """How many top layers of a fine-tuned speech encoder run on the stored state below them
        (``speech_from_store``, where the encoder can: Whisper); ``None``: samples through all of it."""
        k, layers = self.cfg.finetune_layers, self.cfg.speech_layers
        if (speech is None or not self.cfg.speech_from_store or k is None or not speech.runs_top
                or not 0 < k < speech.num_hidden_states - 1 or layers is None or not all(-k - 1 <= i < 0 for i in layers)):
            return None
        return k

    def speech_source(self, name: str, speech):
        """What a row of speech encoder ``name`` reads: its stored features (frozen), the stored
        state below its fine-tuned top layers, or ``"wave"`` (samples through the whole encoder)."""
        if speech is None:
            return self.ctx.features(name, self.cfg.speech_layers)
        top = self.speech_top(speech)
        # the fine-tuned layers read the state below them frame by frame (unless data.pool_finetuned)
        return self.ctx.features(name, [speech.num_hidden_states - 1 - top],
                                 pooled=self.ctx.cfg.data.pool_finetuned) if top else "wave"

    def text_plan(self, *, trainable: bool, manifest=None) -> dict:
        """How a row reads text: ``{"src": FeatureSource | None, "model": TextSSL | None,
        "top": k | None, "tokens": TextSSL | None}``.

        Frozen (or no trainable copy here): the stored features. Fine-tuned in full: token ids
        through the whole encoder. Fine-tuned top k layers (``text_finetune_layers``) with
        ``text_from_store``: the stored hidden state below them through those k layers only
        (the frozen layers underneath give the same output every epoch). ``manifest``: the
        transcripts (default: the run's).
        """
        ctx, cfg = self.ctx, self.cfg
        frozen = {"src": self.text_source(ctx.cfg.data.text_layers, manifest), "model": None, "top": None,
                  "tokens": None}
        if not trainable:
            return frozen
        k = cfg.text_finetune_layers
        enc, _ = ctx.trainable_encoder("text", layers="all" if k is None else k)
        if enc is None:
            return frozen
        if k is not None and cfg.text_from_store:
            below = enc.num_hidden_states - 1 - k
            return {"src": self.text_source([below], manifest), "model": enc, "top": k, "tokens": None}
        return {"src": None, "model": enc, "top": None, "tokens": enc}

    def text_source(self, layers, manifest=None):
        """Stored text features of the recipe's text encoder (for ``manifest``'s transcripts)."""
        return self.ctx.features(self.ctx.cfg.data.text_encoder, layers, manifest=manifest)

    def build(self, stage: str, *, audio_src=None, text: dict | None = None, speech=None,
              targets=(0, 1, 2), audio_stream=None) -> DistilledModel:
        """A row's model; ``audio_stream``: an already trained speech stream to use (frozen) in
        place of a new one (the FT=>FRZ comparison)."""
        ctx = self.ctx
        ctx.seed(stage)
        text = text or {}
        src, text_model = text.get("src"), text.get("model")
        if isinstance(audio_src, str):  # samples, through the whole fine-tuned encoder
            audio_src = None
        model = DistilledModel(audio=(audio_src.num_layers, audio_src.dim) if audio_src is not None else None,
                               text=(src.num_layers, src.dim) if src is not None else None,
                               cfg=self.cfg, speech=speech, text_model=text_model, text_top=text.get("top"),
                               targets=targets, speech_top=self.speech_top(speech), audio_stream=audio_stream,
                               task=self.task, num_classes=ctx.num_classes, lr_scale=ctx.cfg.train.encoder_lr_scale)
        if audio_stream is None and model.audio is not None and speech is None:
            model.audio.norm.set(*ctx.feature_stats(audio_src))
        if model.text is not None and text_model is None:
            model.text.norm.set(*ctx.feature_stats(src))
        return model

    def data(self, split: str, *, audio_src=None, text: dict | None = None, wave=False, transcripts=None,
             ids=None):
        """A split's dataset: stored features, or waveforms / token ids for trainable encoders."""
        text = text or {}
        wave = wave or isinstance(audio_src, str)
        return self.ctx.dataset(split, audio=False if wave else (audio_src or False), text=text.get("src") or False,
                                wave=wave, tokens=text.get("tokens"), transcripts=transcripts, ids=ids)
