"""One fold of distilled: per speech encoder the audio and audio+text rows, then the analyses."""

from __future__ import annotations

import copy

from sermo.systems.api import FoldContext, Row, RowResult, stage_name
from sermo.systems.common import lacking
from sermo.systems.distilled.analysis import layer_importance, transcript_robustness
from sermo.systems.distilled.config import MODES, DistilledConfig
from sermo.systems.distilled.model import freeze
from sermo.systems.distilled.rows import Rows, analyses, declare


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
    declared = declare(ctx.cfg)
    for name in cfg.speech_encoders:
        results += _encoder_rows(ctx, rows, name, [r for r in declared if r.options["speech_encoder"] == name])
    # Figure 2 and Table 2 are per dimension, of models that read speech
    if ctx.is_analysis_fold(cfg.analysis_folds) and rows.task == "dims" and not lacking(ctx, ("audio",)):
        for analysis in analyses(ctx.cfg):
            ctx.write_analysis(analysis.name, ANALYSES[analysis.name](ctx, rows))
    return results


ANALYSES = {"layer_importance.json": layer_importance, "transcripts.json": transcript_robustness}
"""Each declared analysis's routine."""


def _encoder_rows(ctx: FoldContext, rows: Rows, name: str, declared: list[Row]) -> list[RowResult]:
    """The declared rows of one speech encoder: ``<name>``, then ``<name>+text`` (and
    ``<name>+text@ft_frz``)."""
    audio_row, *text_rows = declared
    row_name = audio_row.name
    why = lacking(ctx, ("audio",))
    if why:  # a text-only table: every row of the paper reads speech
        return [ctx.skipped_row(row.name, row.modalities, why) for row in declared]
    speech = rows.speech(name)
    tuned = speech is not None
    src = rows.speech_source(name, speech)  # stored features, the state below the tuned layers, or samples
    out = []

    def audio_data(split):
        return rows.data(split, audio_src=src)

    def encoders(text=None, architecture: str = audio_row.architecture) -> dict:
        """What a row's bundle needs to rebuild its model (``audio`` or ``audio+text``) and its
        fine-tuned encoders."""
        options = {k: v for k, v in (("speech_top", rows.speech_top(speech)), ("text_top", (text or {}).get("top")))
                   if v is not None}
        return {"speech_model": name if tuned else None,
                "options": {**options, "task": rows.task, "architecture": architecture},
                "text_model": ctx.cfg.data.text_encoder if (text or {}).get("model") is not None else None}

    audio_model = ctx.fit(rows.build(row_name, audio_src=src, speech=speech), stage_name(row_name), audio_data("train"),
                          audio_data("valid"))
    out.append(ctx.row(row_name, audio_row.modalities, audio_model, ctx.predict(audio_model, audio_data),
                       **encoders()))
    for declared_row in text_rows:
        row, mode = declared_row.name, declared_row.options["text_mode"]
        text = rows.text_plan(trainable=mode == "ft")
        if mode == "ft_frz":
            # the audio-only model's stream, fine-tuned above, frozen beside the frozen text encoder
            assert audio_model.audio is not None, "the audio row's model reads speech"
            model = rows.build(row, audio_src=src, text=text, audio_stream=freeze(copy.deepcopy(audio_model.audio)))
            if model.text is not None:
                freeze(model.text)
        else:
            model = rows.build(row, audio_src=src, text=text, speech=rows.speech(name))

        def data(split, text=text):
            return rows.data(split, audio_src=src, text=text)

        model = ctx.fit(model, stage_name(row), data("train"), data("valid"))
        out.append(ctx.row(row, declared_row.modalities, model, ctx.predict(model, data), info={"mode": mode},
                           **encoders(text, declared_row.architecture)))
    return out
