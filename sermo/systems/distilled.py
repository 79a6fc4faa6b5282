"""``distilled``: audio-textual distilled SSL models (paper 001).

de Oliveira, Prabhu, Gerkmann, Interspeech 2023. A speech encoder's frames and, optionally,
a text encoder's tokens are each pooled by the mean and the max over the sequence
(concatenated); the pooled vectors are concatenated and a feed-forward network (two linear
layers with tanh between, dropout 0.1) predicts arousal, valence and dominance on [0, 1]
with the loss 1 - CCC averaged over the three.

Rows per fold, for every speech encoder of the recipe: ``<encoder>`` (audio only) and
``<encoder>+text`` in the recipe's mode (``frozen``, ``ft`` or ``ft_frz``); with ``ft`` also
``<encoder>+text@ft_frz`` for the fine-tune vs freeze comparison (Figure 3). On the first
fold(s) two analyses run: layer importance (Figure 2: one frozen model per dimension with a
softmax weight per hidden state) and transcript robustness (Table 2: the audio+text model
with oracle and with each ASR engine's transcripts, and the engine's WER).
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sermo.data.batch import Batch
from sermo.data.io import write_json_atomic
from sermo.evaluation.metrics import DIMENSIONS, regression_metrics
from sermo.nn.layers import LayerWeighting, Standardize
from sermo.nn.losses import ccc_loss
from sermo.nn.pooling import MeanMaxPool
from sermo.systems import register
from sermo.systems.base import Output, SystemDef

MODES = ("frozen", "ft", "ft_frz")


@dataclass
class DistilledConfig:
    """Model section of the distilled recipe.

    Attributes:
        speech_encoders: the speech encoders compared (one audio and one audio+text row each).
        speech_layers: hidden states of each speech encoder the models read (paper: the last).
        text: whether to train the ``+text`` rows.
        mode: ``frozen`` (encoders fixed, head trained), ``ft`` (encoders fine-tuned, the CNN
            front end frozen; an encoder that is not a transformers model, such as log-mel,
            stays what it is) or ``ft_frz`` (the audio-only model fine-tuned, then frozen beside a
            frozen text encoder while a new head is trained).
        finetune_layers: top transformer layers fine-tuned in ``ft`` (``None``: all).
        text_finetune_layers: the same for the text encoder.
        text_from_store: when only the top text layers are fine-tuned, feed them the stored
            hidden state below them instead of running the frozen layers again (the same
            result up to the store's float16; much faster).
        hidden: width of the feed-forward network's hidden layer.
        dropout: dropout throughout (paper: 0.1).
        compare_ft_frz: with ``mode: ft``, also train ``<encoder>+text@ft_frz`` (Figure 3).
        layer_importance: run the layer-importance analysis (Figure 2).
        importance_encoders: encoders analysed (``None``: every speech encoder with more than
            one hidden state, and the text encoder).
        importance_epochs: epochs of each layer-importance model (``None``: train.epochs).
        transcript_engines: ASR engines of the transcript-robustness table (Table 2); one that
            is unavailable here is listed with the reason.
        robustness_encoder: the speech encoder of that table (``None``: the last one listed).
        robustness_utterances: transcribe at most this many utterances of the fold for it
            (``None``: all; pocketsphinx takes about a second per utterance).
        analysis_folds: the analyses run on this many folds (the first ones).
    """

    speech_encoders: list[str] = field(default_factory=lambda: ["wav2vec2-large-robust-12", "hubert-base",
                                                                "distilhubert"])
    speech_layers: list[int] | None = field(default_factory=lambda: [-1])
    text: bool = True
    mode: str = "ft"
    finetune_layers: int | None = None
    text_finetune_layers: int | None = None
    text_from_store: bool = True
    hidden: int = 256
    dropout: float = 0.1
    compare_ft_frz: bool = True
    layer_importance: bool = True
    importance_encoders: list[str] | None = None
    importance_epochs: int | None = None
    transcript_engines: list[str] = field(default_factory=lambda: ["whisper-base", "whisper-tiny", "pocketsphinx"])
    robustness_encoder: str | None = None
    robustness_utterances: int | None = None
    analysis_folds: int = 1


class Stream(nn.Module):
    """One modality to a pooled vector ``(B, 2D)``: stored features or a trainable encoder's
    hidden states, standardised, weighted over layers (softmax), mean and max over the
    sequence (padding never enters either)."""

    def __init__(self, num_layers: int, dim: int, *, encoder: nn.Module | None = None,
                 select: list[int] | None = None, top: int | None = None):
        super().__init__()
        self.encoder = encoder
        self.select = list(select) if select is not None else None
        self.top = top  # the encoder runs only its top layers, on the stored state below them
        if encoder is not None:
            num_layers = len(self.select) if self.select is not None else encoder.num_hidden_states
        self.norm = Standardize(num_layers, dim)
        self.layers = LayerWeighting(num_layers, "softmax")
        self.pool = MeanMaxPool()
        self.out_dim = 2 * dim

    def inputs(self, batch: Batch, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, L, T, D)`` hidden states and ``(B, T)`` mask of this stream's modality."""
        if self.encoder is None:
            return (batch.audio, batch.audio_mask) if kind == "audio" else (batch.text, batch.text_mask)
        if self.top is not None:
            x, mask = (batch.audio, batch.audio_mask) if kind == "audio" else (batch.text, batch.text_mask)
            hidden = self.encoder.forward_top(x[:, -1].float(), mask, self.top)
        elif kind == "audio":
            hidden, frames = self.encoder(batch.extras["wave"], batch.extras["wave_len"])
            mask = torch.arange(hidden.shape[2], device=hidden.device)[None] < frames[:, None]
        else:
            hidden, mask = self.encoder(batch.extras["tokens"], batch.extras["tokens_len"])
        if self.select is not None:
            hidden = hidden[:, self.select]
        return hidden, mask

    def forward(self, batch: Batch, kind: str) -> torch.Tensor:
        x, mask = self.inputs(batch, kind)
        return self.pool(self.layers(self.norm(x, mask)), mask)


class DistilledModel(nn.Module):
    """Speech stream, optional text stream, concatenation, FFN (linear, tanh, linear) -> A/V/D.

    ``targets`` are the dimensions the model learns (all three; one for the per-dimension
    layer-importance models).
    """

    def __init__(self, *, audio: tuple[int, int] | None, text: tuple[int, int] | None, cfg: DistilledConfig,
                 speech: nn.Module | None = None, text_model: nn.Module | None = None,
                 text_top: int | None = None, targets: tuple[int, ...] = (0, 1, 2)):
        super().__init__()
        self.audio = None
        if audio is not None or speech is not None:
            dim = int(speech.config.hidden_size) if speech is not None else audio[1]
            select = cfg.speech_layers if speech is not None else None
            self.audio = Stream(audio[0] if audio else 0, dim, encoder=speech, select=select)
        self.text = None
        if text is not None or text_model is not None:
            dim = text_model.dim if text_model is not None else text[1]
            select = [-1] if text_model is not None else None
            self.text = Stream(text[0] if text else 0, dim, encoder=text_model, select=select, top=text_top)
        width = sum(s.out_dim for s in (self.audio, self.text) if s is not None)
        self.ffn = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(width, cfg.hidden), nn.Tanh(),
                                 nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden, len(targets)))
        self.targets = list(targets)
        self.lr_scale = 1.0

    def forward(self, batch: Batch) -> Output:
        parts = []
        if self.audio is not None:
            parts.append(self.audio(batch, "audio"))
        if self.text is not None:
            parts.append(self.text(batch, "text"))
        emb = torch.cat(parts, dim=-1)
        return Output(dims=self.ffn(emb), embedding=emb)

    def losses(self, out: Output, batch: Batch) -> dict[str, torch.Tensor]:
        loss = ccc_loss(out.dims, batch.dims[:, self.targets])
        return {"loss": loss}

    def param_groups(self):
        """Fine-tuned encoders learn at ``lr_scale`` of the head's rate."""
        encoders = [s.encoder for s in (self.audio, self.text) if s is not None and s.encoder is not None]
        enc_ids = {id(p) for e in encoders for p in e.parameters()}
        head = [p for p in self.parameters() if id(p) not in enc_ids]
        return [(head, 1.0)] + [(list(e.parameters()), self.lr_scale) for e in encoders]


