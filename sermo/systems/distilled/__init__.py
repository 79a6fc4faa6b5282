"""``distilled``: audio-textual distilled SSL models (paper 001).

de Oliveira, Prabhu, Gerkmann, Interspeech 2023. A speech encoder's frames and, optionally,
a text encoder's tokens are each pooled by the mean and the max over the sequence
(concatenated); the pooled vectors are concatenated and a feed-forward network (two linear
layers with tanh between, dropout 0.1) predicts arousal, valence and dominance on [0, 1]
with the loss 1 - CCC averaged over the three.

Rows per fold, for every speech encoder of the recipe: ``<encoder>`` (audio only) and
``<encoder>+text`` in the recipe's mode (``frozen``, ``ft`` or ``ft_frz``); with ``ft`` also
``<encoder>+text@ft_frz`` for the fine-tune vs freeze comparison (Figure 3). On the first
fold(s) two analyses run: layer importance (Figure 2: one frozen model per dimension with a
softmax weight per hidden state) and transcript robustness (Table 2: the audio+text model
with oracle and with each ASR engine's transcripts, and the engine's WER).
"""

from __future__ import annotations

from sermo.systems.definition import Deviation, SystemDef, register
from sermo.systems.common import FINETUNED_AUDIO_CAP, FINETUNED_MASKING
from sermo.systems.distilled.config import DistilledConfig
from sermo.systems.distilled.model import build_model
from sermo.systems.distilled.report import finish
from sermo.systems.distilled.rows import analyses, declare
from sermo.systems.distilled.run import run_fold

PAPER = {
    "msp-podcast": {  # Table 1, seen scenarios (Test1), MSP-Podcast v1.10; #params in millions (all weights)
        "wav2vec2-large-robust-12": {"ccc_arousal": 0.627, "ccc_valence": 0.470, "ccc_dominance": 0.521,
                                     "#params (M)": 165},
        "hubert-base": {"ccc_arousal": 0.608, "ccc_valence": 0.440, "ccc_dominance": 0.486, "#params (M)": 95},
        "distilhubert": {"ccc_arousal": 0.622, "ccc_valence": 0.328, "ccc_dominance": 0.513, "#params (M)": 24},
        "wav2vec2-large-robust-12+text": {"ccc_arousal": 0.619, "ccc_valence": 0.560, "ccc_dominance": 0.484,
                                          "#params (M)": 180},
        "hubert-base+text": {"ccc_arousal": 0.613, "ccc_valence": 0.532, "ccc_dominance": 0.493,
                             "#params (M)": 109},
        "distilhubert+text": {"ccc_arousal": 0.614, "ccc_valence": 0.519, "ccc_dominance": 0.509,
                              "#params (M)": 39},
    },
    "msp-podcast/test2": {  # Table 1, unseen scenarios (Test2)
        "wav2vec2-large-robust-12": {"ccc_arousal": 0.462, "ccc_valence": 0.263, "ccc_dominance": 0.390},
        "hubert-base": {"ccc_arousal": 0.388, "ccc_valence": 0.225, "ccc_dominance": 0.344},
        "distilhubert": {"ccc_arousal": 0.470, "ccc_valence": 0.169, "ccc_dominance": 0.395},
        "wav2vec2-large-robust-12+text": {"ccc_arousal": 0.469, "ccc_valence": 0.347, "ccc_dominance": 0.353},
        "hubert-base+text": {"ccc_arousal": 0.461, "ccc_valence": 0.315, "ccc_dominance": 0.396},
        "distilhubert+text": {"ccc_arousal": 0.475, "ccc_valence": 0.333, "ccc_dominance": 0.392},
    },
}

DEVIATIONS = (
    Deviation("w2v2-L-robust(p) is facebook/wav2vec2-large-robust pruned here to its first 12 transformer layers.",
              "The paper takes the pruned model of its reference [9], which may carry that work's own training.",
              "The large baseline may differ from the paper's; the distilled rows are as published."),
    Deviation("The mean and the max over the sequence are added (the pooled vector keeps the encoder's width).",
              "The paper gives the pooled width d_A but not how the two poolings combine.", "None expected."),
    Deviation("At most 30 epochs with early stopping after 5 without improvement of the validation loss.",
              "The paper uses early stopping but gives neither.", "None expected.", profiles=("paper",)),
    Deviation("The FFN's hidden layer has 256 units.", "The paper gives 'two fully-connected layers' with tanh, "
              "not their width.", "Every row has the same head; absolute numbers may move a little."),
    Deviation("Early stopping and the best epoch read the validation loss (1 - CCC per batch of 16, averaged), "
              "not the CCC of the whole development set.", "The paper only says 'early stopping'; the loss is "
              "what it trains on (train.select: metrics picks on the development CCC instead).",
              "Selection is a little noisier; every row selects alike."),
    Deviation("The transcript-robustness table (paper Table 2) adds pocketsphinx beside the Whisper engines "
              "and transcribes every usable utterance.", "A light engine the paper does not have shows how far "
              "transcripts may degrade; model.robustness_utterances bounds the cost (pocketsphinx runs about "
              "1 s per utterance on a CPU core).", "Adds a row; the paper's rows are unchanged.",
              profiles=("paper",)),
    FINETUNED_AUDIO_CAP,
    FINETUNED_MASKING,
    Deviation("#params counts trainable weights (frozen CNN front ends excluded); the paper counts all.",
              "Trainable weights are what fine-tuning costs.", "The column reads lower than the paper's."),
)


def comparisons(cfg) -> list:
    """Per speech encoder: the text's gain in valence (Table 1), in FT and in FT=>FRZ (Figure 3)."""
    from sermo.systems.distilled.rows import label

    out = []
    for name in cfg.model.speech_encoders:
        row = label(name)
        out += [(row, row + "+text", "ccc_valence"), (row, row + "+text@ft_frz", "ccc_valence"),
                (row, row + "+text", "ccc_arousal")]
        # in UA where the rows predict categories (a corpus with categories only; left out otherwise)
        out += [(row, row + "+text", "ua"), (row, row + "+text@ft_frz", "ua")]
    return out

register(SystemDef(
    name="distilled", config_cls=DistilledConfig, run_fold=run_fold, build_model=build_model, paper=PAPER,
    finish=finish, order=2, targets=("dims", "category"), declare=declare, analyses=analyses, deviations=DEVIATIONS,
    comparisons=comparisons,
    title="Audio-textual distilled SSL models (de Oliveira, Prabhu, Gerkmann, Interspeech 2023)",
))
