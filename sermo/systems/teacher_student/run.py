"""One fold of teacher_student: the unimodal rows, the teacher, then the students."""

from __future__ import annotations

import numpy as np
import torch

from sermo.evaluation.metrics import DIMENSIONS, ccc, pearson, unweighted_accuracy
from sermo.systems.api import Features, FoldContext, Row, RowResult
from sermo.systems.common import fold_task, lacking
from sermo.systems.teacher_student.model import (TeacherStudentConfig, TSModel, category_residual_mask,
                                                 residual_mask)
from sermo.systems.teacher_student.rows import declare

def _embed(ctx, model: TSModel, dataset) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Each utterance's embedding and prediction: A/V/D, or class probabilities."""
    ids, emb, pred = [], [], []
    for batch, out in ctx.forward(model, dataset):
        ids += batch.ids
        # float32 whatever the precision the forward ran at (numpy has no bfloat16)
        emb.append(out.embedding.float().cpu().numpy())
        pred.append(out.dims.float().cpu().numpy() if out.dims is not None
                    else torch.softmax(out.logits.float(), dim=-1).cpu().numpy())
    return ids, np.concatenate(emb), np.concatenate(pred)


def teacher_mask(ctx, train_ids: list[str], pred: dict, cfg: TeacherStudentConfig, task: str) -> tuple[dict, dict]:
    """Which training utterances the conditional student learns the teacher's embedding on (Eq. 8,
    or its categorical form), and what the report shows of the teacher on its training set."""
    p = np.stack([pred[u] for u in train_ids])
    if task == "category":
        y = np.array([ctx.labels.category[u] for u in train_ids])
        keep, fit = category_residual_mask(p, y, cfg.residual_sigmas)
        ok = y >= 0
        return dict(zip(train_ids, keep)), {"discarded_share": float(1 - keep.mean()), "dropped": fit["dropped"],
                                            "teacher_train": {"ua": unweighted_accuracy(y[ok], p[ok].argmax(1))}}
    y = np.stack([ctx.labels.dims[u] for u in train_ids])
    keep, fit = residual_mask(p, y, cfg.residual_sigmas)
    teacher_train = {}
    for j, d in enumerate(DIMENSIONS):
        if np.isfinite(y[:, j]).sum() > 1:
            teacher_train[f"ccc_{d}"] = ccc(y[:, j], p[:, j])
            teacher_train[f"pearson_{d}"] = pearson(y[:, j], p[:, j])
    return dict(zip(train_ids, keep)), {"discarded_share": float(1 - keep.mean()),
                                        "dropped_by_dim": fit["dropped_by_dim"], "teacher_train": teacher_train}