def freeze(module: nn.Module) -> nn.Module:
    """Fix every parameter of ``module`` (the FT=>FRZ second stage)."""
    for p in module.parameters():
        p.requires_grad = False
    return module


def _label(name: str) -> str:
    """A row name for an encoder: the registry name, or a Hub id's / folder's last part."""
    return Path(name.rstrip("/")).name if "/" in name else name


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", name)


class _Rows:
    """Builds, trains and predicts the models of one fold (shared by the rows and analyses)."""

    def __init__(self, ctx):
        self.ctx, self.cfg = ctx, ctx.cfg.model
        self._speech: dict[str, tuple] = {}
        self._text = None  # (TextSSL | None, reason), loaded once

    def speech(self, name: str):
        """A fresh trainable copy of speech encoder ``name`` in ``ft`` mode, else ``None``."""
        if self.cfg.mode == "frozen":
            return None
        if name not in self._speech:
            self._speech[name] = self.ctx.trainable_speech_encoder(name)
        enc, _ = self._speech[name]
        if enc is None:
            return None
        enc = copy.deepcopy(enc)
        enc.set_trainable_layers("all" if self.cfg.finetune_layers is None else self.cfg.finetune_layers)
        return enc

    def text_plan(self, *, trainable: bool, manifest=None) -> dict:
        """How a row reads text: ``{"src": FeatureSource | None, "model": TextSSL | None,
        "top": k | None, "tokens": TextSSL | None}``.

        Frozen (or no trainable copy here): the stored features. Fine-tuned in full: token ids
        through the whole encoder. Fine-tuned top k layers (``text_finetune_layers``) with
        ``text_from_store``: the stored hidden state below them through those k layers only
        (the frozen layers underneath give the same output every epoch). ``manifest``: the
        transcripts (default: the run's).
        """
        ctx, cfg = self.ctx, self.cfg
        manifest = manifest or ctx.run.manifest
        frozen = {"src": self.text_source(ctx.cfg.data.text_layers, manifest), "model": None, "top": None,
                  "tokens": None}
        if not trainable:
            return frozen
        if self._text is None:
            self._text = ctx.trainable_text_encoder()
        enc, _ = self._text
        if enc is None:
            return frozen
        enc = copy.deepcopy(enc)
        k = cfg.text_finetune_layers
        enc.set_trainable_layers("all" if k is None else k)
        if k is not None and cfg.text_from_store:
            below = enc.num_hidden_states - 1 - k
            return {"src": self.text_source([below], manifest), "model": enc, "top": k, "tokens": None}
        return {"src": None, "model": enc, "top": None, "tokens": enc}

    def text_source(self, layers, manifest):
        """Stored text features of the recipe's text encoder for ``manifest``."""
        from sermo.training.datamodule import FeatureSource

        if manifest is self.ctx.run.manifest:
            return self.ctx.run.source(self.ctx.cfg.data.text_encoder, layers)
        return FeatureSource(self.ctx.cfg.data.text_encoder, layers, manifest, self.ctx.run.store,
                             progress=self.ctx.run.progress)

    def build(self, stage: str, *, audio_src=None, text: dict | None = None, speech=None,
              targets=(0, 1, 2)) -> DistilledModel:
        ctx = self.ctx
        ctx.seed(stage)
        text = text or {}
        src, text_model = text.get("src"), text.get("model")
        model = DistilledModel(audio=(audio_src.num_layers, audio_src.dim) if audio_src is not None else None,
                               text=(src.num_layers, src.dim) if src is not None else None,
                               cfg=self.cfg, speech=speech, text_model=text_model, text_top=text.get("top"),
                               targets=targets)
        model.lr_scale = ctx.cfg.train.encoder_lr_scale
        if model.audio is not None and speech is None:
            model.audio.norm.set(*ctx.feature_stats("audio", audio_src))
        if model.text is not None and text_model is None:
            model.text.norm.set(*ctx.feature_stats("text", src))
        return model

    def data(self, split: str, *, audio_src=None, text: dict | None = None, wave=False, transcripts=None,
             ids=None):
        """A split's dataset: stored features, or waveforms / token ids for trainable encoders."""
        extras = {}
        if wave:
            extras.update(self.ctx.waveforms())
        text = text or {}
        tokens = text.get("tokens")
        if tokens is not None:
            words = transcripts if transcripts is not None else self.ctx.transcripts()
            extras["tokens"] = lambda u: tokens.tokenize(words[u])
        return self.ctx.dataset(split, audio_source=None if wave else audio_src, text_source=text.get("src"),
                                extras=extras, ids=ids)


