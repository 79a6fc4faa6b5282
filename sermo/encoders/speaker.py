"""Speaker embeddings: Resemblyzer (its weights ship in the package)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sermo.data.audio import SAMPLE_RATE
from sermo.data.vad import pkg_resources_shim
from sermo.encoders.base import Encoder, EncoderOutput, file_digest


class ResemblyzerEncoder(Encoder):
    """256-dim utterance embedding of Resemblyzer's GE2E voice encoder: one layer, one frame."""

    name = "resemblyzer"
    modality = "audio"
    num_layers = 1
    dim = 256
    frame_rate = None

    def __init__(self, *, layers=None, dtype: str = "float16", device: str = "cpu"):
        super().__init__(layers=layers, dtype=dtype)
        pkg_resources_shim()
        import resemblyzer

        self._resemblyzer = resemblyzer
        self._model = resemblyzer.VoiceEncoder(device=device, verbose=False)
        self._hash = file_digest([Path(resemblyzer.__file__).parent / "pretrained.pt"])

    def weights_hash(self) -> str:
        return self._hash

    def num_frames(self, samples: int) -> int:
        return 1

    def to(self, device) -> "ResemblyzerEncoder":
        import torch

        self._model.to(device)
        self._model.device = torch.device(device)
        return self

    def _encode_batch(self, items: list) -> list[EncoderOutput]:
        outs = []
        for x in items:
            wav = self._resemblyzer.preprocess_wav(np.asarray(x, dtype=np.float32), source_sr=SAMPLE_RATE)
            if len(wav) < 1600:  # all trimmed away as silence: embed the raw signal
                wav = np.asarray(x, dtype=np.float32)
            emb = self._model.embed_utterance(wav)
            outs.append(EncoderOutput(emb[None, None].astype(np.float32), None))
        return outs


def speaker_embeddings(embeddings: dict[str, np.ndarray], speakers: dict[str, str], *,
                       max_utterances: int = 100, seed: int = 0) -> dict[str, np.ndarray]:
    """Per-speaker embedding: the mean over up to ``max_utterances`` random utterances of the
    speaker (paper 004), L2-normalised like Resemblyzer's own.

    Args:
        embeddings: utterance id -> ``(256,)`` utterance embedding.
        speakers: utterance id -> speaker (utterances without a speaker are skipped).
    """
    out = {}
    for spk, ids in chosen_utterances(speakers, embeddings, max_utterances=max_utterances, seed=seed).items():
        mean = np.mean([np.asarray(embeddings[u], dtype=np.float32).ravel() for u in ids], axis=0)
        out[spk] = mean / (np.linalg.norm(mean) + 1e-9)
    return out


def chosen_utterances(speakers: dict[str, str], available, *, max_utterances: int = 100,
                      seed: int = 0) -> dict[str, list[str]]:
    """Per speaker, the (up to ``max_utterances``) random utterances among ``available`` whose
    embeddings :func:`speaker_embeddings` averages: known before any is computed, so only these
    need a speaker encoder's pass."""
    rng = np.random.default_rng(seed)
    by_speaker: dict[str, list[str]] = {}
    for uid, spk in speakers.items():
        if spk is not None and uid in available:
            by_speaker.setdefault(spk, []).append(uid)
    out = {}
    for spk, ids in sorted(by_speaker.items()):
        ids = sorted(ids)
        out[spk] = [ids[i] for i in rng.choice(len(ids), min(max_utterances, len(ids)), replace=False)]
    return out