def run_fold(ctx: FoldContext) -> list[RowResult]:
    """The rows of one fold: unimodal models, the teacher, then the students."""
    cfg: TeacherStudentConfig = ctx.cfg.model
    if {"ts", "cts"} & set(cfg.rows) and "multimodal" not in cfg.rows:
        raise ValueError("rows ts and cts need the multimodal teacher: add multimodal to model.rows")
    task = fold_task(ctx, cfg.task)
    results = []
    why_not = ""
    finetuning = "audio_ft" in cfg.rows or cfg.student_finetune
    if finetuning:
        _, why_not = ctx.trainable_encoder("speech")

    layers = ctx.cfg.data.audio_layers
    declared = {r.name: r for r in declare(ctx.cfg)}

    def audio_of(row: Row) -> Features | None:
        """The frozen speech features a declared row reads: the recipe's, or its own encoder's
        (the teacher's, MSP-Podcast: HuBERT Large teaching HuBERT Base)."""
        reads = row.reading
        own = [ctx.features(f.encoder, f.layers) for f in reads.other]
        return ctx.audio if reads.audio else own[0] if own else None

    teacher_src = audio_of(declared["multimodal"]) if "multimodal" in declared else None

    def top_layers(sp) -> int | None:
        """How many top layers a fine-tuned row runs on the stored state below them (``None``: it
        reads waveforms through the whole encoder)."""
        k = cfg.finetune_layers
        reachable = layers is not None and all(-k - 1 <= i < 0 for i in layers)
        if cfg.finetune_from_store and sp.runs_top and 0 < k < sp.num_hidden_states - 1 and reachable:
            return k
        return None

    def build(row: str, *, audio_src=None, text: bool = False, finetune: bool = False, lam: float = 0.0):
        """A row's model and where its audio comes from (a source, or ``"wave"`` for a fine-tuned
        encoder that reads samples)."""
        ctx.seed(row)
        sp = ctx.trainable_encoder("speech", layers=cfg.finetune_layers)[0] if finetune else None
        top = top_layers(sp) if sp is not None else None
        t = ctx.text if text else None
        model = TSModel(audio=(audio_src.num_layers, audio_src.dim) if audio_src is not None else None,
                        text=(t.num_layers, t.dim) if t else None, cfg=cfg, speech=sp, lam=lam, speech_layers=layers,
                        speech_top=top, task=task, num_classes=ctx.num_classes, lr_scale=ctx.cfg.train.encoder_lr_scale)
        if audio_src is not None and sp is None and model.audio is not None:
            model.audio.norm.set(*ctx.feature_stats(audio_src))
        if text and model.text is not None and ctx.text is not None:
            model.text.norm.set(*ctx.feature_stats(ctx.text))
        if sp is None:
            return model, audio_src
        # the fine-tuned layers read the state below them frame by frame (unless data.pool_finetuned)
        assert ctx.cfg.data.audio_encoder, "a fine-tuned speech encoder is the recipe's audio encoder"
        below = ctx.features(ctx.cfg.data.audio_encoder, [sp.num_hidden_states - 1 - top],
                             pooled=ctx.cfg.data.pool_finetuned) if top else "wave"
        return model, below

    def data(split: str, *, audio_src=None, text: bool = False, extras: dict | None = None):
        wave = isinstance(audio_src, str)
        return ctx.dataset(split, audio=False if wave else (audio_src or False), text=text, wave=wave, extras=extras)

    def tuned(model: TSModel) -> dict:
        """What a fine-tuned row's bundle needs to rebuild its encoder."""
        return {"speech_model": ctx.cfg.data.audio_encoder,
                "options": {"speech_layers": layers, "speech_top": model.speech_top, "task": task}}

    trained: dict[str, TSModel] = {}
    for decl in [r for r in declared.values() if r.name in ("audio", "text", "multimodal")]:
        row, t = decl.name, decl.reading.text
        why = lacking(ctx, decl.modalities)
        if why:  # a text-only table, or one without transcripts
            results.append(ctx.skipped_row(row, decl.modalities, why))
            continue
        a = audio_of(decl)
        model, _ = build(row, audio_src=a, text=t)
        model = ctx.fit(model, row, data("train", audio_src=a, text=t), data("valid", audio_src=a, text=t))
        trained[row] = model
        def split_data(s: str, a=a, t=t):
            return data(s, audio_src=a, text=t)

        results.append(ctx.row(row, decl.modalities, model, ctx.predict(model, split_data), options={"task": task}))
    no_audio = lacking(ctx, ("audio",))
    why_not = why_not or no_audio
    can_finetune = finetuning and not why_not
    if "audio_ft" in cfg.rows:
        if not can_finetune:
            results.append(ctx.skipped_row("audio_ft", ("audio",), why_not))
        else:
            model, src = build("audio_ft", audio_src=ctx.audio, finetune=True)
            model = ctx.fit(model, "audio_ft", data("train", audio_src=src), data("valid", audio_src=src))
            results.append(ctx.row("audio_ft", ("audio",), model,
                                   ctx.predict(model, lambda s: data(s, audio_src=src)), **tuned(model)))
    students = [r for r in ("ts", "cts") if r in cfg.rows]
    if students and cfg.student_finetune and not can_finetune:
        # the paper's students fine-tune: trained on frozen features instead, they would be other models
        # under the same names
        for row in students:
            results.append(ctx.skipped_row(row, ("audio",), f"the students fine-tune the speech encoder "
                                           f"(model.student_finetune), which cannot be had here: {why_not}"))
        students = []
    if students and (no_audio or "multimodal" not in trained):
        for row in students:
            results.append(ctx.skipped_row(row, ("audio",), no_audio or "needs the multimodal teacher, which did not "
                                           "train: " + next(r.skipped for r in results if r.name == "multimodal")))
        students = []
    if students:
        teacher = trained["multimodal"]
        emb: dict[str, np.ndarray] = {}
        pred: dict[str, np.ndarray] = {}
        for split in ("train", "valid"):  # utterances without a transcript have no teacher embedding
            ids, e, p = _embed(ctx, teacher, data(split, audio_src=teacher_src, text=True))
            emb.update(zip(ids, e))
            pred.update(zip(ids, p))
        kept, info = teacher_mask(ctx, [u for u in ctx.ids("train") if u in pred], pred, cfg, task)
        finetune = cfg.student_finetune and can_finetune
        none = np.zeros(cfg.embedding, dtype=np.float32)
        for row in students:
            # the L2 term needs the teacher's embedding: utterances without one (no transcript) keep
            # only the CCC term; the conditional student also leaves out the badly fitted ones
            keep = (lambda u: np.float32(u in emb and kept.get(u, True))) if row == "cts" else \
                (lambda u: np.float32(u in emb))
            extras = {"teacher_emb": lambda u: emb.get(u, none).astype(np.float32), "ts_keep": keep}
            model, src = build(row, audio_src=ctx.audio, finetune=finetune, lam=cfg.lam)
            # the student starts from the teacher's prediction layer, so an embedding that matches
            # e_AT also predicts what the teacher predicts; L_EMO keeps training it
            model.predict.load_state_dict(teacher.predict.state_dict())
            model = ctx.fit(model, row, data("train", audio_src=src, extras=extras),
                            data("valid", audio_src=src, extras=extras))
            # at test time the student is audio-only: no teacher, no transcript
            results.append(ctx.row(row, ("audio",), model, ctx.predict(model, lambda s: data(s, audio_src=src)),
                                   info={**(info if row == "cts" else {"discarded_share": 0.0}),
                                         "finetuned": bool(finetune)},
                                   **(tuned(model) if finetune else {"options": {"task": task}})))
    return results
