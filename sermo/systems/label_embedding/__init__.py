"""``label_embedding``: LE-MER, label embeddings and label-guided cross-attention (paper 003).

Wang et al., Interspeech 2023. Each modality gets label embeddings: text ``L_t`` from the
TF-IDF top-K words of each class's training transcripts, encoded by the text encoder;
speech ``L_s`` from the TF-IDF top-K discrete speech units of each class, averaged over the
units' embeddings: the codes and codevectors of the wav2vec 2.0 quantizer where the speech
encoder has one, else k-means units of the training frames and their centroids (the report
says which). ``G = cos(H, L)`` scores tokens and frames per class; its mean over the
sequence is a classifier (``L_g``). Fusion: ``A_r = softmax(H_t W H_s^T)``, ``H_s' = A_r H_s``,
``H_m = [H_t, H_s']``, max-pooled, linear; the label-guided map ``A_l = G_t G_s^T`` constrains
``A_r`` (``L_c``, mean squared error). ``L = mu1 L_m + mu2 L_c + mu3 L_g^t + mu4 L_g^s``.

A trainable projection per modality maps the encoder's last hidden state, and the label
embeddings through the same projection, into the model's space. The encoders are read frozen
(stored features) or, with ``finetune`` (the paper profile), fine-tuned inside each row's
model at their own learning rates; the stored features then still give the standardisation
and the label embeddings' starting points. The dialog context of the text rows is the
previous turns before the utterance: with frozen features each part is encoded on its own
and their token features are joined (an encoder run over the joined text blurs the
utterance's own words with its context); a fine-tuned encoder reads the joined text. Either
way the utterance's own tokens are pooled apart from the context's.
"""
from __future__ import annotations

from sermo.systems.definition import Deviation, SystemDef, register
from sermo.systems.common import FINETUNED_AUDIO_CAP, FINETUNED_MASKING
from sermo.systems.label_embedding.config import ROWS, LabelEmbeddingConfig, analyses, declare
from sermo.systems.label_embedding.model import build_model
from sermo.systems.label_embedding.report import finish
from sermo.systems.label_embedding.run import run_fold

PAPER = {
    "iemocap": {  # Tables 1-3 (IEMOCAP 4 classes, 5-fold)
        "text": {"wa": 0.6734, "ua": 0.6766}, "text_context": {"wa": 0.7746, "ua": 0.7838},
        "text_context_le": {"wa": 0.7811, "ua": 0.7892}, "speech": {"wa": 0.7392, "ua": 0.7448},
        "speech_2nd": {"wa": 0.7573, "ua": 0.7644},
        "speech_le": {"wa": 0.7674, "ua": 0.7774}, "score_fusion": {"wa": 0.8132, "ua": 0.8218},
        "le_mer": {"wa": 0.8240, "ua": 0.8311}, "fusion_ar_plus_al": {"wa": 0.8239, "ua": 0.8275},
        "fusion_al_only": {"wa": 0.8129, "ua": 0.8137}, "fusion_ar_only": {"wa": 0.8108, "ua": 0.8168},
    },
}