def run_fold(ctx) -> list:
    """The rows of one fold, then (on the first ``analysis_folds`` folds) the analyses."""
    cfg: DistilledConfig = ctx.cfg.model
    if cfg.mode not in MODES:
        raise ValueError(f"unknown distilled mode {cfg.mode!r}; known: {', '.join(MODES)}")
    if not cfg.speech_encoders:
        raise ValueError("model.speech_encoders is empty: name at least one speech encoder")
    rows = _Rows(ctx)
    if cfg.text and not ctx.cfg.data.text_encoder:
        raise ValueError("model.text is true but data.text_encoder is null: name a text encoder")
    results = []
    for name in cfg.speech_encoders:
        src = ctx.run.source(name, cfg.speech_layers)
        results += _encoder_rows(ctx, rows, name, src)
    digits = re.sub(r"\D", "", ctx.fold.name)  # fold1, fold2, ... or "partitions"
    if (int(digits) if digits else 1) <= cfg.analysis_folds:
        analysis = ctx.folder / "analysis"
        analysis.mkdir(exist_ok=True)
        if cfg.layer_importance:
            write_json_atomic(analysis / "layer_importance.json", layer_importance(ctx, rows))
        if cfg.text and cfg.transcript_engines:
            write_json_atomic(analysis / "transcripts.json", transcript_robustness(ctx, rows))
    return results


