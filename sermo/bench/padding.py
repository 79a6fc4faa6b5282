"""``sermo bench padding``: a speech model without an attention mask, batched padded or exactly.

HuBERT Base, wav2vec 2.0 Base and DistilHuBERT take no attention mask; sermo runs their batches
zero-padded (``data.speech_padding: bucket``, as their model cards say) or one utterance at a time
(``exact``). On the built-in corpus, with a HuBERT-Base-shaped model (the real ``hubert-base``
when the Hugging Face cache has it, else random weights of its architecture), this measures:

- how far padded features are from exact ones: per utterance and layer, the mean over frames of
  the cosine similarity of the two frames;
- a linear probe's unweighted accuracy on each (mean-pooled last layer, sessions 1-4 train,
  session 5 tests);
- fine-tuning speed: optimizer steps per second of the top two layers and a linear head, on the
  same length-bucketed batches training takes, padded against one forward pass per utterance.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

from sermo.data.io import write_text_atomic
from sermo.evaluation.report import markdown_table


def _features(folder: str, waves: list[np.ndarray], padding: str) -> tuple[list[np.ndarray], float]:
    from sermo.encoders.speech import HFSpeechEncoder

    enc = HFSpeechEncoder(folder, name="hubert-base-sized", padding=padding, dtype="float32")
    t0 = time.perf_counter()
    outs = enc.encode_batch(waves)
    return [np.asarray(o.hidden, dtype=np.float32) for o in outs], time.perf_counter() - t0


def _cosines(a: list[np.ndarray], b: list[np.ndarray]) -> np.ndarray:
    """``(utterances, layers)``: mean over frames of the cosine similarity of matching frames."""
    out = []
    for x, y in zip(a, b):
        num = (x * y).sum(-1)
        den = np.linalg.norm(x, axis=-1) * np.linalg.norm(y, axis=-1) + 1e-12
        out.append((num / den).mean(-1))
    return np.stack(out)


def _probe_ua(feats: list[np.ndarray], classes: np.ndarray, test: np.ndarray) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from sermo.evaluation.metrics import unweighted_accuracy

    x = np.stack([f[-1].mean(0) for f in feats])
    scaler = StandardScaler().fit(x[~test])
    clf = LogisticRegression(max_iter=2000, class_weight="balanced").fit(scaler.transform(x[~test]), classes[~test])
    return float(unweighted_accuracy(classes[test], clf.predict(scaler.transform(x[test]))))


def _steps_per_second(folder: str, waves: list[np.ndarray], padding: str, *, batch: int, steps: int,
                      seed: int) -> float:
    import torch

    from sermo.encoders.speech import SpeechSSL
    from sermo.training.datamodule import BucketBatchSampler

    torch.manual_seed(seed)
    ssl = SpeechSSL(folder, padding=padding)
    ssl.set_trainable_layers(2)
    ssl.train()
    head = torch.nn.Linear(int(ssl.config.hidden_size), 4)
    opt = torch.optim.Adam([p for p in ssl.parameters() if p.requires_grad] + list(head.parameters()), lr=1e-5)
    # the batches training takes: length-bucketed (sorted within pools of 50 batches), shuffled
    sampler = BucketBatchSampler([len(w) for w in waves], batch, shuffle=True, seed=seed)
    batches = [b for b in sampler if len(b) == batch][: steps + 1]

    def step(idx) -> None:
        lengths = torch.tensor([len(waves[i]) for i in idx])
        x = torch.zeros(len(idx), int(lengths.max()))
        for row, i in enumerate(idx):
            x[row, : len(waves[i])] = torch.from_numpy(waves[i])
        hidden, frames = ssl(x, lengths)
        mask = (torch.arange(hidden.shape[2])[None] < frames[:, None]).float()
        pooled = (hidden[:, -1] * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        loss = head(pooled).logsumexp(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    step(batches[0])  # warm-up, not timed
    t0 = time.perf_counter()
    for idx in batches[1:]:
        step(idx)
    return (len(batches) - 1) / (time.perf_counter() - t0)


def run_padding_bench(out_dir: Path, *, utterances: int = 60, corpus: Path | None = None, seed: int = 0,
                      batch: int = 8, steps: int = 4) -> Path:
    """Run the benchmark; write ``padding.md`` and ``padding.json`` to ``out_dir``."""
    from sermo.bench.extract import hubert_base_sized
    from sermo.data.audio import SAMPLE_RATE, load_audio
    from sermo.data.corpora import prepare
    from sermo.data.labels import get_label_space
    from sermo.data.synth import synthesize_corpus

    work = Path(tempfile.mkdtemp(prefix="sermo-bench-"))
    if corpus is None:
        corpus = work / "corpus"
        synthesize_corpus("iemocap", corpus, utterances=utterances, seed=seed, progress=False)
    manifest = prepare("iemocap", corpus)
    df = manifest.df.head(utterances)
    space = get_label_space("iemocap-4")
    waves = [np.asarray(load_audio(p), dtype=np.float32) for p in df["audio"]]
    folder = hubert_base_sized(work / "hubert-base-sized", seed=seed)
    exact, exact_s = _features(folder, waves, "exact")
    padded, padded_s = _features(folder, waves, "bucket")
    cos = _cosines(exact, padded)
    classes = np.array([space.index_of(c) for c in df["category"]])
    keep = classes >= 0
    test = (df["session"].astype(str).to_numpy() == str(df["session"].max()))[keep]
    ua = {name: _probe_ua([f for f, k in zip(feats, keep) if k], classes[keep], test)
          for name, feats in (("exact", exact), ("bucket", padded))}
    speed = {p: _steps_per_second(folder, waves, p, batch=batch, steps=steps, seed=seed) for p in ("exact", "bucket")}
    seconds = float(sum(len(w) for w in waves) / SAMPLE_RATE)
    facts = {"utterances": len(waves), "audio_seconds": seconds, "real_hubert": not folder.startswith(str(work)),
             "cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
             "cosine_last_layer_mean": float(cos[:, -1].mean()), "cosine_last_layer_min": float(cos[:, -1].min()),
             "cosine_by_layer": cos.mean(0).round(5).tolist(), "probe_ua": ua,
             "extract_seconds": {"exact": exact_s, "bucket": padded_s},
             "train_steps_per_second": speed, "train_speedup": speed["bucket"] / speed["exact"],
             "batch": batch, "steps": steps}
    rows = [{"padding": p, "extraction s": facts["extract_seconds"][p], "probe UA": ua[p],
             "train steps/s": speed[p]} for p in ("exact", "bucket")]
    text = (f"# sermo bench padding\n\n{len(waves)} utterances, {seconds:.0f} s of audio (built-in corpus), CPU; "
            f"HuBERT-Base-shaped model ({'real weights' if facts['real_hubert'] else 'random weights'}), no "
            "attention mask.\n\n" + markdown_table(rows, ["padding", "extraction s", "probe UA", "train steps/s"])
            + f"\nPadded (bucket) against exact features, cosine similarity per utterance and layer (mean over "
            f"frames): mean {facts['cosine_mean']:.4f}, lowest {facts['cosine_min']:.4f}; last layer mean "
            f"{facts['cosine_last_layer_mean']:.4f}, lowest {facts['cosine_last_layer_min']:.4f}. Fine-tuning the "
            f"top two layers, batches of {batch}: {facts['train_speedup']:.2f}x the steps per second of one "
            f"forward pass per utterance.\n")
    out_dir.mkdir(parents=True, exist_ok=True)
    report = out_dir / "padding.md"
    write_text_atomic(report, text)
    write_text_atomic(out_dir / "padding.json", json.dumps(facts, indent=2))
    return report