DEVIATIONS = (
    Deviation("The speech encoder is wav2vec 2.0 Large (LV-60).",
              "The paper's wav2vec 2.0 conformer Base (LibriSpeech 960 h) has no public pre-training checkpoint.",
              "The speech rows start from a larger model; the comparisons within the table hold.",
              profiles=("paper",)),
    Deviation("The 2nd stage runs 5,000 steps of 4 crops of 5 s.", "The paper does not say how long.",
              "B2 vs B1 depends on it.", profiles=("paper",)),
    Deviation("Validation: 10% of the training sessions' dialogs (iemocap-loso-holdout).",
              "The paper trains on four sessions and does not say how it validated.", "None on the comparisons.",
              profiles=("paper",)),
    Deviation("The warm-up of 8,000 steps is cut to 30% of a run's real steps when longer; 30 epochs.",
              "The paper does not give its epochs; 8,000 steps is about a whole run on IEMOCAP.",
              "Every row trains on the same schedule.", profiles=("paper",)),
    Deviation("A_l is a softmax of G_t G_s^T / 0.1 over each token's frames (model.attention_temperature) and is "
              "A_r's target without a gradient of its own; L_c is Eq. 10's squared norm per utterance, averaged "
              "over the batch.",
              "As written, A_l's entries are near 1 and A_r's near 1/frames: L_c would mostly shrink the label "
              "scores, and fused with A_l alone (C3) or summed (C2) H_s' would grow with the number of frames. A "
              "softmax at temperature 1 is nearly flat (cosine products differ by a few units), a target that "
              "pulls A_r towards uniform; at 0.1 it peaks on the frames whose label scores agree with the "
              "token's. A mean over every (token, frame) pair instead of the norm left L_c 2.6e-5 of L_m's "
              "gradient on W (sermo's earlier L_c: C1 and C4 were the same model).",
              "C1-C4 compare fusions on one scale, and C1's constraint moves A_r (a test shows it: L_c's share of "
              "W's gradient at the paper's lengths is above 1e-2 of L_m's, and training with it brings A_r to "
              "A_l); the temperature is ours, not the paper's."),
    FINETUNED_AUDIO_CAP,
    FINETUNED_MASKING,
    Deviation("Label embeddings of another width than the encoder's output (the quantizer's 768-d codevectors "
              "beside wav2vec 2.0 Large's 1024; B4's BERT vectors in the speech rows) enter its space through a "
              "trainable linear map that starts at random.", "The paper's Base encoder is 768-d and the paper "
              "does not say how L_s meets H_s; the checkpoint's own project_hid maps the other way.",
              "B3-B5 and L_s keep the classes' relative geometry, not their alignment with H_s: codebook (B5) vs "
              "random (B3) initialisation measures less than the paper's 'modality gap' claim."),
    Deviation("The 2nd stage continues pre-training with the checkpoint's own masking settings, AdamW at 5e-5 "
              "without warm-up, and batches of 4 crops cut to the shortest.", "The paper does not describe its "
              "2nd stage beyond 'continue pre-training on the task's audio'.", "B2 vs B1 depends on it.",
              profiles=("paper",)),
    Deviation("Speech units come from the original checkpoint's quantizer, not the 2nd-stage model's; A_r scales "
              "H_t W H_s^T by 1/sqrt(d) and W starts at the identity (plus 1% noise).", "Eq. 7 gives neither; "
              "the units are computed once per fold for every row alike.", "None on the comparisons."),
    Deviation("The demo profile projects both modalities to 256 (model.projection: mlp) and pools the "
              "utterance's tokens apart from its context's (model.pool: split).", "Frozen stand-in features "
              "need a trainable map, and cannot tell an utterance from its context.", "Demo numbers only.",
              profiles=("demo",)),
    Deviation("The speech input is the waveform, not log-mel with SpecAugment.",
              "The paper's preprocessing names log-mel spectrograms, which wav2vec 2.0 does not read.",
              "None on the comparisons."),
)

COMPARISONS = (("text", "text_context", "ua"), ("text_context", "text_context_le", "ua"), ("speech", "speech_2nd", "ua"),
               ("speech_2nd", "speech_le", "ua"), ("speech", "speech_le", "ua"), ("score_fusion", "le_mer", "ua"),
               ("text_context_le", "le_mer", "ua"), ("speech_le", "le_mer", "ua"), ("fusion_ar_only", "le_mer", "ua"),
               ("fusion_ar_plus_al", "le_mer", "ua"))

register(SystemDef(
    name="label_embedding", config_cls=LabelEmbeddingConfig, run_fold=run_fold, build_model=build_model,
    rows=ROWS, paper=PAPER, finish=finish, order=4, targets=("category",), declare=declare, analyses=analyses,
    deviations=DEVIATIONS, comparisons=COMPARISONS,
    title="LE-MER: label embeddings and label-guided cross-attention (Wang et al., Interspeech 2023)",
))
