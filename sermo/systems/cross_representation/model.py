"""The speech model: weighted SSL layers and the speaker through an AutoVC bottleneck, a mel
decoder and an emotion classifier on the codes."""

from __future__ import annotations

import torch
from torch import nn

from sermo.data.batch import Batch
from sermo.nn.autovc import conv_norm, downsample, upsample
from sermo.nn.layers import LayerWeighting, Standardize, align_frames, chunk, frames_left, mlp, subsample_layers
from sermo.nn.losses import masked_cross_entropy, masked_mse, total
from sermo.systems.api import Output
from sermo.systems.cross_representation.config import MEL_BINS, NUM_PHONES, SPEAKER_DIM, CrossRepresentationConfig


class SpeechEncoder(nn.Module):
    """Weighted layer average (Eq. 1) ‖ speaker embedding -> ConvNorm x n -> BLSTM (d) -> downsample f."""

    def __init__(self, num_layers: int, dim: int, d: int, f: int, cfg: CrossRepresentationConfig):
        super().__init__()
        self.f = f
        self.weighting = LayerWeighting(num_layers, "normalized")
        convs, c = [], dim + SPEAKER_DIM
        for _ in range(cfg.encoder_convs):
            convs.append(conv_norm(c, cfg.channels, cfg.kernel, nn.ReLU()))
            c = cfg.channels
        self.convs = nn.Sequential(*convs)
        self.lstm = nn.LSTM(c, d, num_layers=cfg.encoder_lstm_layers, batch_first=True, bidirectional=True)

    def forward(self, x: torch.Tensor, speaker: torch.Tensor) -> torch.Tensor:
        """``x (B, L, T, D)`` (T a multiple of f), ``speaker (B, 256)`` -> codes ``(B, T/f, 2d)``."""
        h = self.weighting(x)
        h = torch.cat([h, speaker[:, None].expand(-1, h.shape[1], -1)], dim=-1)
        h = self.convs(h.transpose(1, 2)).transpose(1, 2)
        h, _ = self.lstm(h)
        return downsample(h, self.f)


