"""The ``model`` section of the cross_representation recipe, and the system's constants."""

from __future__ import annotations

from dataclasses import dataclass, field

from sermo.config import RunConfig, setting
from sermo.systems.api import FeatureRead, Reads, Row, layer_tuple

ROWS = ("speech_small", "speech_large", "speech_mel_input", "text", "fusion")
SPEECH_ROWS = {"speech_small": ("small", "features"), "speech_large": ("large", "features"),
               "speech_mel_input": ("small", "mel")}
NUM_PHONES = 128
SPEAKER_DIM = 256
MEL_BINS = 80


@dataclass
class CrossRepresentationConfig:
    """Model section of the cross_representation recipe.

    Attributes:
        rows: rows to train (see ``ROWS``); ``fusion`` needs ``text`` and ``fusion_speech``.
        bottlenecks: ``name -> [d, f]``: BLSTM units per direction and downsampling factor
            (paper: small 8, 48; large 128, 2).
        segment: frames per training crop and per inference chunk (paper: 96).
        speech_subsample: average every n input frames first (the mel target follows).
        mel_encoder: the encoder whose output is the reconstruction target and the input of
            ``speech_mel_input`` (80-bin log-mel).
        channels, encoder_convs, encoder_lstm_layers, kernel: the encoder's ConvNorm layers and BLSTMs.
        decoder_lstm1, decoder_convs, decoder_lstm2, decoder_lstm2_layers: the decoder.
        postnet_convs, postnet_channels: the postnet.
        phone_dim: the phone encoder's output width.
        classifier: hidden widths of the emotion classifier on the flattened codes.
        dropout: dropout in the classifier and the text CNN.
        speaker_utterances: utterances averaged per speaker embedding (paper: 100).
        text_filters, text_kernel: the text CNN (one ConvNorm layer per filter count).
        text_encoders: further text encoders for Table 4, one row ``text@<name>`` each.
        text_epochs, text_batch_size, text_lr: the text model's training (default: the train section).
        speech_iterations, text_iterations: train for about this many optimizer steps (paper: 1M
            speech steps at batch 2, 412,800 text steps at batch 4): the epochs are derived per fold,
            ``ceil(iterations x batch / training utterances)`` (``None``: the epochs as given).
        fusion_speech: the speech row fused with ``text``.
        fusion_grid: the values tried for each of ``w1`` and ``w2``.
        probe: hidden widths of the speaker-identification probe (paper: 2048, 1024, 1024).
        probe_epochs, probe_lr, probe_share: its training and the share of each speaker's
            utterances it trains on (paper: 80%).
        probe_folds: the probe runs on this many folds.
    """

    rows: list[str] = field(default_factory=lambda: list(ROWS))
    bottlenecks: dict[str, list[int]] = field(default_factory=lambda: {"small": [8, 48], "large": [128, 2]})
    segment: int = setting(96, min=1)
    speech_subsample: int = setting(1, min=1)
    mel_encoder: str = "logmel"
    channels: int = setting(512, min=1)
    encoder_convs: int = setting(3, min=1)
    encoder_lstm_layers: int = setting(2, min=1)
    kernel: int = setting(5, min=1)
    decoder_lstm1: int = 512
    decoder_convs: int = 3
    decoder_lstm2: int = 1024
    decoder_lstm2_layers: int = 2
    postnet_convs: int = 5
    postnet_channels: int = 512
    phone_dim: int = setting(64, min=1)
    classifier: list[int] = setting(default_factory=lambda: [256], min=1)
    dropout: float = setting(0.2, min=0, lt=1)
    speaker_utterances: int = setting(100, min=1)
    text_filters: list[int] = field(default_factory=lambda: [256, 256])
    text_kernel: int = setting(3, min=1)
    text_encoders: list[str] = field(default_factory=list)
    text_epochs: int | None = setting(None, min=1)
    text_batch_size: int | None = setting(None, min=1)
    text_lr: float | None = setting(None, gt=0)
    speech_iterations: int | None = setting(None, min=1)
    text_iterations: int | None = setting(None, min=1)
    fusion_speech: str = "speech_small"
    fusion_grid: list[float] = setting(default_factory=lambda: [round(0.1 * i, 1) for i in range(11)], min=0, max=1)
    probe: list[int] = setting(default_factory=lambda: [2048, 1024, 1024], min=1)
    probe_epochs: int = setting(30, min=1)
    probe_lr: float = setting(1e-4, gt=0)
    probe_share: float = setting(0.8, gt=0, lt=1)
    probe_folds: int = setting(5, min=0)


def declare(cfg: RunConfig) -> list[Row]:
    """The recipe's speech rows, ``text``, ``text@<encoder>`` per Table 4 encoder, then
    ``fusion``, with what each reads: every speech row reads the mel spectrogram (its target, the
    mel-input row's input too) and the speaker embeddings of the whole corpus; ``run_fold``
    trains them."""
    m, d = cfg.model, cfg.data
    layers = layer_tuple(d.text_layers)
    around = (FeatureRead(m.mel_encoder, None, what="mel target / input"),
              FeatureRead("resemblyzer", None, readers=0, corpus=True, what="speaker embeddings"))
    out = [Row(r, ("audio",), r, reads=Reads(audio=SPEECH_ROWS[r][1] == "features", other=around))
           for r in m.rows if r in SPEECH_ROWS]
    out += [Row("text", ("text",), "text", reads=Reads(text=True))] * ("text" in m.rows)
    out += [Row(f"text@{name}", ("text",), "text", reads=Reads(other=(FeatureRead(name, layers, what="text (Table 4)"),)))
            for name in m.text_encoders]
    out += [Row("fusion", ("audio", "text"), "fusion", reads=Reads())] * ("fusion" in m.rows)
    return out