def _encoder_rows(ctx, rows: _Rows, name: str, src) -> list:
    """``<name>`` and ``<name>+text`` (and ``<name>+text@ft_frz``) for one speech encoder."""
    cfg = rows.cfg
    speech = rows.speech(name)
    wave = speech is not None
    out = []

    def audio_data(split):
        return rows.data(split, audio_src=src, wave=wave)

    label = _label(name)
    audio_model = ctx.fit(rows.build(label, audio_src=src, speech=speech), _slug(label), audio_data("train"),
                          audio_data("valid"))
    out.append(ctx.row(label, ("audio",), audio_model, ctx.predict(audio_model, audio_data),
                       inputs={"audio": src, "speech_model": name if wave else None}))
    if not cfg.text:
        return out
    if cfg.mode == "ft_frz":
        plans = [("ft_frz", label + "+text")]
    else:
        plans = [(cfg.mode, label + "+text")]
        if cfg.mode == "ft" and cfg.compare_ft_frz:
            plans.append(("ft_frz", label + "+text@ft_frz"))
    for mode, row in plans:
        text = rows.text_plan(trainable=mode == "ft")
        if mode == "ft_frz":
            # the audio-only model's stream, fine-tuned above, frozen beside the frozen text encoder
            model = rows.build(row, audio_src=src, text=text)
            model.audio = freeze(copy.deepcopy(audio_model.audio))
            freeze(model.text)
        else:
            model = rows.build(row, audio_src=src, text=text, speech=rows.speech(name))

        def data(split, text=text):
            return rows.data(split, audio_src=src, text=text, wave=wave)

        model = ctx.fit(model, _slug(row), data("train"), data("valid"))
        out.append(ctx.row(row, ("audio", "text"), model, ctx.predict(model, data),
                           info={"mode": mode},
                           inputs={"audio": src, "text": text["src"], "speech_model": name if wave else None,
                                   "text_model": ctx.cfg.data.text_encoder if text["model"] is not None else None,
                                   "text_top": text["top"]}))
    return out


