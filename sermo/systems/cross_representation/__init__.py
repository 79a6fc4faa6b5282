"""``cross_representation``: speech features to mel spectrogram through a bottleneck, a CNN text
model, score fusion and a speaker-identification probe (paper 004).

Makiuchi, Uto, Shinoda, ASRU 2021. Speech: the encoder's hidden states are averaged with
learned weights normalised by their sum (Eq. 1), concatenated frame by frame with the
speaker's Resemblyzer embedding, passed through ConvNorm layers and BLSTMs of ``d`` units per
direction and downsampled by ``f`` (AutoVC: the forward half of every ``f``-th frame's output
at the end of its block, the backward half at its start). The decoder repeats each code ``f``
times and, with the speaker embedding and a phone encoder's output (one-hot phone ids from
forced alignment), reconstructs the 80-bin mel spectrogram (LSTM, ConvNorm layers, LSTMs,
linear 80, postnet); a classifier on the flattened codes gives the emotion.
``L = L_r1 + L_r2 + L_e``. Training uses random 96-frame crops; inference averages the class
probabilities of consecutive 96-frame chunks (the last zero-padded).

Text: a CNN over the token features of a frozen transformer (special tokens left out),
max-pooled, linear. Fusion: ``p_f = w1 p_s + w2 p_t`` with ``(w1, w2)`` picked on validation.

The phones only feed the decoder and the mel spectrogram is only a target, so a trained model
predicts from the speech features and a speaker embedding alone; new audio without a known
speaker uses its own utterance's embedding.
"""
from __future__ import annotations

import dataclasses

from torch import nn

from sermo.data.spec import ModelSpec
from sermo.systems.definition import Deviation, SystemDef, register
from sermo.systems.cross_representation.config import ROWS, SPEECH_ROWS, CrossRepresentationConfig, declare
from sermo.systems.cross_representation.model import CrossRepresentation
from sermo.systems.cross_representation.report import finish
from sermo.systems.cross_representation.run import plan_epochs, run_fold
from sermo.systems.cross_representation.text import TextCNN


def build_model(row: str, cfg: CrossRepresentationConfig, spec: ModelSpec) -> nn.Module:
    """A row's model for a bundle: a speech row's bottleneck model, or ``text`` (the architecture
    every text row records, ``text@<encoder>`` too)."""
    if row in SPEECH_ROWS:
        if spec.audio is None:
            raise ValueError(f"cross_representation row {row!r} reads audio features; its spec has none")
        d, f = cfg.bottlenecks[SPEECH_ROWS[row][0]]
        sub = int(spec.options.get("speech_subsample", cfg.speech_subsample))  # the mel row's own clock
        return CrossRepresentation(spec.audio, spec.num_classes, dataclasses.replace(cfg, speech_subsample=sub),
                                   d=d, f=f)
    if row == "text" and spec.text is not None:
        return TextCNN(spec.text, spec.num_classes, cfg)
    raise ValueError(f"cross_representation has no model for row {row!r}")


PAPER = {
    # Tables 1, 2, 4, 6 (IEMOCAP 4 classes, leave one session out). The paper swaps the names:
    # its "UA" is overall accuracy (WA here), its "WA" the mean recall (UA here).
    "iemocap": {
        "speech_small": {"wa": 0.701, "ua": 0.707}, "speech_large": {"wa": 0.681},
        "speech_mel_input": {"wa": 0.504}, "text": {"wa": 0.661, "ua": 0.670},
        "fusion": {"wa": 0.730, "ua": 0.735},
        # Table 4: the text model on each large Transformer's features (the paper's "UA": accuracy)
        "text@albert-large-v2": {"wa": 0.623}, "text@bert-large-cased": {"wa": 0.655},
        "text@bert-large-uncased-whole-word-masking": {"wa": 0.658}, "text@electra-large": {"wa": 0.566},
        "text@roberta-large": {"wa": 0.641}, "text@xlnet-large-cased": {"wa": 0.581},
    },
}

DEVIATIONS = (
    Deviation("Phones come from pocketsphinx forced alignment.", "The paper used Gentle (not a Python package).",
              "The decoder's phone input; the emotion features are the codes either way."),
    Deviation("Validation: 10% of the training sessions' dialogs (iemocap-loso-holdout); the fusion weights and "
              "the best epoch are picked on it.", "The paper trains on four sessions and does not say how it "
              "validated; it reports its best weights (0.6, 1).", "The validation dialogs share speakers with "
              "training and the speech model is speaker-conditioned, so it looks better there than on the "
              "speaker-independent test: the picked speech weight w1 may be higher than the test supports "
              "(Table 6's fusion, not the unimodal rows).", profiles=("paper",)),
    Deviation("The epochs of each row follow from the paper's iterations and the fold's training set.",
              "The paper gives iterations (1M speech, 412,800 text), not epochs.", "None.", profiles=("paper",)),
    Deviation("Layer sizes the paper shows only in its Figure 1: text CNN of two 256 x 3 ConvNorm layers, "
              "classifier [256] with dropout 0.2, phone encoder ConvNorm x 2 + BLSTM with one 256-d output per "
              "frame; the wav2vec layers and the mel target are standardised per dimension.", "The paper's text "
              "does not give them.", "Every speech row shares them; absolute numbers may move."),
    Deviation("Inputs are capped at data.max_frames (3,000) frames: 60 s of wav2vec 2.0, 30 s of log-mel.",
              "Bounds memory; the paper is silent.", "None on IEMOCAP (its longest utterance is about 34 s) but "
              "for the mel-input row's few longest utterances.", corpora=("iemocap",)),
    Deviation("The speaker probe is trained on chunk-level codes and scored on chunk probabilities averaged "
              "per utterance.", "The paper does not say.", "Table 3's absolute numbers; small vs large alike."),
    Deviation("The speaker probe trains 30 epochs at 1e-4.", "The paper does not say.",
              "Table 3's absolute numbers; small vs large compares alike."),
)

# the paper's headline metric is overall accuracy (its "UA", sermo's wa); the rows it gives both
# for are compared on mean recall too
COMPARISONS = (("speech_small", "fusion", "wa"), ("text", "fusion", "wa"), ("speech_large", "speech_small", "wa"),
               ("speech_mel_input", "speech_small", "wa"), ("text", "speech_small", "wa"),
               ("speech_small", "fusion", "ua"), ("text", "fusion", "ua"))

register(SystemDef(
    name="cross_representation", config_cls=CrossRepresentationConfig, run_fold=run_fold,
    build_model=build_model, rows=ROWS, paper=PAPER, finish=finish, order=5, targets=("category",),
    declare=declare, deviations=DEVIATIONS, comparisons=COMPARISONS, plan_epochs=plan_epochs,
    title="Cross-representation speech model, CNN text model and score fusion (Makiuchi et al., ASRU 2021)",
))
