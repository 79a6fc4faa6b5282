"""Table 3: how much speaker identity the frozen bottleneck codes keep (a speaker-ID probe)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from sermo.nn.layers import mlp
from sermo.systems.cross_representation.config import CrossRepresentationConfig
from sermo.systems.cross_representation.model import CrossRepresentation


def bottleneck_features(model: CrossRepresentation, ctx, data_ids, src, inputs) -> tuple[np.ndarray, list[str]]:
    """Flattened codes of every chunk of the given utterances, and each chunk's utterance."""
    def codes(m: CrossRepresentation, batch):
        segs, spk, owner = m.chunks(batch)
        return m.codes(segs, spk), owner

    ds = ctx.dataset("train", audio=src, speaker=inputs.speaker, ids=list(data_ids))
    feats, owners = [], []
    for batch, (c, owner) in ctx.forward(model, ds, 32, call=codes):
        feats.append(c.float().cpu().numpy())
        owners += [batch.ids[i] for i in owner.tolist()]
    return np.concatenate(feats), owners


def probe_split(ids: list[str], speaker_of: dict, share: float, seed: int) -> tuple[list[str], list[str]]:
    """Each speaker's utterances shuffled, ``share`` of them to train the probe and the rest to
    test it; a speaker with two or more utterances keeps at least one of each, a speaker with one
    trains only."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for spk in sorted({speaker_of[u] for u in ids}):
        own = [u for u in ids if speaker_of[u] == spk]
        rng.shuffle(own)
        k = len(own) if len(own) == 1 else min(len(own) - 1, max(1, int(round(share * len(own)))))
        train += own[:k]
        test += own[k:]
    return train, test


def speaker_probe(ctx, model: CrossRepresentation, inputs, cfg: CrossRepresentationConfig) -> dict:
    """Table 3: speaker identification from the frozen bottleneck codes of the fold's training
    sessions, each speaker's utterances split ``probe_share`` / rest; UA over test utterances
    (chunk probabilities averaged), and the chance level."""
    from sermo.evaluation.metrics import classification_metrics

    src = ctx.audio
    if model.norm.mean.shape[-1] != src.dim:  # the mel-input model reads the mel spectrogram
        src = inputs.mel
    ids = [u for u in ctx.ids("train") if src.has(u) and inputs.speakers.get(u) is not None]
    speakers = sorted({inputs.speakers[u] for u in ids})
    train_ids, test_ids = probe_split(ids, inputs.speakers, cfg.probe_share, ctx.cfg.train.seed)
    if not test_ids:
        return {"skipped": f"no speaker has two utterances in this fold's training split ({len(ids)} utterances, "
                           f"{len(speakers)} speakers): nothing to test a speaker probe on"}
    index = {s: i for i, s in enumerate(speakers)}
    x_tr, o_tr = bottleneck_features(model, ctx, train_ids, src, inputs)
    x_te, o_te = bottleneck_features(model, ctx, test_ids, src, inputs)
    mean, std = x_tr.mean(0), x_tr.std(0) + 1e-5
    x_tr, x_te = (x_tr - mean) / std, (x_te - mean) / std
    dev = ctx.device
    y_tr = torch.tensor([index[inputs.speakers[u]] for u in o_tr], device=dev)
    torch.manual_seed(ctx.cfg.train.seed)
    probe = mlp([x_tr.shape[1], *cfg.probe, len(speakers)]).to(dev)
    opt = torch.optim.Adam(probe.parameters(), lr=cfg.probe_lr)
    xt = torch.from_numpy(x_tr).float().to(dev)
    for _ in range(cfg.probe_epochs):
        for b in torch.randperm(len(xt), device=dev).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(probe(xt[b]), y_tr[b]).backward()
            opt.step()
    probe.eval()
    with torch.no_grad():
        p = torch.softmax(probe(torch.from_numpy(x_te).float().to(dev)), dim=-1).cpu().numpy()
    utts = sorted(set(o_te))
    at = {u: i for i, u in enumerate(utts)}
    total = np.zeros((len(utts), len(speakers)))
    for row, u in zip(p, o_te):
        total[at[u]] += row
    truth = np.array([index[inputs.speakers[u]] for u in utts])
    m = classification_metrics(truth, total.argmax(1))
    return {"ua": m["ua"], "wa": m["wa"], "speakers": len(speakers), "chance": 1.0 / len(speakers),
            "train_utterances": len(train_ids), "test_utterances": len(utts), "code_dim": int(x_tr.shape[1])}
