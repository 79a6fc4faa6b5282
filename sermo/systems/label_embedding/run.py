"""One fold of label_embedding: every row, score fusion, then the first folds' analyses."""

from __future__ import annotations

import numpy as np

from sermo.systems.api import FoldContext, RowResult, stage_name
from sermo.systems.common import fuse, lacking, softmax
from sermo.systems.label_embedding.analysis import attention_example, compare_inits, k_grid
from sermo.systems.label_embedding.config import ARCHITECTURES, SPEECH_INITS, TEXT_INITS, LabelEmbeddingConfig
from sermo.systems.label_embedding.context import ContextSource, context_manifest
from sermo.systems.label_embedding.labels import LabelEmbeddings
from sermo.systems.label_embedding.model import LEMER


class FoldInputs:
    """What the rows of one fold read: the dialog context, fine-tuned encoders (after the
    optional 2nd stage), and each row's dataset inputs; ``labels`` builds the label embeddings."""

    def __init__(self, ctx):
        self.ctx, self.cfg = ctx, ctx.cfg.model
        self.labels = LabelEmbeddings(ctx)
        self._context = None
        self.previous = None  # the manifest of the previous turns' text
        self._checkpoint = None  # the continued pre-training's checkpoint folder

    def context_source(self) -> ContextSource:
        """Token features of the previous turns followed by the utterance's own."""
        if self._context is None:
            from sermo.encoders.registry import text_tokenizer

            d = self.ctx.cfg.data
            # counted in the encoder's tokens, four kept for the special tokens of the two parts,
            # so that the batch's max_tokens never cuts the utterance itself
            manifest = context_manifest(self.ctx.manifest, self.cfg.context,
                                        min(self.cfg.context_tokens, d.max_tokens) - 4,
                                        text_tokenizer(d.text_encoder))
            previous = self.ctx.features(d.text_encoder, d.text_layers, manifest=manifest)
            self.previous = manifest
            self._context = ContextSource(self.ctx.text, previous)
        return self._context

    def trainable(self, kind: str, *, second_stage: bool = True):
        """A fresh fine-tunable copy of the recipe's speech or text encoder with ``finetune``
        (``None`` when not fine-tuning or when the encoder is not a transformers model); the
        speech encoder after the 2nd stage unless ``second_stage`` is false (Table 1's B1)."""
        if not self.cfg.finetune:
            return None
        if kind == "audio":
            return self.ctx.trainable_encoder("speech", self.speech_checkpoint(second_stage), layers="all")[0]
        return self.ctx.trainable_encoder("text", layers="all")[0]

    def speech_checkpoint(self, second_stage: bool = True) -> str:
        """The speech encoder the rows fine-tune: the recipe's, or (``pretrain_steps``) its
        continued pre-training on this fold's training audio."""
        from sermo.encoders.registry import checkpoint_folder
        from sermo.encoders.speech import continue_pretraining

        name = self.ctx.cfg.data.audio_encoder
        if self.cfg.pretrain_steps <= 0 or not second_stage:
            return name
        if self._checkpoint is None:
            import warnings

            from sermo.encoders.base import EncoderError

            waves = [(lambda u=u: self.ctx.waveform(u, 20.0)) for u in self.ctx.ids("train")]
            try:
                with self.ctx.rank_zero_first():  # one rank writes the folder, the others then read it
                    self._checkpoint = continue_pretraining(
                        checkpoint_folder(name)[1], waves, self.ctx.folder / "speech_2nd_stage",
                        steps=self.cfg.pretrain_steps, lr=self.cfg.pretrain_lr,
                        batch_size=self.cfg.pretrain_batch_size, seed=self.ctx.cfg.train.seed,
                        progress=self.ctx.progress, device=self.ctx.device)
            except EncoderError as exc:  # no pre-training head (HuBERT, a CTC checkpoint): the stage is optional
                warnings.warn(f"continued pre-training skipped: {exc}", stacklevel=2)
                self._checkpoint = name
        return self._checkpoint

    def dataset_inputs(self, text_src, speech_src, text_model, speech_model) -> dict:
        """A row's dataset inputs: stored features, or samples and token ids (of the joined context
        and utterance) for fine-tuned encoders, and how many of the last tokens are the
        utterance's own when the text carries its dialog context."""
        extras: dict = {}
        with_context = isinstance(text_src, ContextSource)
        inputs = {"audio": False if speech_model is not None else (speech_src or False),
                  "wave": speech_model is not None}
        if text_model is not None:
            own = self.ctx.transcripts()
            previous = self.ctx.transcripts(self.previous) if with_context else {}
            joined = {u: " ".join(t for t in (previous.get(u), own.get(u)) if t) for u in own}
            inputs.update(tokens=text_model, transcripts=joined, text=False)
            if with_context:  # the utterance's tokens and the final special token
                extras["t_current"] = lambda u: np.int64(len(text_model.tokenize(str(own[u]))) - 1)
        else:
            inputs["text"] = text_src or False
            if with_context:
                extras["t_current"] = text_src.own_length
        inputs["extras"] = extras
        return inputs


