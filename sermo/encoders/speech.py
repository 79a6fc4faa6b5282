"""Self-supervised speech encoders (HuBERT, wav2vec 2.0, WavLM, DistilHuBERT) via transformers."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from sermo.data.audio import SAMPLE_RATE
from sermo.encoders.base import Encoder, EncoderError, EncoderOutput, file_digest
from sermo.encoders.hub import load_or_build, load_pretrained, resolve_checkpoint, weight_files
from sermo.data.frames import bucket_length
from sermo.encoders.trainable import TrainableEncoder

if TYPE_CHECKING:
    from sermo.encoders.whisper import WhisperSpeech


PADDINGS = ("auto", "bucket", "exact")


class SpeechSSL(TrainableEncoder):
    """A transformers speech model returning every hidden state; usable frozen or fine-tuned.

    ``forward(waveforms [B, samples], attention_mask [B, samples] | None)`` returns
    ``(hidden [B, layers, frames, dim], frame_lengths [B])``. Checkpoints that take no attention
    mask (HuBERT Base, wav2vec 2.0 Base, DistilHuBERT) run a batch of unequal lengths as their model
    cards say: zero-padded, without a mask, their padded frames dropped by length (``padding``
    ``bucket``); ``exact`` runs each utterance alone on its own samples (one forward pass per
    utterance: the same numbers as unbatched, several times slower on a GPU); ``auto`` (the
    default) is ``bucket`` on a GPU and ``exact`` on the CPU, where a batch gains no parallelism
    and padding only costs (measured: ``sermo bench padding``). The CNN front end is
    always frozen; :meth:`set_trainable_layers` unfreezes the top k transformer layers (paper 000
    fine-tunes the top 6; paper 001 all of them).
    """

    def __init__(self, folder: str, *, prune: int | None = None, padding: str = "auto"):
        super().__init__()
        if padding not in PADDINGS:
            raise EncoderError(f"unknown speech padding {padding!r}; known: {', '.join(PADDINGS)}")
        self.padding = padding
        from transformers import AutoConfig, AutoFeatureExtractor, AutoModel

        self.config = AutoConfig.from_pretrained(folder)
        # LayerDrop skips random layers in training: every forward must return every hidden
        # state (the layer weightings and the selections index them)
        if hasattr(self.config, "layerdrop"):
            self.config.layerdrop = 0.0
        self.model = load_or_build(AutoModel, folder, config=self.config)
        if prune is not None and prune < int(self.config.num_hidden_layers):
            # a pruned model keeps its first transformer layers only (paper 001's w2v2-L-robust(p):
            # 12 of 24); the rest is dropped, not merely left unread
            self.model.encoder.layers = self.model.encoder.layers[:prune]
            self.config.num_hidden_layers = self.model.config.num_hidden_layers = prune
        try:
            fe = AutoFeatureExtractor.from_pretrained(folder)
            self.use_attention_mask = bool(getattr(fe, "return_attention_mask", False))
            self.normalize = bool(getattr(fe, "do_normalize", True))
        except (OSError, ValueError):  # no preprocessor_config.json: wav2vec2 defaults
            self.use_attention_mask, self.normalize = False, True
        # the CNN front end never trains: its own flag too, or in train mode it makes the waveform
        # require a gradient and every backward runs through the convolutions over raw audio
        front = getattr(self.model, "feature_extractor", None)
        if front is not None and hasattr(front, "_freeze_parameters"):
            front._freeze_parameters()
        self.model.eval()
        self.set_trainable_layers(0)

    @property
    def num_hidden_states(self) -> int:
        """Transformer layers + 1 (index 0 is the CNN / feature projection output)."""
        return int(self.config.num_hidden_layers) + 1

    @property
    def frame_rate(self) -> float:
        """Output frames per second at 16 kHz."""
        return SAMPLE_RATE / float(np.prod(self.config.conv_stride))

    def frames(self, samples: int) -> int:
        """Output frames of ``samples`` 16 kHz samples (the convolutions' arithmetic)."""
        return int(self.model._get_feat_extract_output_lengths(torch.tensor(int(samples))))

    def transformer_layers(self) -> nn.ModuleList:
        """The transformer blocks, bottom first."""
        enc = self.model.encoder
        return enc.layers

    def all_trainable(self) -> list[nn.Module]:
        """``"all"``: every layer above the CNN front end, including the feature projection."""
        return [m for name, m in self.model.named_children() if name not in ("feature_extractor", "masked_spec_embed")]

    def prepare(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Per-utterance zero-mean unit-variance normalisation over the valid samples, when the
        checkpoint's feature extractor asks for it."""
        if not self.normalize:
            return waveforms
        mask = torch.arange(waveforms.shape[1], device=waveforms.device)[None] < lengths[:, None]
        n = lengths.clamp(min=1).to(waveforms.dtype)[:, None]
        mean = (waveforms * mask).sum(1, keepdim=True) / n
        var = (((waveforms - mean) * mask) ** 2).sum(1, keepdim=True) / n
        return ((waveforms - mean) / torch.sqrt(var + 1e-7)) * mask

    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.prepare(waveforms, lengths)  # (batch, samples)
        mask = None
        if self.use_attention_mask:
            mask = (torch.arange(x.shape[1], device=x.device)[None] < lengths[:, None]).long()
        elif int(lengths.min()) != x.shape[1] and (self.padding == "exact" or
                                                   (self.padding == "auto" and x.device.type == "cpu")):
            # no attention mask and exact: each utterance runs on its own samples (padding would
            # reach every frame through the front end's normalisation and the attention), and the
            # outputs are padded afterwards
            outs = [self.forward(x[i:i + 1, : int(n)], lengths[i:i + 1]) for i, n in enumerate(lengths)]
            frames = torch.cat([f for _, f in outs])
            hidden = torch.zeros(x.shape[0], outs[0][0].shape[1], int(frames.max()), outs[0][0].shape[3],
                                 dtype=outs[0][0].dtype, device=x.device)
            for i, (h, f) in enumerate(outs):
                hidden[i, :, : int(f)] = h[0, :, : int(f)]
            return hidden, frames
        return self._encode(x, lengths, mask)

    def encode_padded(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`forward` on a batch as it is padded (what frozen features with ``bucket``
        padding computed; one traceable path, which ``sermo export`` exports)."""
        x = self.prepare(waveforms, lengths)
        mask = None
        if self.use_attention_mask:
            mask = (torch.arange(x.shape[1], device=x.device)[None] < lengths[:, None]).long()
        return self._encode(x, lengths, mask)

    def _encode(self, x: torch.Tensor, lengths: torch.Tensor,
                mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(x, attention_mask=mask, output_hidden_states=True)
        hidden = torch.stack(out.hidden_states, dim=1)  # (batch, layers, frames, dim)
        frames = self.model._get_feat_extract_output_lengths(lengths).clamp(max=hidden.shape[2])
        return hidden, frames


class HFSpeechEncoder(Encoder):
    """Frozen speech SSL encoder for feature extraction.

    Checkpoints whose feature extractor says ``return_attention_mask=False`` (HuBERT base,
    wav2vec 2.0 base) get no padding mask. With ``padding="bucket"`` (the default; ``auto`` means it here) they are
    batched with the inputs whose lengths round up to the same multiple of 0.25 s and zero-padded
    to exactly that length, so an utterance's features depend on its own samples alone (never on
    the batch it came in: stored and live features stay identical), within 0.25 s of padding;
    ``padding="exact"`` batches only inputs of exactly the same length, never padded. The choice
    is part of the encoder's identity (the store keeps the two apart).
    """

    modality = "audio"

    def __init__(self, source: str, *, name: str | None = None, layers=None, dtype: str = "float16",
                 device: str = "cpu", max_batch_seconds: float = 120.0, prune: int | None = None,
                 module: SpeechSSL | WhisperSpeech | None = None, padding: str = "auto"):
        super().__init__(layers=layers, dtype=dtype)
        self.folder = resolve_checkpoint(source)
        self.name = name or source
        # ``module``: another speech model with SpeechSSL's interface (Whisper's encoder)
        # frozen features pad alike on every device (``auto``: ``bucket``), so the store's key does not
        # depend on where they were extracted
        padding = "bucket" if padding == "auto" else padding
        self.module = (module if module is not None else SpeechSSL(self.folder, prune=prune, padding=padding)).to(device)
        # only a checkpoint without an attention mask pads one way or the other
        self.padding = padding if isinstance(self.module, SpeechSSL) and not self.module.use_attention_mask else None
        self.device = device
        self.num_layers = self.module.num_hidden_states
        self.dim = int(self.module.config.hidden_size)
        self.frame_rate = self.module.frame_rate
        self.max_batch_samples = int(max_batch_seconds * SAMPLE_RATE)
        self._hash = file_digest(weight_files(self.folder))

    def weights_hash(self) -> str:
        return self._hash

    @property
    def identity(self):
        base = super().identity
        return replace(base, padding=self.padding) if self.padding == "bucket" else base

    def num_frames(self, samples: int) -> int:
        return self.module.frames(samples)

    def to(self, device) -> "HFSpeechEncoder":
        self.module.to(device)
        self.device = device
        return self

    def batches(self, lengths: list[int]) -> list[list[int]]:
        """Indices grouped into batches: sorted by length, padded where the model masks, and for a
        model without a mask only within one 0.25 s bucket (``bucket``) or not at all (``exact``)."""
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        out: list[list[int]] = []
        for i in order:
            if out:
                cur = out[-1]
                same = self._padded(lengths[cur[0]]) == self._padded(lengths[i])
                fits = (len(cur) + 1) * self._padded(lengths[i]) <= self.max_batch_samples
                if fits and (self.module.use_attention_mask or same):
                    cur.append(i)
                    continue
            out.append([i])
        return out

    def _padded(self, samples: int) -> int:
        """The length an input of ``samples`` is padded to in its batch (a mask model: its own)."""
        return bucket_length(samples) if self.padding == "bucket" else int(samples)

    @torch.inference_mode()
    def _encode_batch(self, items: list) -> list[EncoderOutput]:
        lengths = [len(x) for x in items]
        results: list[EncoderOutput | None] = [None] * len(items)
        keep = list(self.layers)
        for group in self.batches(lengths):
            longest = self._padded(max(lengths[i] for i in group))
            wav = torch.zeros(len(group), longest)
            for row, i in enumerate(group):
                wav[row, : lengths[i]] = torch.from_numpy(np.asarray(items[i], dtype=np.float32))
            lens = torch.tensor([lengths[i] for i in group])
            hidden, frames = self.module(wav.to(self.device), lens.to(self.device))
            hidden = hidden[:, keep].float().cpu().numpy()
            for row, i in enumerate(group):
                results[i] = EncoderOutput(hidden[row, :, : int(frames[row])], self.frame_rate)
        return results  # type: ignore[return-value]


class SpeechQuantizer:
    """The discrete units of a wav2vec 2.0 (or wav2vec 2.0 conformer) checkpoint's own quantizer
    (paper 003's speech units).

    The Gumbel quantizer picks one of ``V`` entries in each of ``G`` groups per CNN frame; a
    unit is that choice, ``sum_g idx_g * V**g``. A unit's embedding is its codevector (the
    groups' entries concatenated) through the checkpoint's ``project_q``, the space the
    contrastive pre-training compared with the context network's output.

    Raises:
        EncoderError: the checkpoint is not wav2vec 2.0 or holds no quantizer weights
            (fine-tuned CTC checkpoints and HuBERT have none).
    """

    def __init__(self, folder: str, *, device: str = "cpu"):
        from transformers import AutoConfig, AutoFeatureExtractor, AutoModelForPreTraining

        config = AutoConfig.from_pretrained(folder)
        kind = getattr(config, "model_type", None)
        if kind not in ("wav2vec2", "wav2vec2-conformer"):
            raise EncoderError(f"{folder}: a {kind or '?'} model has no wav2vec 2.0 quantizer")
        model, info = load_pretrained(AutoModelForPreTraining, folder, output_loading_info=True)
        if any(k.startswith(("quantizer.", "project_q.")) for k in info["missing_keys"]):
            raise EncoderError(f"{folder}: the checkpoint holds no quantizer weights (not a pre-training checkpoint)")
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.base = getattr(model, model.base_model_prefix)  # wav2vec2 or wav2vec2_conformer
        self.groups = int(config.num_codevector_groups)
        self.entries = int(config.num_codevectors_per_group)
        try:
            self.normalize = bool(getattr(AutoFeatureExtractor.from_pretrained(folder), "do_normalize", True))
        except (OSError, ValueError):
            self.normalize = True

    @property
    def dim(self) -> int:
        """Width of a unit's embedding."""
        return int(self.model.config.proj_codevector_dim)

    @torch.no_grad()
    def units(self, samples: np.ndarray) -> np.ndarray:
        """Unit ids ``(frames,)`` int64 of a 16 kHz waveform, one per CNN frame."""
        x = torch.as_tensor(np.asarray(samples, dtype=np.float32), device=self.device)[None]
        if self.normalize:
            x = (x - x.mean()) / torch.sqrt(x.var() + 1e-7)
        feats = self.base.feature_extractor(x).transpose(1, 2)
        _, feats = self.base.feature_projection(feats)  # the layer-normed CNN output the quantizer reads
        logits = self.model.quantizer.weight_proj(feats)[0].view(feats.shape[1], self.groups, self.entries)
        idx = logits.argmax(-1)  # (frames, groups)
        base = torch.tensor([self.entries**g for g in range(self.groups)], device=idx.device)
        return (idx * base).sum(-1).cpu().numpy().astype(np.int64)

    @torch.no_grad()
    def vectors(self, units) -> np.ndarray:
        """Embeddings ``(n, dim)`` of unit ids."""
        u = torch.as_tensor(np.asarray(units, dtype=np.int64), device=self.device)
        book = self.model.quantizer.codevectors[0]  # (G * V, dim / G)
        parts = [book[g * self.entries + (u // self.entries**g) % self.entries] for g in range(self.groups)]
        return self.model.project_q(torch.cat(parts, dim=-1)).cpu().numpy()


def continue_pretraining(folder: str, waves, out, *, steps: int, lr: float = 5e-5, batch_size: int = 4,
                         max_seconds: float = 5.0, seed: int = 0, progress: bool = True, device: str = "cpu") -> str:
    """Continue a wav2vec 2.0 checkpoint's self-supervised pre-training (contrastive and
    diversity losses, the checkpoint's own masking settings) on ``waves`` for ``steps`` steps
    and save the result to ``out`` (paper 003's "2nd stage", on the training audio).

    Args:
        folder: a pre-training checkpoint (with its quantizer).
        waves: a list of functions, each returning one 16 kHz waveform (loaded when drawn).
        out: where the continued checkpoint goes; written to a temporary folder first and
            renamed, so an interrupted stage leaves nothing that looks finished.

    Returns:
        ``out`` as a string. An ``out`` that already exists is returned as it is (resume).

    Raises:
        EncoderError: the checkpoint has no quantizer to pre-train with.
    """
    import shutil
    from pathlib import Path

    from tqdm import tqdm
    from transformers.models.wav2vec2.modeling_wav2vec2 import _compute_mask_indices, _sample_negative_indices

    out = Path(out)
    if out.is_dir():
        return str(out)
    model = SpeechQuantizer(folder, device=device).model  # checks for the quantizer
    cfg = model.config
    model.train()
    model.freeze_feature_encoder()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    cap = int(max_seconds * SAMPLE_RATE)
    for _ in tqdm(range(steps), desc="continued pre-training", unit="step", disable=not progress):
        chosen = [np.asarray(waves[i](), dtype=np.float32) for i in rng.choice(len(waves), batch_size)]
        crops = []
        for w in chosen:
            start = int(rng.integers(0, max(1, len(w) - cap + 1)))
            w = w[start:start + cap]
            crops.append((w - w.mean()) / np.sqrt(w.var() + 1e-7))
        n = min(len(w) for w in crops)  # equal lengths: no padding enters the losses
        x = torch.from_numpy(np.stack([w[:n] for w in crops])).to(device)
        frames = int(model._get_feat_extract_output_lengths(torch.tensor(n)))
        mask = _compute_mask_indices((len(crops), frames), cfg.mask_time_prob, cfg.mask_time_length, min_masks=2)
        negatives = _sample_negative_indices((len(crops), frames), cfg.num_negatives, mask_time_indices=mask)
        loss = model(x, mask_time_indices=torch.from_numpy(mask).to(device),
                     sampled_negative_indices=torch.from_numpy(negatives).to(device)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.eval().cpu().save_pretrained(tmp)
    for name in ("preprocessor_config.json",):
        if (Path(folder) / name).is_file():
            shutil.copy(Path(folder) / name, tmp / name)
    tmp.rename(out)
    return str(out)
