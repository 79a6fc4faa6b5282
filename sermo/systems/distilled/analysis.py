"""The first folds' analyses: layer importance (Figure 2) and transcript robustness (Table 2)."""

from __future__ import annotations

from typing import Any

import numpy as np

from sermo.evaluation.metrics import DIMENSIONS
from sermo.systems.api import FoldContext, stage_name
from sermo.systems.distilled.rows import Rows, label


def layer_importance(ctx: FoldContext, rows: Rows) -> dict:
    """Figure 2: per encoder and dimension, the softmax layer weights a frozen model learns
    when trained on that dimension alone (index 0: the CNN / embedding output)."""
    cfg = rows.cfg
    names = cfg.importance_encoders
    if names is None:
        names = [n for n in cfg.speech_encoders] + ([ctx.cfg.data.text_encoder] if cfg.text else [])
    train_cfg = ctx.with_train(epochs=cfg.importance_epochs or ctx.cfg.train.epochs)
    out: dict[str, dict] = {}
    for name in names:
        is_text = name == ctx.cfg.data.text_encoder
        src = ctx.features(name)
        if src.num_layers < 2:
            out[label(name)] = {"skipped": f"{label(name)} has one hidden state: nothing to weigh"}
            continue
        weights: dict[str, list[float]] = {}
        for j, dim in enumerate(DIMENSIONS):
            stage = f"importance-{stage_name(label(name))}-{dim}"
            kw = {"text": {"src": src}} if is_text else {"audio_src": src}
            model = rows.build(stage, targets=(j,), **kw)

            def data(split, kw=kw):
                return rows.data(split, **kw)

            model = ctx.fit(model, stage, data("train"), data("valid"), train_cfg)
            stream = model.text if is_text else model.audio
            assert stream is not None
            weights[dim] = stream.layers.weights().detach().cpu().tolist()
        out[label(name)] = {"modality": "text" if is_text else "audio", "weights": weights}
    return out


def transcript_robustness(ctx: FoldContext, rows: Rows) -> dict:
    """Table 2: the audio+text model trained and tested with the oracle transcripts and with
    each engine's, on the same utterances; each engine's WER against the oracle."""
    from sermo.encoders.asr import get_asr

    cfg = rows.cfg
    name = cfg.robustness_encoder or cfg.speech_encoders[-1]
    rng = np.random.default_rng(ctx.cfg.train.seed)
    splits = {"train": list(ctx.ids("train")), "valid": list(ctx.ids("valid")), "test": list(ctx.ids(ctx.tests[0]))}
    total = sum(len(v) for v in splits.values())
    if cfg.robustness_utterances and cfg.robustness_utterances < total:
        share = cfg.robustness_utterances / total
        splits = {k: sorted(rng.choice(v, max(2, int(round(len(v) * share))), replace=False).tolist())
                  for k, v in splits.items()}
    keep = {u for v in splits.values() for u in v}
    manifest = ctx.manifest
    sub = type(manifest)(manifest.df[manifest.df["id"].isin(keep)].reset_index(drop=True))
    results: dict[str, Any] = {"encoder": label(name), "utterances": {k: len(v) for k, v in splits.items()}, "rows": []}
    for engine in ["oracle"] + list(cfg.transcript_engines):
        entry: dict[str, Any] = {"transcripts": engine}
        if engine == "oracle":
            asr_manifest = sub
            entry["wer"] = 0.0
        else:
            try:
                get_asr(engine)
            except Exception as exc:  # an engine whose model is not here is reported, not fatal
                entry["skipped"] = str(exc).splitlines()[0].split(". ")[0]
                results["rows"].append(entry)
                continue
            asr_manifest, entry["wer"] = ctx.transcribe(sub, engine)
        text = rows.text_plan(trainable=cfg.mode == "ft", manifest=asr_manifest)
        transcripts = dict(zip(asr_manifest.df["id"], asr_manifest.df["transcript"]))
        speech = rows.speech(name)
        src = rows.speech_source(name, speech)
        stage = f"transcripts-{stage_name(engine)}"
        model = rows.build(stage, audio_src=src, text=text, speech=speech)

        def data(split, text=text, transcripts=transcripts, src=src):
            return rows.data("train", audio_src=src, text=text,
                             transcripts=transcripts, ids=splits[split])

        model = ctx.fit(model, stage, data("train"), data("valid"))
        metrics = ctx.score(ctx.predict(model, data, ["test"])["test"])
        entry.update({f"ccc_{d}": metrics[f"ccc_{d}"] for d in DIMENSIONS})
        results["rows"].append(entry)
    return results
