"""One fold of distilled: per speech encoder the audio and audio+text rows, then the analyses."""

from __future__ import annotations

import copy

from sermo.systems.api import FoldContext, RowResult, stage_name
from sermo.systems.common import lacking
from sermo.systems.distilled.analysis import layer_importance, transcript_robustness
from sermo.systems.distilled.config import MODES, DistilledConfig
from sermo.systems.distilled.model import freeze
from sermo.systems.distilled.rows import Rows, label


def run_fold(ctx: FoldContext) -> list[RowResult]:
    """The rows of one fold, then (on the first ``analysis_folds`` folds) the analyses."""
    cfg: DistilledConfig = ctx.cfg.model
    if cfg.mode not in MODES:
        raise ValueError(f"unknown distilled mode {cfg.mode!r}; known: {', '.join(MODES)}")
    if not cfg.speech_encoders:
        raise ValueError("model.speech_encoders is empty: name at least one speech encoder")
    rows = Rows(ctx)
    if cfg.text and not ctx.cfg.data.text_encoder:
        raise ValueError("model.text is true but data.text_encoder is null: name a text encoder")
    results = []
    for name in cfg.speech_encoders:
        results += _encoder_rows(ctx, rows, name)
    # Figure 2 and Table 2 are per dimension, of models that read speech
    if ctx.is_analysis_fold(cfg.analysis_folds) and rows.task == "dims" and not lacking(ctx, ("audio",)):
        if cfg.layer_importance:
            ctx.write_analysis("layer_importance.json", layer_importance(ctx, rows))
        if cfg.text and cfg.transcript_engines:
            ctx.write_analysis("transcripts.json", transcript_robustness(ctx, rows))
    return results


def _encoder_rows(ctx, rows: Rows, name: str) -> list:
    """``<name>`` and ``<name>+text`` (and ``<name>+text@ft_frz``) for one speech encoder."""
    cfg = rows.cfg
    row_name = label(name)
    why = lacking(ctx, ("audio",))
    if why:  # a text-only table: every row of the paper reads speech
        plans = [row_name + "+text"] * cfg.text + [row_name + "+text@ft_frz"] * (cfg.text and cfg.mode == "ft"
                                                                                   and cfg.compare_ft_frz)
        return [ctx.skipped_row(row, ("audio",) + ("text",) * ("+" in row), why) for row in [row_name, *plans]]
    speech = rows.speech(name)
    tuned = speech is not None
    src = rows.speech_source(name, speech)  # stored features, the state below the tuned layers, or samples
    out = []

    def audio_data(split):
        return rows.data(split, audio_src=src)

    def encoders(text=None, architecture: str = "audio") -> dict:
        """What a row's bundle needs to rebuild its model (``audio`` or ``audio+text``) and its
        fine-tuned encoders."""
        options = {k: v for k, v in (("speech_top", rows.speech_top(speech)), ("text_top", (text or {}).get("top")))
                   if v is not None}
        return {"speech_model": name if tuned else None,
                "options": {**options, "task": rows.task, "architecture": architecture},
                "text_model": ctx.cfg.data.text_encoder if (text or {}).get("model") is not None else None}

    audio_model = ctx.fit(rows.build(row_name, audio_src=src, speech=speech), stage_name(row_name), audio_data("train"),
                          audio_data("valid"))
    out.append(ctx.row(row_name, ("audio",), audio_model, ctx.predict(audio_model, audio_data), **encoders()))
    if not cfg.text:
        return out
    text_plans: list[tuple[str, str]]
    if cfg.mode == "ft_frz":
        text_plans = [("ft_frz", row_name + "+text")]
    else:
        text_plans = [(cfg.mode, row_name + "+text")]
        if cfg.mode == "ft" and cfg.compare_ft_frz:
            text_plans.append(("ft_frz", row_name + "+text@ft_frz"))
    for mode, row in text_plans:
        text = rows.text_plan(trainable=mode == "ft")
        if mode == "ft_frz":
            # the audio-only model's stream, fine-tuned above, frozen beside the frozen text encoder
            model = rows.build(row, audio_src=src, text=text, audio_stream=freeze(copy.deepcopy(audio_model.audio)))
            if model.text is not None:
                freeze(model.text)
        else:
            model = rows.build(row, audio_src=src, text=text, speech=rows.speech(name))

        def data(split, text=text):
            return rows.data(split, audio_src=src, text=text)

        model = ctx.fit(model, stage_name(row), data("train"), data("valid"))
        out.append(ctx.row(row, ("audio", "text"), model, ctx.predict(model, data), info={"mode": mode},
                           **encoders(text, "audio+text")))
    return out