def run_fold(ctx: FoldContext) -> list[RowResult]:
    """The rows of one fold, then (on the first folds) the K grid and the attention plot data."""
    cfg: LabelEmbeddingConfig = ctx.cfg.model
    if cfg.text_init not in TEXT_INITS or cfg.speech_init not in SPEECH_INITS:
        raise ValueError(f"text_init must be one of {TEXT_INITS}, speech_init one of {SPEECH_INITS}")
    fold = FoldInputs(ctx)
    labels = fold.labels
    n = ctx.num_classes
    audio = ctx.audio
    plain_text = ctx.text
    # score_fusion combines text_context_le's predictions: the context too
    needs_context = any(ARCHITECTURES[r].context if r in ARCHITECTURES else r == "score_fusion" for r in cfg.rows)
    context = fold.context_source() if needs_context else None
    results, models, info, row_preds = [], {}, {}, {}

    def train(row, *, text_src=None, speech_src=None, fusion=None, t_init=None, s_init=None, s_k=None,
              second_stage=True):
        lt = ls = None
        if t_init:
            lt, info[f"{row}:text_labels"] = labels.text_labels(t_init, text_src)
        if s_init:
            seed_text = labels.text_labels("label_words", text_src or context or plain_text)[0] \
                if s_init == "text" else None
            ls, desc = labels.speech_labels(s_init, speech_src, s_k or cfg.speech_k, seed_text)
            info[f"{row}:speech_labels"] = desc
            if ls is None:
                return None, desc["skipped"]
        speech_model = fold.trainable("audio", second_stage=second_stage) if speech_src is not None else None
        text_model = fold.trainable("text") if text_src is not None else None
        ctx.seed(row)
        model = LEMER(text=(1, text_src.dim) if text_src else None, speech=(1, speech_src.dim) if speech_src else None,
                      num_classes=n, cfg=cfg, fusion=fusion, text_labels=lt, speech_labels=ls,
                      text_model=text_model, speech_model=speech_model)
        if model.text is not None:
            model.text.norm.set(*[s[-1:] for s in ctx.feature_stats(text_src)])
        if model.speech is not None:
            model.speech.norm.set(*[s[-1:] for s in ctx.feature_stats(speech_src)])
        inputs = fold.dataset_inputs(text_src, speech_src, text_model, speech_model)

        def data(split):
            return ctx.dataset(split, **inputs)

        model = ctx.fit(model, stage_name(row), data("train"), data("valid"))
        return (model, data), ""

    plans = []
    for row in cfg.rows:
        if row not in ARCHITECTURES:  # score_fusion: below
            continue
        arch = ARCHITECTURES[row]
        kw: dict = {}
        if arch.text:
            kw.update(text_src=context if arch.context else plain_text, t_init=cfg.text_init if arch.text_labels else None)
        if arch.speech:
            kw.update(speech_src=audio, s_init=cfg.speech_init if arch.speech_labels else None,
                      second_stage=arch.second_stage)
        plans.append((row, dict(kw, fusion=arch.fusion)))
    for row, kw in plans:
        mods = tuple(m for m, k in (("text", "text_src"), ("audio", "speech_src")) if kw.get(k) is not None)
        if row == "speech_2nd" and not (cfg.finetune and cfg.pretrain_steps > 0):
            results.append(ctx.skipped_row(row, mods, "the 2nd stage continues the fine-tuned speech encoder's "
                                                      "pre-training: it needs model.finetune and model.pretrain_steps"))
            continue
        why = lacking(ctx, mods)
        if why:  # a text-only corpus, or one without transcripts
            results.append(ctx.skipped_row(row, mods, why))
            continue
        trained, why = train(row, **kw)
        if trained is None:
            results.append(ctx.skipped_row(row, mods, why))
            continue
        model, data = trained
        models[row] = (model, data)
        extra = {k.split(":", 1)[1]: v for k, v in info.items() if k.startswith(row + ":")}
        tuned_speech = model.speech is not None and model.speech.encoder is not None
        tuned_text = model.text is not None and model.text.encoder is not None
        label_dims = {k: int(m.labels.shape[1]) for k, m in (("text", model.text), ("audio", model.speech))
                      if m is not None and m.labels is not None}
        row_preds[row] = ctx.predict(model, data)
        results.append(ctx.row(row, mods, model, row_preds[row], info=extra,
                               speech_model=fold.speech_checkpoint(kw.get("second_stage", True))
                               if tuned_speech else None,
                               text_model=ctx.cfg.data.text_encoder if tuned_text else None,
                               options={"label_dims": label_dims} if label_dims else None))
    if "score_fusion" in cfg.rows:
        pair = ("text_context_le", "speech_le")
        if not set(pair) <= set(row_preds):
            results.append(ctx.skipped_row("score_fusion", ("text", "audio"),
                                           "needs the rows text_context_le and speech_le"))
        else:  # the sum of the two models' logits: softmax(log p_t + log p_s) is the same
            def product(p_t, p_s):
                return softmax(np.log(np.maximum(p_t, 1e-30)) + np.log(np.maximum(p_s, 1e-30)))

            results.append(ctx.combined_row("score_fusion", ("text", "audio"),
                                            fuse([row_preds[r] for r in pair], product), info={"of": list(pair)}))
    if ctx.is_analysis_fold(cfg.analysis_folds):
        # a modality the corpus lacks has nothing to analyse (a text-only table: no K grid)
        speech = None if lacking(ctx, ("audio",)) else audio
        if cfg.k_grid and speech is not None:
            ctx.write_analysis("k_grid.json", k_grid(ctx, train, speech, models))
        if cfg.compare_inits:
            ctx.write_analysis("inits.json", compare_inits(ctx, train, models, None if lacking(ctx, ("text",))
                                                           else context, speech))
        if "le_mer" in models:
            ctx.write_analysis("attention.json", attention_example(ctx, *models["le_mer"], fold.previous))
    return results
