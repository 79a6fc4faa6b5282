"""The ``model`` section of the label_embedding recipe, and its row names."""

from __future__ import annotations

from dataclasses import dataclass, field

ROWS = ("text", "text_context", "text_context_le", "speech", "speech_2nd", "speech_le", "score_fusion", "le_mer",
        "fusion_ar_plus_al", "fusion_al_only", "fusion_ar_only")
FUSION = {"le_mer": "constraint", "fusion_ar_plus_al": "sum", "fusion_al_only": "al", "fusion_ar_only": "ar"}
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
        dim: the projection both modalities are mapped into.
        speech_subsample: average every n speech frames before the model.
        mu: loss weights (L_m, L_c, L_g^t, L_g^s); paper: 1, 0.5, 0.2, 0.2.
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
    text_k: int = 9
    speech_k: int = 100
    units: int = 500
    text_init: str = "tfidf"
    speech_init: str = "codebook"
    compare_inits: bool = True
    context: int = 10
    context_tokens: int = 150
    dim: int = 256
    speech_subsample: int = 1
    mu: list[float] = field(default_factory=lambda: [1.0, 0.5, 0.2, 0.2])
    dropout: float = 0.1
    k_grid: list[int] = field(default_factory=lambda: [25, 50, 100, 200, 400])
    analysis_folds: int = 1
    speech_units: str = "auto"
    pretrain_steps: int = 0
    pretrain_lr: float = 5e-5
    pretrain_batch_size: int = 4
    finetune: bool = False
    speech_lr_scale: float = 0.02
    text_lr_scale: float = 0.1
