"""The ``model`` section of the distilled recipe."""

from __future__ import annotations

from dataclasses import dataclass, field

from sermo.config import setting

MODES = ("frozen", "ft", "ft_frz")


@dataclass
class DistilledConfig:
    """Model section of the distilled recipe.

    Attributes:
        speech_encoders: the speech encoders compared (one audio and one audio+text row each).
        speech_layers: hidden states of each speech encoder the models read (paper: the last).
        text: whether to train the ``+text`` rows.
        mode: ``frozen`` (encoders fixed, head trained), ``ft`` (encoders fine-tuned, the CNN
            front end frozen; an encoder that is not a transformers model, such as log-mel,
            stays what it is) or ``ft_frz`` (the audio-only model fine-tuned, then frozen beside a
            frozen text encoder while a new head is trained).
        finetune_layers: top transformer layers fine-tuned in ``ft`` (``None``: all).
        text_finetune_layers: the same for the text encoder.
        speech_from_store: when only the top speech layers are fine-tuned (``finetune_layers``),
            feed them the stored hidden state below them, where the encoder can (Whisper).
        text_from_store: when only the top text layers are fine-tuned, feed them the stored
            hidden state below them instead of running the frozen layers again (the same
            result up to the store's float16; much faster).
        hidden: width of the feed-forward network's hidden layer.
        pooling: how the mean and the max over the sequence combine: ``sum`` (the paper's pooled
            ``P_A`` has the encoder's width ``d_A``, so they are added) or ``concat`` (``2 d_A``).
        dropout: dropout throughout (paper: 0.1).
        compare_ft_frz: with ``mode: ft``, also train ``<encoder>+text@ft_frz`` (Figure 3).
        layer_importance: run the layer-importance analysis (Figure 2).
        importance_encoders: encoders analysed (``None``: every speech encoder with more than
            one hidden state, and the text encoder).
        importance_epochs: epochs of each layer-importance model (``None``: train.epochs).
        transcript_engines: ASR engines of the transcript-robustness table (Table 2); one that
            is unavailable here is listed with the reason.
        robustness_encoder: the speech encoder of that table (``None``: the last one listed).
        robustness_utterances: transcribe at most this many utterances of the fold for it
            (``None``: all; pocketsphinx takes about a second per utterance).
        analysis_folds: the analyses run on this many folds (the first ones).
        task: what the models predict: ``dims`` (A/V/D with the CCC loss: the paper's), ``category``
            (the label space's classes with cross-entropy, for a corpus with categories only; the
            per-dimension analyses, Figure 2 and Table 2, are then left out) or ``auto`` (``dims``
            when the fold's training split has any A/V/D value, ``category`` otherwise).
    """

    speech_encoders: list[str] = field(default_factory=lambda: ["wav2vec2-large-robust-12", "hubert-base",
                                                                "distilhubert"])
    speech_layers: list[int] | None = field(default_factory=lambda: [-1])
    text: bool = True
    mode: str = setting("ft", choices=("ft", "frozen", "ft_frz"))
    finetune_layers: int | None = setting(None, min=0)
    text_finetune_layers: int | None = setting(None, min=0)
    text_from_store: bool = True
    speech_from_store: bool = True
    hidden: int = setting(256, min=1)
    pooling: str = setting("sum", choices=("sum", "concat"))
    dropout: float = setting(0.1, min=0, lt=1)
    compare_ft_frz: bool = True
    layer_importance: bool = True
    importance_encoders: list[str] | None = None
    importance_epochs: int | None = setting(None, min=1)
    transcript_engines: list[str] = field(default_factory=lambda: ["whisper-base", "whisper-tiny", "pocketsphinx"])
    robustness_encoder: str | None = None
    robustness_utterances: int | None = setting(None, min=1)
    analysis_folds: int = setting(1, min=0)
    task: str = setting("auto", choices=("auto", "dims", "category"))
