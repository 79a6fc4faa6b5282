"""teacher_student's model: the branches, the joint projection and the losses of Eq. 5-8."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from sermo.config import setting
from sermo.data.batch import Batch, lengths_mask
from sermo.encoders.trainable import TrainableEncoder
from sermo.nn.inputs import hidden_states
from sermo.nn.layers import GRUEncoder, LayerWeighting, Standardize, average_frames, frames_left
from sermo.nn.losses import ccc_loss, masked_cross_entropy
from sermo.systems.api import Output, lr_groups

ROWS = ("audio", "text", "multimodal", "audio_ft", "ts", "cts")


@dataclass
class TeacherStudentConfig:
    """Model section of the teacher_student recipe.

    Attributes:
        rows: rows to produce (``audio text multimodal audio_ft ts cts``); ``ts``/``cts`` need
            ``multimodal``.
        hidden, gru_layers: each branch's GRU (paper: 2 layers of 128).
        embedding: size of ``e_A`` / ``e_AT`` (paper: 128).
        subsample: average every n input frames before the GRU (1 = none; the demo uses 4 on
            100 Hz log-mel frames to keep 2 CPU cores busy for minutes, not hours).
        lam: weight of the teacher-student L2 term (paper: 30).
        residual_sigmas: an utterance leaves the L2 term when a residual exceeds this many
            standard deviations in any dimension (paper: 2).
        finetune_layers: top transformer layers fine-tuned in ``audio_ft`` (and in the students
            with ``student_finetune``); paper: 6.
        student_finetune: fine-tune the student's speech encoder too (where one is available).
        finetune_from_store: fine-tune only the top ``finetune_layers`` on the stored hidden state
            below them, where the encoder can (Whisper): the frozen layers underneath give the
            same output every epoch, so they need not run again (HuBERT and wav2vec 2.0 read
            waveforms).
        teacher_audio_encoder: the teacher's own speech encoder (paper, MSP-Podcast: HuBERT Large
            teaching HuBERT Base students); ``None``: the recipe's ``data.audio_encoder``.
        task: what the models predict: ``dims`` (arousal, valence, dominance with the CCC loss: the
            paper's), ``category`` (the label space's classes with cross-entropy, for a corpus with
            categories only; the conditional student's residual is then one minus the teacher's
            probability of the true class, see :func:`category_residual_mask`) or ``auto`` (``dims``
            when the fold's training split has any A/V/D value, ``category`` otherwise).
        emo_reduction: how ``L_EMO`` combines the three ``1 - CCC_j``: ``sum`` (the paper's
            ``sum_j alpha_j (1 - CCC_j)`` with every ``alpha_j = 1``, against which ``lam = 30``
            was chosen) or ``mean`` (a third of it).
    """

    rows: list[str] = field(default_factory=lambda: list(ROWS))
    hidden: int = setting(128, min=1)
    gru_layers: int = setting(2, min=1)
    embedding: int = setting(128, min=1)
    subsample: int = setting(1, min=1)
    lam: float = setting(30.0, min=0)
    residual_sigmas: float = setting(2.0, gt=0)
    finetune_layers: int = setting(6, min=0)
    student_finetune: bool = False
    finetune_from_store: bool = True
    teacher_audio_encoder: str | None = None
    emo_reduction: str = setting("sum", choices=("sum", "mean"))
    task: str = setting("auto", choices=("auto", "dims", "category"))


class Branch(nn.Module):
    """One modality: standardise, weight layers, average frames, GRU, last real output ``u``."""

    def __init__(self, num_layers: int, dim: int, cfg: TeacherStudentConfig):
        super().__init__()
        self.norm = Standardize(num_layers, dim)
        self.layers = LayerWeighting(num_layers)
        self.subsample = max(1, cfg.subsample)
        self.gru = GRUEncoder(dim, cfg.hidden, cfg.gru_layers)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, pooled: int = 1) -> torch.Tensor:
        """``pooled``: frames the data path already averaged into each of ``x``'s."""
        h = self.layers.standardized(x, self.norm, mask)  # (B, T, D)
        h, mask = average_frames(h, mask, frames_left(self.subsample, pooled))  # (B, T/s, D): means of real frames
        last, _ = self.gru(h, mask)
        return last  # (B, hidden)


class TSModel(nn.Module):
    """The paper's model in its three roles: audio-only (``e_A = P_A(u_A)``), text-only, or
    multimodal (``e_AT = P_AT([u_A, u_T])``); a linear layer predicts A, V, D jointly.

    With ``speech`` (a trainable ``SpeechSSL``) the audio branch reads the waveform in
    ``batch.wave`` through it instead of stored features, and of its hidden states the
    ``speech_layers`` the frozen features would have been (the paper reads one layer).
    """

    def __init__(self, *, audio: tuple[int, int] | None, text: tuple[int, int] | None, cfg: TeacherStudentConfig,
                 speech: TrainableEncoder | None = None, lam: float = 0.0, speech_layers: list[int] | None = None,
                 speech_top: int | None = None, task: str = "dims", num_classes: int = 0, lr_scale: float = 0.25):
        super().__init__()
        self.lr_scale = lr_scale  # a fine-tuned speech encoder's share of the learning rate
        if cfg.emo_reduction not in ("sum", "mean"):
            raise ValueError(f"model.emo_reduction {cfg.emo_reduction!r}; known: sum, mean")
        if task not in ("dims", "category") or (task == "category" and num_classes < 2):
            raise ValueError(f"a teacher_student model predicts dims or category (of 2 classes or more), not {task!r}")
        self.task = task
        self.speech, self.reduction, self.speech_top = speech, cfg.emo_reduction, speech_top
        self.speech_layers = list(speech_layers) if speech is not None and speech_layers is not None else None
        if speech is not None:
            layers = len(self.speech_layers) if self.speech_layers is not None else speech.num_hidden_states
            audio = (layers, speech.dim)
        self.audio = Branch(*audio, cfg) if audio else None
        self.text = Branch(*text, cfg) if text else None
        width = cfg.hidden * ((self.audio is not None) + (self.text is not None))
        self.project = nn.Linear(width, cfg.embedding)  # P_A, P_T or P_AT
        self.predict = nn.Linear(cfg.embedding, 3 if task == "dims" else num_classes)
        self.lam = lam

    def _audio_input(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        if self.speech is None:
            return batch.need("audio"), batch.need("audio_mask")
        if self.speech_top is not None:  # the top layers on the stored state below them
            hidden, mask = hidden_states(batch, "audio", self.speech, top=self.speech_top)
        else:
            hidden, frames = self.speech(batch.wave, batch.wave_lengths)  # (B, L, T, D)
            mask = lengths_mask(frames, hidden.shape[2])
        if self.speech_layers is not None:
            hidden = hidden[:, self.speech_layers]
        return hidden, mask

    def forward(self, batch: Batch) -> Output:
        parts = []
        if self.audio is not None:
            parts.append(self.audio(*self._audio_input(batch), batch.audio_pool))
        if self.text is not None:
            parts.append(self.text(batch.text, batch.text_mask))
        emb = self.project(torch.cat(parts, dim=-1))  # (B, E): e_A, e_T or e_AT
        if self.task == "category":
            return Output(logits=self.predict(emb), embedding=emb)
        return Output(dims=self.predict(emb), embedding=emb)

    def losses(self, out: Output, batch: Batch) -> dict[str, torch.Tensor]:
        emo = ccc_loss(out.need("dims"), batch.dims, reduction=self.reduction) if self.task == "dims" else \
            masked_cross_entropy(out.need("logits"), batch.category)
        if "teacher_emb" not in batch.extras:
            return {"loss": emo, "emo": emo}
        stu = student_l2(out.need("embedding"), batch.extras["teacher_emb"], batch.extras["ts_keep"])
        return {"loss": emo + self.lam * stu, "emo": emo, "stu": stu}

    def param_groups(self):
        """A fine-tuned speech encoder learns at ``lr_scale`` of the head's rate (paper: 1/4)."""
        return lr_groups(self, [(self.speech, self.lr_scale)])


def student_l2(student: torch.Tensor, teacher: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``||e_AT - e_A||`` averaged over the kept utterances of the batch (Eq. 6).

    Utterances with ``keep == 0`` contribute exactly zero; the teacher's embedding is a
    constant (no gradient reaches the teacher).
    """
    dist = torch.linalg.vector_norm(student - teacher.detach(), dim=-1)  # (B,)
    k = keep.to(dist.dtype)
    return (dist * k).sum() / k.sum().clamp(min=1.0)


def residual_mask(pred: np.ndarray, labels: np.ndarray, sigmas: float = 2.0) -> tuple[np.ndarray, dict]:
    """Which training utterances the teacher may teach (Eq. 8).

    Per dimension j, fit ``y ~ w_j * yhat_j + b_j`` by least squares, take residuals
    ``r_j = w_j * yhat_j + b_j - y_j`` and drop an utterance when ``|r_j| > sigmas * std(r_j)``
    for any dimension. Missing labels never drop an utterance.

    Returns:
        ``(keep (n,) bool, {"w", "b", "std", "dropped_by_dim"})``.
    """
    n = pred.shape[0]
    keep = np.ones(n, dtype=bool)
    info: dict[str, list] = {"w": [], "b": [], "std": [], "dropped_by_dim": []}
    for j in range(pred.shape[1]):
        ok = np.isfinite(labels[:, j])
        r = np.zeros(n)
        if ok.sum() >= 2:
            w, b = np.polyfit(pred[ok, j], labels[ok, j], 1)
            r[ok] = w * pred[ok, j] + b - labels[ok, j]
            std = float(r[ok].std())
        else:
            w = b = std = float("nan")
        bad = ok & (np.abs(r) > sigmas * std) if np.isfinite(std) else np.zeros(n, bool)
        keep &= ~bad
        info["w"].append(float(w))
        info["b"].append(float(b))
        info["std"].append(std)
        info["dropped_by_dim"].append(int(bad.sum()))
    return keep, info


def category_residual_mask(probs: np.ndarray, classes: np.ndarray, sigmas: float = 2.0) -> tuple[np.ndarray, dict]:
    """Eq. 8 for a categorical task (not in the paper, which predicts A/V/D): an utterance's
    residual is ``r = 1 - p(true class)`` under the teacher, and it leaves the L2 term when
    ``r > sigmas * rms(r)`` (Eq. 8's least-squares residuals have mean zero, so their standard
    deviation is this root mean square). Unlabelled utterances (class -1) are always kept.

    Returns:
        ``(keep (n,) bool, {"rms", "dropped"})``.
    """
    ok = classes >= 0
    r = np.zeros(len(classes))
    r[ok] = 1.0 - probs[np.flatnonzero(ok), classes[ok]]
    rms = float(np.sqrt(np.mean(r[ok] ** 2))) if ok.any() else float("nan")
    bad = ok & (r > sigmas * rms) if np.isfinite(rms) else np.zeros(len(classes), bool)
    return ~bad, {"rms": rms, "dropped": int(bad.sum())}