def layer_importance(ctx, rows: _Rows) -> dict:
    """Figure 2: per encoder and dimension, the softmax layer weights a frozen model learns
    when trained on that dimension alone (index 0: the CNN / embedding output)."""
    cfg = rows.cfg
    names = cfg.importance_encoders
    if names is None:
        names = [n for n in cfg.speech_encoders] + ([ctx.cfg.data.text_encoder] if cfg.text else [])
    train_cfg = ctx.with_train(epochs=cfg.importance_epochs or ctx.cfg.train.epochs)
    out = {}
    for name in names:
        is_text = name == ctx.cfg.data.text_encoder
        src = ctx.run.source(name, None)
        if src.num_layers < 2:
            out[_label(name)] = {"skipped": f"{_label(name)} has one hidden state: nothing to weigh"}
            continue
        weights = {}
        for j, dim in enumerate(DIMENSIONS):
            stage = f"importance-{_slug(_label(name))}-{dim}"
            kw = {"text": {"src": src}} if is_text else {"audio_src": src}
            model = rows.build(stage, targets=(j,), **kw)

            def data(split, kw=kw):
                return rows.data(split, **kw)

            model = ctx.fit(model, stage, data("train"), data("valid"), train_cfg)
            stream = model.text if is_text else model.audio
            weights[dim] = stream.layers.weights().detach().cpu().tolist()
        out[_label(name)] = {"modality": "text" if is_text else "audio", "weights": weights}
    return out


def transcript_robustness(ctx, rows: _Rows) -> dict:
    """Table 2: the audio+text model trained and tested with the oracle transcripts and with
    each engine's, on the same utterances; each engine's WER against the oracle."""
    from sermo.encoders.asr import get_asr
    from sermo.features.transcripts import transcribe_manifest
    from sermo.training.task import predict

    cfg = rows.cfg
    name = cfg.robustness_encoder or cfg.speech_encoders[-1]
    src = ctx.run.source(name, cfg.speech_layers)
    rng = np.random.default_rng(ctx.cfg.train.seed)
    splits = {"train": list(ctx.fold.train), "valid": list(ctx.fold.valid), "test": list(ctx.fold.test)}
    total = sum(len(v) for v in splits.values())
    if cfg.robustness_utterances and cfg.robustness_utterances < total:
        share = cfg.robustness_utterances / total
        splits = {k: sorted(rng.choice(v, max(2, int(round(len(v) * share))), replace=False).tolist())
                  for k, v in splits.items()}
    keep = {u for v in splits.values() for u in v}
    manifest = ctx.run.manifest
    sub = type(manifest)(manifest.df[manifest.df["id"].isin(keep)].reset_index(drop=True))
    results = {"encoder": _label(name), "utterances": {k: len(v) for k, v in splits.items()}, "rows": []}
    for engine in ["oracle"] + list(cfg.transcript_engines):
        entry = {"transcripts": engine}
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
            asr_manifest, report = transcribe_manifest(sub, ctx.run.store, engine=engine, progress=ctx.run.progress)
            entry["wer"] = report.wer
        text = rows.text_plan(trainable=cfg.mode == "ft", manifest=asr_manifest)
        transcripts = dict(zip(asr_manifest.df["id"], asr_manifest.df["transcript"]))
        speech = rows.speech(name)
        stage = f"transcripts-{_slug(engine)}"
        model = rows.build(stage, audio_src=src, text=text, speech=speech)

        def data(split, text=text, transcripts=transcripts, speech=speech):
            return rows.data("train", audio_src=src, text=text, wave=speech is not None,
                             transcripts=transcripts, ids=splits[split])

        model = ctx.fit(model, stage, data("train"), data("valid"))
        raw = predict(model, ctx.batches(data("test")))
        truth = np.stack([ctx.run.labels.dims[u] for u in raw["ids"]])
        metrics = regression_metrics(truth, raw["dims"])
        entry.update({f"ccc_{d}": metrics[f"ccc_{d}"] for d in DIMENSIONS})
        results["rows"].append(entry)
    return results



def _fold_analyses(out: Path, name: str) -> list:
    return [json.loads(p.read_text()) for p in sorted(out.glob(f"*/analysis/{name}"))]


