"""The rows of teacher_student, declared: what each reads (the plan sizes it; ``run_fold`` trains them)."""

from __future__ import annotations

from sermo.config import RunConfig
from sermo.encoders.registry import top_input
from sermo.systems.api import FeatureRead, Reads, Row, layer_tuple
from sermo.systems.teacher_student.model import ROWS


def declare(cfg: RunConfig) -> list[Row]:
    """The recipe's rows, in the table's order, with what each reads (its own ``run_fold``
    trains them: the students after the teacher). The teacher reads its own speech encoder where
    it has one; a fine-tuned row reads the stored state below its tuned layers, or samples."""
    m, d = cfg.model, cfg.data
    layers = layer_tuple(d.audio_layers)
    tuned = tuned_input(cfg)
    own = (FeatureRead(m.teacher_audio_encoder, layers, what="the teacher's audio"),) if m.teacher_audio_encoder else ()
    reads = {"audio": Reads(audio=True), "text": Reads(text=True),
             "multimodal": Reads(audio=not m.teacher_audio_encoder, text=True, other=own),
             "audio_ft": Reads(other=tuned),
             "ts": Reads(audio=not m.student_finetune, other=tuned if m.student_finetune else ()),
             "cts": Reads(audio=not m.student_finetune, other=tuned if m.student_finetune else ())}
    modalities = {"text": ("text",), "multimodal": ("audio", "text")}
    return [Row(r, modalities.get(r, ("audio",)), r, reads=reads[r]) for r in ROWS if r in m.rows]


def tuned_input(cfg: RunConfig) -> tuple[FeatureRead, ...]:
    """What a fine-tuned row reads: the stored state below the top ``finetune_layers`` where the
    encoder runs them apart (``finetune_from_store``; they reach every layer the rows read),
    else nothing stored (samples through the whole encoder)."""
    m, d = cfg.model, cfg.data
    encoder = d.audio_encoder
    below = top_input(encoder, m.finetune_layers, d.audio_layers) if encoder and m.finetune_from_store else None
    if encoder is None or below is None:
        return ()
    return (FeatureRead(encoder, (below,), pooled=d.pool_finetuned, what="below the fine-tuned layers"),)
