"""Table 3: how much speaker identity the frozen bottleneck codes keep (a speaker-ID probe)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from sermo.nn.layers import mlp
from sermo.systems.cross_representation.config import CrossRepresentationConfig
from sermo.systems.cross_representation.model import CrossRepresentation


@torch.no_grad()
def bottleneck_features(model: CrossRepresentation, ctx, data_ids, src, inputs) -> tuple[np.ndarray, list[str]]:
    """Flattened codes of every chunk of the given utterances, and each chunk's utterance."""
    model.eval()
    ds = ctx.dataset("train", audio=src, speaker=inputs.speaker, ids=list(data_ids))
    feats, owners = [], []
    for batch in ctx.batches(ds, 32):
        segs, spk, owner = model.chunks(batch)
        feats.append(model.codes(segs, spk).numpy())
        owners += [batch.ids[i] for i in owner.tolist()]
    return np.concatenate(feats), owners


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
    rng = np.random.default_rng(ctx.cfg.train.seed)
    train_ids, test_ids = [], []
    for spk in speakers:
        own = [u for u in ids if inputs.speakers[u] == spk]
        rng.shuffle(own)
        k = int(round(cfg.probe_share * len(own)))
        train_ids += own[:k]
        test_ids += own[k:]
    index = {s: i for i, s in enumerate(speakers)}
    x_tr, o_tr = bottleneck_features(model, ctx, train_ids, src, inputs)
    x_te, o_te = bottleneck_features(model, ctx, test_ids, src, inputs)
    mean, std = x_tr.mean(0), x_tr.std(0) + 1e-5
    x_tr, x_te = (x_tr - mean) / std, (x_te - mean) / std
    y_tr = torch.tensor([index[inputs.speakers[u]] for u in o_tr])
    torch.manual_seed(ctx.cfg.train.seed)
    probe = mlp([x_tr.shape[1], *cfg.probe, len(speakers)])
    opt = torch.optim.Adam(probe.parameters(), lr=cfg.probe_lr)
    xt = torch.from_numpy(x_tr).float()
    for _ in range(cfg.probe_epochs):
        for b in torch.randperm(len(xt)).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(probe(xt[b]), y_tr[b]).backward()
            opt.step()
    probe.eval()
    with torch.no_grad():
        p = torch.softmax(probe(torch.from_numpy(x_te).float()), dim=-1).numpy()
    utts = sorted(set(o_te))
    at = {u: i for i, u in enumerate(utts)}
    total = np.zeros((len(utts), len(speakers)))
    for row, u in zip(p, o_te):
        total[at[u]] += row
    truth = np.array([index[inputs.speakers[u]] for u in utts])
    m = classification_metrics(truth, total.argmax(1))
    return {"ua": m["ua"], "wa": m["wa"], "speakers": len(speakers), "chance": 1.0 / len(speakers),
            "train_utterances": len(train_ids), "test_utterances": len(utts), "code_dim": int(x_tr.shape[1])}