def finish(out: Path, results: dict) -> str:
    """Figures 2 and 3 and Table 2 from the run folder."""
    from sermo.evaluation.report import markdown_table

    sections = []
    importance = _fold_analyses(out, "layer_importance.json")
    if importance:
        path = plot_layer_importance(importance, out / "plots" / "layer_importance.png")
        lines = []
        for name, entry in importance[0].items():
            if "skipped" in entry:
                lines.append(f"- `{name}`: {entry['skipped']}")
                continue
            mean = {d: np.mean([imp[name]["weights"][d] for imp in importance], axis=0) for d in DIMENSIONS}
            peaks = ", ".join(f"{d} peaks at layer {int(np.argmax(w))}" for d, w in mean.items())
            lines.append(f"- `{name}` ({entry['modality']}, {len(mean['valence'])} hidden states): {peaks}")
        sections.append("## Layer importance (Figure 2)\n\nOne frozen model per dimension, softmax weights over "
                        "the hidden states (index 0: the CNN / embedding output).\n\n" + "\n".join(lines)
                        + (f"\n\n![layer importance]({path.relative_to(out)})\n" if path else "\n"))
    gains = ft_frz_gains(results)
    if gains:
        path = plot_gains(gains, out / "plots" / "ft_vs_frz.png")
        table = markdown_table([{"encoder": g["encoder"], "test set": g["test"], "mode": g["mode"],
                                 "valence CCC audio": g["audio"], "valence CCC audio+text": g["audio_text"],
                                 "relative gain": f"{g['gain']:+.1%}"} for g in gains])
        sections.append("## Fine-tune vs freeze (Figure 3)\n\nRelative valence CCC gain of audio+text over "
                        f"audio only.\n\n{table}\n" + (f"\n![gains]({path.relative_to(out)})\n" if path else ""))
    robust = _fold_analyses(out, "transcripts.json")
    if robust:
        lines = []
        for entry in robust[0]["rows"]:
            if "skipped" in entry:
                lines.append({"transcripts": entry["transcripts"], "WER": "-", "note": entry["skipped"]})
                continue
            same = [e for r in robust for e in r["rows"] if e["transcripts"] == entry["transcripts"] and "skipped" not in e]
            row = {"transcripts": entry["transcripts"], "WER": f"{np.mean([e['wer'] for e in same]):.1%}"}
            row.update({f"CCC {d[0].upper()}": float(np.mean([e[f'ccc_{d}'] for e in same])) for d in DIMENSIONS})
            row["note"] = ""
            lines.append(row)
        sizes = robust[0]["utterances"]
        sections.append(f"## Transcript robustness (Table 2)\n\n`{robust[0]['encoder']}` + text, trained and tested "
                        f"with each transcript source on the same utterances (train {sizes['train']}, valid "
                        f"{sizes['valid']}, test {sizes['test']}; {len(robust)} fold(s)).\n\n"
                        + markdown_table(lines))
    return "\n".join(sections)


def ft_frz_gains(results: dict) -> list[dict]:
    """Relative valence CCC gain of ``+text`` (mode ft) and ``+text@ft_frz`` over the audio row."""
    rows = {r["name"]: r for r in results["rows"] if not r.get("skipped")}
    gains = []
    for name, row in rows.items():
        if "+text" in name or f"{name}+text" not in rows:
            continue
        for suffix in ("+text", "+text@ft_frz"):
            other = rows.get(name + suffix)
            if other is None:
                continue
            mode = ((other.get("info") or [{}])[0]).get("mode", "ft")
            tests = [(row["test_set"], row["mean"], other["mean"])]
            tests += [(t, row["tests"][t]["mean"], other.get("tests", {}).get(t, {}).get("mean", {}))
                      for t in row.get("tests", {})]
            for test, a, b in tests:
                if "ccc_valence" in a and "ccc_valence" in b:
                    base = a["ccc_valence"]
                    gains.append({"encoder": name, "test": test, "mode": "FT=>FRZ" if mode == "ft_frz" else mode.upper(),
                                  "audio": base, "audio_text": b["ccc_valence"],
                                  "gain": (b["ccc_valence"] - base) / abs(base) if base else float("nan")})
    return gains


