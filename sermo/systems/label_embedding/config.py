"""The ``model`` section of the label_embedding recipe, and its row names."""

from __future__ import annotations

from dataclasses import dataclass, field

from sermo.config import RunConfig, setting
from sermo.systems.api import Analysis, FeatureRead, Reads, Row, layer_tuple

ROWS = ("text", "text_context", "text_context_le", "speech", "speech_2nd", "speech_le", "score_fusion", "le_mer",
        "fusion_ar_plus_al", "fusion_al_only", "fusion_ar_only")
FUSION = {"le_mer": "constraint", "fusion_ar_plus_al": "sum", "fusion_al_only": "al", "fusion_ar_only": "ar"}


@dataclass(frozen=True)
class Architecture:
    """What a row's model is: the modalities it reads, where it has label embeddings, its fusion.

    Attributes:
        text, speech: it reads the transcript / the speech.
        context: its text is the utterance with its dialog context (the previous turns).
        text_labels, speech_labels: it has the label embeddings ``L_t`` / ``L_s``.
        fusion: its cross-modal attention (``FUSION``), or ``None``.
        second_stage: a fine-tuned speech encoder starts from the 2nd stage of pre-training (B1,
            ``speech``, reads the encoder as published).
    """

    text: bool = False
    speech: bool = False
    context: bool = False
    text_labels: bool = False
    speech_labels: bool = False
    fusion: str | None = None
    second_stage: bool = True


_LE_MER = dict(text=True, speech=True, context=True, text_labels=True, speech_labels=True)
ARCHITECTURES = {
    "text": Architecture(text=True), "text_context": Architecture(text=True, context=True),
    "text_context_le": Architecture(text=True, context=True, text_labels=True),
    "speech": Architecture(speech=True, second_stage=False), "speech_2nd": Architecture(speech=True),
    "speech_le": Architecture(speech=True, speech_labels=True),
    **{row: Architecture(fusion=fusion, **_LE_MER) for row, fusion in FUSION.items()},
}
"""Every row that trains a model (``score_fusion`` combines two rows' predictions), by name: the
one table the run, the plan and the bundles read (no row name is parsed for what it is)."""
TEXT_INITS = ("tfidf", "label_words", "random")
SPEECH_INITS = ("codebook", "text", "random")


@dataclass
class LabelEmbeddingConfig:
    """Model section of the label_embedding recipe.

    Attributes:
        rows: rows to train (see ``ROWS``); ``score_fusion`` needs ``text_context_le`` and
            ``speech_le``.
        text_k: keywords per class for ``L_t`` (paper: 9).
        speech_k: units per class for ``L_s`` (paper: 100).
        units: k-means units learned on the training frames.
        text_init, speech_init: how the label embeddings start (A5: ``tfidf``; B5: ``codebook``).
        compare_inits: on the analysis folds, also train the other initialisations of the label
            embeddings (A3-A4, B3-B4) and compare them with the rows' own.
        context: previous utterances of the dialog prepended to the text (paper: 10).
        context_tokens: tokens kept of the text with its context (paper: 150); the oldest go first.
        dim: the projection both modalities are mapped into (with ``projection: mlp``).
        projection: ``none`` (paper Eq. 1-8: G, the cross-attention and the head work on the
            encoders' own outputs H_t, H_s, and W maps between their widths) or ``mlp`` (a
            trainable Linear-GELU-Dropout-Linear to ``dim`` per modality: what frozen stand-in
            features need to adapt).
        pool: ``sequence`` (paper, after Eq. 10: H_m = [H_t, H_s'] max-pooled over the whole text
            sequence, context included) or ``split`` (the utterance's own tokens and its context
            max-pooled apart: frozen token features cannot tell the two apart, a fine-tuned BERT
            can).
        speech_subsample: average every n speech frames before the model.
        mu: loss weights (L_m, L_c, L_g^t, L_g^s); paper: 1, 0.5, 0.2, 0.2.
        attention_temperature: ``A_l`` is a softmax of ``G_t G_s^T / attention_temperature`` over
            each token's frames (paper: ``A_l = G_t G_s^T``, unnormalised): on ``A_r``'s scale, and
            peaked on the frames whose label scores agree with the token's (cosine products differ
            by at most a few units; at temperature 1 every entry stays within a factor 2-3 of
            ``1/frames``, a target that guides nothing).
        dropout: dropout on the projections.
        k_grid: values of ``speech_k`` for the Figure 3 grid (first fold; empty: none).
        analysis_folds: the K grid and the attention plot run on this many folds.
        speech_units: where the speech units come from: ``quantizer`` (the wav2vec 2.0 checkpoint's
            own quantizer codes and codevectors), ``kmeans`` (k-means of the training frames,
            ``units`` of them) or ``auto`` (the quantizer where the speech encoder has one).
        pretrain_steps: with ``finetune``, first continue the wav2vec 2.0 speech encoder's
            self-supervised pre-training on the fold's training audio for this many steps (the
            paper's "2nd stage"; 0: off), at ``pretrain_lr`` with ``pretrain_batch_size``
            utterances (5-second crops) per step; the checkpoint is kept in the fold folder.
        finetune: fine-tune the encoders (transformers models) inside the rows' models; the
            stored frozen features still give the standardisation and the label embeddings'
            starting points. Encoders that are not transformers models stay frozen.
        speech_lr_scale, text_lr_scale: the fine-tuned encoders' learning rates relative to
            ``train.lr``.
    """

    rows: list[str] = field(default_factory=lambda: list(ROWS))
    text_k: int = setting(9, min=1)
    speech_k: int = setting(100, min=1)
    units: int = setting(500, min=2)
    text_init: str = "tfidf"
    speech_init: str = "codebook"
    compare_inits: bool = True
    context: int = setting(10, min=0)
    context_tokens: int = setting(150, min=1)
    dim: int = setting(256, min=1)
    projection: str = setting("mlp", choices=("mlp", "none"))
    pool: str = setting("split", choices=("split", "sequence"))
    speech_subsample: int = setting(1, min=1)
    mu: list[float] = setting(default_factory=lambda: [1.0, 0.5, 0.2, 0.2], min=0)
    attention_temperature: float = setting(0.1, gt=0)
    dropout: float = setting(0.1, min=0, lt=1)
    k_grid: list[int] = setting(default_factory=lambda: [25, 50, 100, 200, 400], min=1)
    analysis_folds: int = setting(1, min=0)
    speech_units: str = "auto"
    pretrain_steps: int = setting(0, min=0)
    pretrain_lr: float = setting(5e-5, gt=0)
    pretrain_batch_size: int = setting(4, min=1)
    finetune: bool = False
    speech_lr_scale: float = setting(0.02, min=0)
    text_lr_scale: float = setting(0.1, min=0)