class PhoneEncoder(nn.Module):
    """One-hot phone ids ``(B, T)`` -> ``(B, T, phone_dim)``: ConvNorm x 2, BLSTM."""

    def __init__(self, dim: int, kernel: int):
        super().__init__()
        self.convs = nn.Sequential(conv_norm(NUM_PHONES, dim, kernel, nn.ReLU()), conv_norm(dim, dim, kernel, nn.ReLU()))
        self.lstm = nn.LSTM(dim, dim // 2, batch_first=True, bidirectional=True)

    def forward(self, phones: torch.Tensor) -> torch.Tensor:
        one_hot = nn.functional.one_hot(phones.clamp(0, NUM_PHONES - 1), NUM_PHONES).float()
        h = self.convs(one_hot.transpose(1, 2)).transpose(1, 2)
        return self.lstm(h)[0]


class Decoder(nn.Module):
    """[upsampled codes, speaker, phones] -> LSTM -> ConvNorm x n -> LSTMs -> linear 80, and a
    postnet whose output is added (AutoVC). Returns (before postnet, after postnet)."""

    def __init__(self, code_dim: int, cfg: CrossRepresentationConfig):
        super().__init__()
        self.lstm1 = nn.LSTM(code_dim + SPEAKER_DIM + cfg.phone_dim, cfg.decoder_lstm1, batch_first=True)
        self.convs = nn.Sequential(*[conv_norm(cfg.decoder_lstm1 if i == 0 else cfg.channels, cfg.channels,
                                               cfg.kernel, nn.ReLU()) for i in range(cfg.decoder_convs)])
        c = cfg.channels if cfg.decoder_convs else cfg.decoder_lstm1
        self.lstm2 = nn.LSTM(c, cfg.decoder_lstm2, num_layers=cfg.decoder_lstm2_layers, batch_first=True)
        self.linear = nn.Linear(cfg.decoder_lstm2, MEL_BINS)
        post, c = [], MEL_BINS
        for i in range(cfg.postnet_convs):
            last = i == cfg.postnet_convs - 1
            post.append(conv_norm(c, MEL_BINS if last else cfg.postnet_channels, cfg.kernel,
                                  None if last else nn.Tanh()))
            c = cfg.postnet_channels
        self.postnet = nn.Sequential(*post)

    def forward(self, codes: torch.Tensor, speaker: torch.Tensor, phones: torch.Tensor):
        h = torch.cat([codes, speaker[:, None].expand(-1, codes.shape[1], -1), phones], dim=-1)
        h = self.lstm1(h)[0]
        h = self.convs(h.transpose(1, 2)).transpose(1, 2)
        mel = self.linear(self.lstm2(h)[0])
        return mel, mel + self.postnet(mel.transpose(1, 2)).transpose(1, 2)


class CrossRepresentation(nn.Module):
    """The speech model of one bottleneck configuration (``d``, ``f``).

    Training (``model.train()``): one random ``segment``-frame crop per utterance; with the
    batch extras ``mel`` and ``phones`` the decoder reconstructs the crop's mel spectrogram.
    Evaluation: logits are the log of the chunk-averaged class probabilities.
    """

    def __init__(self, audio: tuple[int, int], num_classes: int, cfg: CrossRepresentationConfig, *, d: int, f: int):
        super().__init__()
        if cfg.segment % f:
            raise ValueError(f"the segment ({cfg.segment} frames) must be a multiple of the downsampling factor {f}")
        layers, dim = audio
        self.segment, self.f, self.subsample = cfg.segment, f, cfg.speech_subsample
        self.norm = Standardize(layers, dim)
        self.mel_norm = Standardize(1, MEL_BINS)
        self.encoder = SpeechEncoder(layers, dim, d, f, cfg)
        self.code_dim = 2 * d * (cfg.segment // f)
        self.classifier = mlp([self.code_dim, *cfg.classifier, num_classes], dropout=cfg.dropout)
        self.phones = PhoneEncoder(cfg.phone_dim, cfg.kernel)
        self.decoder = Decoder(2 * d, cfg)

    def inputs(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        audio, audio_mask = batch.need("audio"), batch.need("audio_mask")
        x, mask = subsample_layers(self.norm(audio, audio_mask), audio_mask,
                                   frames_left(self.subsample, batch.audio_pool))
        return x, mask

    def codes(self, x: torch.Tensor, speaker: torch.Tensor) -> torch.Tensor:
        """Flattened bottleneck codes of segments ``(N, L, segment, D)``: ``(N, code_dim)``."""
        return self.encoder(x, speaker).flatten(1)

    def chunks(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every utterance cut into chunks: (chunks, their speakers, owner index per chunk)."""
        x, mask = self.inputs(batch)
        lengths = mask.sum(1).tolist()
        parts = [chunk(x[i], max(int(n), 1), self.segment) for i, n in enumerate(lengths)]
        owner = torch.cat([torch.full((len(p),), i, dtype=torch.long, device=x.device) for i, p in enumerate(parts)])
        return torch.cat(parts), batch.need("speaker").float()[owner], owner

    def forward(self, batch: Batch) -> Output:
        if self.training:
            return self._train_forward(batch)
        segs, spk, owner = self.chunks(batch)
        codes = self.codes(segs, spk)
        probs = torch.softmax(self.classifier(codes), dim=-1)
        b = len(batch.ids)
        total = probs.new_zeros(b, probs.shape[1]).index_add_(0, owner, probs)  # (B, C): sums over chunks
        count = probs.new_zeros(b).index_add_(0, owner, probs.new_ones(len(owner)))
        mean = total / count.clamp(min=1).unsqueeze(-1)
        emb = codes.new_zeros(b, codes.shape[1]).index_add_(0, owner, codes) / count.clamp(min=1).unsqueeze(-1).to(codes)
        return Output(logits=torch.log(mean.clamp(min=1e-8)), embedding=emb)

    def _train_forward(self, batch: Batch) -> Output:
        x, mask = self.inputs(batch)
        b, seg = x.shape[0], self.segment
        lengths = mask.sum(1)
        starts = (torch.rand(b, device=x.device) * (lengths - seg).clamp(min=0).float()).long()
        idx = starts[:, None] + torch.arange(seg, device=x.device)[None]  # (B, seg)
        valid = idx < lengths[:, None]
        safe = idx.clamp(max=x.shape[2] - 1)
        crop = torch.gather(x, 2, safe[:, None, :, None].expand(-1, x.shape[1], -1, x.shape[3]))
        crop = crop * valid[:, None, :, None]
        spk = batch.need("speaker").float()
        codes = self.encoder(crop, spk)
        extras: dict = {"valid": valid}
        if "mel" in batch.extras and "phones" in batch.extras:
            target, phones = self._targets(batch, lengths, idx, valid)
            mel, post = self.decoder(upsample(codes, self.f), spk, self.phones(phones))
            extras.update(mel=mel, mel_post=post, mel_target=target)
        return Output(logits=self.classifier(codes.flatten(1)), embedding=codes.flatten(1), extras=extras)

    def _targets(self, batch: Batch, lengths, idx, valid):
        """The crop's standardised mel frames and phone ids, on the input's clock."""
        mel, mel_len = batch.extras["mel"].float(), batch.extras["mel_len"]
        phones, phones_len = batch.extras["phones"], batch.extras["phones_len"]
        targets, ids = [], []
        for i in range(mel.shape[0]):
            n = max(int(lengths[i]), 1)
            m = self.mel_norm(mel[i, : int(mel_len[i])][None, None])[0, 0]
            m = align_frames(m, n)
            p = phones[i, : int(phones_len[i])]
            if len(p):  # phone ids on the input's clock: the frame n of n covers the phone at n/len
                p = p[(torch.arange(n, device=p.device) * len(p) // n).clamp(max=len(p) - 1)]
            else:
                p = torch.ones(n, dtype=torch.long, device=p.device)
            j = idx[i].clamp(max=n - 1)
            targets.append(m[j] * valid[i, :, None])
            ids.append(torch.where(valid[i], p[j], torch.zeros_like(p[j])))
        return torch.stack(targets), torch.stack(ids)

    def losses(self, out: Output, batch: Batch) -> dict[str, torch.Tensor]:
        parts = {"e": masked_cross_entropy(out.need("logits"), batch.category)}
        if "mel" in out.extras:
            parts["r1"] = masked_mse(out.extras["mel"], out.extras["mel_target"], out.extras["valid"])
            parts["r2"] = masked_mse(out.extras["mel_post"], out.extras["mel_target"], out.extras["valid"])
        return {"loss": total(parts), **parts}