def plot_layer_importance(importance: list[dict], path: Path) -> Path | None:
    """One panel per encoder: the mean layer weight per dimension over the analysed folds."""
    import matplotlib.pyplot as plt

    from sermo.evaluation.plots import save_figure

    names = [n for n, e in importance[0].items() if "skipped" not in e]
    if not names:
        return None
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.5), squeeze=False)
    for ax, name in zip(axes[0], names):
        for d in DIMENSIONS:
            w = np.mean([imp[name]["weights"][d] for imp in importance], axis=0)
            ax.plot(range(len(w)), w, marker="o", label=d)
        ax.set_title(name)
        ax.set_xlabel("hidden state (0 = CNN / embeddings)")
        ax.set_ylabel("normalised weight")
        ax.legend()
    return save_figure(fig, path)


def plot_gains(gains: list[dict], path: Path) -> Path | None:
    """Bars of the relative valence gain per encoder, one colour per mode, a panel per test set."""
    import matplotlib.pyplot as plt

    from sermo.evaluation.plots import save_figure

    tests = sorted({g["test"] for g in gains})
    modes = sorted({g["mode"] for g in gains})
    fig, axes = plt.subplots(1, len(tests), figsize=(5 * len(tests), 3.5), squeeze=False)
    for ax, test in zip(axes[0], tests):
        encs = sorted({g["encoder"] for g in gains if g["test"] == test})
        width = 0.8 / len(modes)
        for k, mode in enumerate(modes):
            vals = [next((100 * g["gain"] for g in gains if g["test"] == test and g["encoder"] == e
                          and g["mode"] == mode), 0.0) for e in encs]
            ax.bar(np.arange(len(encs)) + k * width, vals, width, label=mode)
        ax.set_xticks(np.arange(len(encs)) + width * (len(modes) - 1) / 2, encs, rotation=15)
        ax.set_ylabel("valence CCC gain (%)")
        ax.set_title(test)
        ax.legend()
    return save_figure(fig, path)


def build_model(row: str, cfg: DistilledConfig, spec: dict) -> DistilledModel:
    """A row's model for a bundle: ``spec`` may carry ``speech_model`` / ``text_model``
    (fine-tuned encoders, rebuilt from their architecture before the weights are loaded) and
    ``text_top`` (the text model runs its top layers on the stored state below them)."""
    from sermo.encoders.registry import checkpoint_folder
    from sermo.encoders.speech import SpeechSSL
    from sermo.encoders.text import TextSSL

    speech = SpeechSSL(checkpoint_folder(spec["speech_model"])[1]) if spec.get("speech_model") else None
    text_model = TextSSL(checkpoint_folder(spec["text_model"])[1]) if spec.get("text_model") else None
    with_text = "+text" in row
    return DistilledModel(audio=tuple(spec["audio"]) if spec.get("audio") else None,
                          text=tuple(spec["text"]) if with_text and spec.get("text") else None,
                          cfg=cfg, speech=speech, text_model=text_model if with_text else None,
                          text_top=spec.get("text_top"))


PAPER = {
    "msp-podcast": {  # Table 1, seen scenarios (Test1), MSP-Podcast v1.10
        "wav2vec2-large-robust-12": {"ccc_arousal": 0.627, "ccc_valence": 0.470, "ccc_dominance": 0.521},
        "hubert-base": {"ccc_arousal": 0.608, "ccc_valence": 0.440, "ccc_dominance": 0.486},
        "distilhubert": {"ccc_arousal": 0.622, "ccc_valence": 0.328, "ccc_dominance": 0.513},
        "wav2vec2-large-robust-12+text": {"ccc_arousal": 0.619, "ccc_valence": 0.560, "ccc_dominance": 0.484},
        "hubert-base+text": {"ccc_arousal": 0.613, "ccc_valence": 0.532, "ccc_dominance": 0.493},
        "distilhubert+text": {"ccc_arousal": 0.614, "ccc_valence": 0.519, "ccc_dominance": 0.509},
    },
}

register(SystemDef(
    name="distilled", config_cls=DistilledConfig, run_fold=run_fold, build_model=build_model, paper=PAPER,
    finish=finish,
    title="Audio-textual distilled SSL models (de Oliveira, Prabhu, Gerkmann, Interspeech 2023)",
))