def declare(cfg: RunConfig) -> list[Row]:
    """The recipe's rows with what each reads: the recipe's speech and text features every epoch
    (once, for the standardisation and the label embeddings' starting points, where the encoders
    are fine-tuned), and the text features of the dialog context for the rows that read it;
    ``score_fusion`` reads nothing of its own. ``run_fold`` trains them."""
    m = cfg.model
    out = []
    for name in m.rows:
        if name not in ARCHITECTURES:  # score_fusion: two rows' predictions combined
            out.append(Row(name, ("text", "audio"), name, reads=Reads()))
            continue
        out.append(Row(name, _modalities(ARCHITECTURES[name]), name, reads=_reads(cfg, ARCHITECTURES[name])))
    return out


def analyses(cfg: RunConfig) -> list[Analysis]:
    """The K grid (Figure 3: ``speech_le`` once per K but its own) and the initialisations
    (Table 1 A3-A4, B3-B4: ``text_context_le`` and ``speech_le`` once per other start), with what
    their models read."""
    m = cfg.model
    own = m.speech_init == "codebook" and "speech_le" in m.rows
    grid = sum(1 for k in m.k_grid if not (own and k == m.speech_k))
    out = []
    if grid:
        out.append(Analysis("k_grid.json", _reads(cfg, ARCHITECTURES["speech_le"], grid).other))
    if m.compare_inits:
        reads: tuple[FeatureRead, ...] = ()
        for row, inits in (("text_context_le", TEXT_INITS), ("speech_le", SPEECH_INITS)):
            models = len(inits) - (row in m.rows)
            reads += _reads(cfg, ARCHITECTURES[row], models).other
        out.append(Analysis("inits.json", reads))
    return out


def _modalities(arch: Architecture) -> tuple[str, ...]:
    return ("text",) * arch.text + ("audio",) * arch.speech


def _reads(cfg: RunConfig, arch: Architecture, models: int = 1) -> Reads:
    """What ``models`` models of an architecture read, all as ``other`` reads of the recipe's
    encoders (every epoch, or once where the encoders are fine-tuned)."""
    d = cfg.data
    every = 0 if cfg.model.finetune else models
    reads = []
    if arch.speech and d.audio_encoder:
        reads.append(FeatureRead(d.audio_encoder, layer_tuple(d.audio_layers), readers=every))
    if arch.text and d.text_encoder:
        reads.append(FeatureRead(d.text_encoder, layer_tuple(d.text_layers), readers=every))
        if arch.context:
            reads.append(FeatureRead(d.text_encoder, layer_tuple(d.text_layers), readers=every,
                                     what="dialog context (previous turns)"))
    return Reads(other=tuple(reads))
