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

from sermo.systems.api import SystemDef, register
from sermo.systems.distilled.config import DistilledConfig
from sermo.systems.distilled.model import build_model
from sermo.systems.distilled.report import finish
from sermo.systems.distilled.run import run_fold

PAPER = {
    "msp-podcast": {  # Table 1, seen scenarios (Test1), MSP-Podcast v1.10
        "wav2vec2-large-robust-12": {"ccc_arousal": 0.627, "ccc_valence": 0.470, "ccc_dominance": 0.521},
        "hubert-base": {"ccc_arousal": 0.608, "ccc_valence": 0.440, "ccc_dominance": 0.486},
        "distilhubert": {"ccc_arousal": 0.622, "ccc_valence": 0.328, "ccc_dominance": 0.513},
        "wav2vec2-large-robust-12+text": {"ccc_arousal": 0.619, "ccc_valence": 0.560, "ccc_dominance": 0.484},
        "hubert-base+text": {"ccc_arousal": 0.613, "ccc_valence": 0.532, "ccc_dominance": 0.493},
        "distilhubert+text": {"ccc_arousal": 0.614, "ccc_valence": 0.519, "ccc_dominance": 0.509},
    },
}

register(SystemDef(
    name="distilled", config_cls=DistilledConfig, run_fold=run_fold, build_model=build_model, paper=PAPER,
    finish=finish, order=2,
    title="Audio-textual distilled SSL models (de Oliveira, Prabhu, Gerkmann, Interspeech 2023)",
))
